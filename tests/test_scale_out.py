"""Two instances sharing one Redis and one S3-compatible store, as the scale-out deployment runs."""

from __future__ import annotations

import httpx
import openai
import pytest

from .conftest import CLIENT_KEYS


def test_two_instances_share_images_and_limits(start, fake, redis, s3_bucket):
    shared = {
        **s3_bucket.env("shared"),
        "REDIS_URL": redis.url,
        "ALLOW_CLIENT_KEYS": ",".join(CLIENT_KEYS),
        "CLIENT_IMAGES_PER_DAY": "4",
    }
    first = start(**shared, LOG_LEVEL="info")
    second = start(**shared, LOG_LEVEL="warning")
    assert first.url != second.url
    key = CLIENT_KEYS[0]

    with openai.OpenAI(base_url=first.api_base, api_key=key, max_retries=0) as sdk:
        made_by_first = sdk.images.generate(prompt="from the first", n=2).data
    # A link handed out by one instance is served by the other (as a load balancer would).
    for image in made_by_first:
        path = image.url.removeprefix(first.url)
        served = httpx.get(second.url + path)
        assert served.status_code == 200
        assert served.content == httpx.get(image.url).content
    fake.expire_images()
    assert httpx.get(second.url + made_by_first[0].url.removeprefix(first.url)).status_code == 200

    # The daily limit of 4 images holds across both instances.
    with openai.OpenAI(base_url=second.api_base, api_key=key, max_retries=0) as sdk:
        assert len(sdk.images.generate(prompt="from the second", n=2).data) == 2
        with pytest.raises(openai.RateLimitError) as caught:
            sdk.images.generate(prompt="one too many")
        assert caught.value.body["code"] == "client_images_per_day"
    with openai.OpenAI(base_url=first.api_base, api_key=key, max_retries=0) as sdk:
        # The first instance sees the images made through the second.
        with pytest.raises(openai.RateLimitError):
            sdk.images.generate(prompt="still too many")
    # Another key is untouched.
    with openai.OpenAI(base_url=first.api_base, api_key=CLIENT_KEYS[1], max_retries=0) as sdk:
        assert sdk.images.generate(prompt="other key").data
