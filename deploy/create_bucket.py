"""Create the image store's bucket if it is missing, and optionally make one prefix public.

Runs once before the proxies start (compose's `minio-init` service, with the proxy's own image:
botocore comes with it). It talks plain S3, so it works against MinIO, R2, AWS or any other
S3-compatible store. Settings, from the environment:

    BUCKET                 the bucket to create (required)
    PUBLIC_READ_PREFIX     a key prefix anyone may GET, for IMAGE_PUBLIC_BASE_URL (optional)
    S3_ENDPOINT_URL        the store's endpoint (AWS_ENDPOINT_URL also works); AWS if unset
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION
"""

from __future__ import annotations

import json
import os
import sys

import botocore.session
from botocore.exceptions import ClientError

# AWS wants a location constraint for every region but this one; other stores ignore it.
DEFAULT_REGION = "us-east-1"


def public_read_policy(bucket: str, prefix: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": ["s3:GetObject"],
                    "Resource": [f"arn:aws:s3:::{bucket}/{prefix}*"],
                }
            ],
        }
    )


def main() -> int:
    bucket = os.environ.get("BUCKET", "").strip()
    if not bucket:
        print("create_bucket: set BUCKET", file=sys.stderr)
        return 2
    region = os.environ.get("AWS_REGION") or DEFAULT_REGION
    endpoint = os.environ.get("S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL") or None
    s3 = botocore.session.get_session().create_client(
        "s3", endpoint_url=endpoint, region_name=region
    )
    try:
        s3.head_bucket(Bucket=bucket)
        print(f"bucket {bucket} exists")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
        options = {}
        if region != DEFAULT_REGION:
            options["CreateBucketConfiguration"] = {"LocationConstraint": region}
        s3.create_bucket(Bucket=bucket, **options)
        print(f"bucket {bucket} created")

    prefix = os.environ.get("PUBLIC_READ_PREFIX", "").strip().lstrip("/")
    if prefix:
        s3.put_bucket_policy(Bucket=bucket, Policy=public_read_policy(bucket, prefix))
        print(f"objects under {bucket}/{prefix} are readable by anyone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
