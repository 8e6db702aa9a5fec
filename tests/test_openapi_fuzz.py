"""Hostile input: schemathesis fuzzes the live server from its own /openapi.json.

No input it can make may produce a 5xx, an undocumented status, or an answer that breaks the
document's own schema.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow


def test_openapi_describes_the_real_request_bodies(proxy):
    document = httpx.get(proxy.url + "/openapi.json").json()
    paths = document["paths"]
    generations = paths["/v1/images/generations"]["post"]
    body = generations["requestBody"]["content"]["application/json"]["schema"]
    # Read by the bounded JSON reader (bodies.py), so the schema is inlined, not referenced.
    assert body["required"] == ["prompt"]
    assert {"prompt", "n", "size", "sf_image_size"} <= set(body["properties"])
    edits = paths["/v1/images/edits"]["post"]["requestBody"]["content"]
    assert set(edits) == {"multipart/form-data", "application/json"}
    assert edits["multipart/form-data"]["schema"]["properties"]["image"]["type"] == "array"
    for path in paths.values():
        for operation in path.values():
            assert "422" not in operation["responses"]
    assert "400" in generations["responses"]


def test_schemathesis_finds_no_server_errors(proxy, tmp_path: Path):
    schemathesis = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [
            str(schemathesis),
            "run",
            proxy.url + "/openapi.json",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_schema_conformance",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "25",
            "--max-time",
            "30",
            "--seed",
            "20261125",
            "--generation-database",
            "none",
            "--request-timeout",
            "20",
            "--no-color",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Test cases:" in result.stdout
