"""Client keys in the database: `sfproxy keys`, `/admin/keys`, and how running services honour
them (at once when created, within seconds of a revocation on every instance), on SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import select

from sfproxy.auth import KeyCache, key_label
from sfproxy.db.database import Database
from sfproxy.db.keys import KeyStore, NewKey
from sfproxy.db.tables import client_keys
from sfproxy.fake_upstream import FakeSiliconFlow
from sfproxy.jobs.repository import JobRepository

from .conftest import StartProxy
from .images import image_bytes
from .support.inprocess import ASGI_URL, Running, in_process, service_settings
from .support.postgres import PostgresServer
from .support.proxy import ProxyProcess
from .support.videos import job_row

ADMIN = "admin-key-for-the-tests-0123"
ENV_KEY = "env-client-key-0123456789"
QWEN = "Qwen/Qwen-Image"
KOLORS = "Kwai-Kolors/Kolors"
EDIT = "Qwen/Qwen-Image-Edit"


def sfproxy(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`sfproxy ARGS` in its own process, on the given database, as an operator runs it."""
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    env["DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "sfproxy", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def cli_create(database_url: str, name: str, *options: str) -> dict[str, Any]:
    done = sfproxy(database_url, "keys", "create", name, *options, "--json")
    assert done.returncode == 0, done.stderr
    created: dict[str, Any] = json.loads(done.stdout)
    return created


def generate(base_url: str, key: str, model: str = KOLORS) -> openai.types.ImagesResponse:
    with openai.OpenAI(base_url=base_url, api_key=key, max_retries=0) as sdk:
        return sdk.images.generate(model=model, prompt="a lighthouse", n=1)


def status_of(base_url: str, key: str) -> int:
    try:
        generate(base_url, key)
    except openai.APIStatusError as exc:
        return exc.status_code
    return 200


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str) -> float:
    """Poll until `condition()`; the seconds it took. Fails after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - started


def log_records(proxy: ProxyProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proxy.log().splitlines() if line.startswith("{")]


def admin(key: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_cli_key_works_at_once_and_its_revocation_reaches_both_instances(
    start: StartProxy, database_url: str
) -> None:
    first = cli_create(database_url, "first")
    settings = {"DATABASE_URL": database_url, "ALLOW_CLIENT_KEYS": ENV_KEY}
    one = start(**settings, INSTANCE="one")
    two = start(**settings, INSTANCE="two")

    # Created after both started: an unknown key makes each reload its map before answering.
    alice = cli_create(database_url, "alice")
    for proxy in (one, two):
        assert len(generate(proxy.api_base, alice["key"]).data) == 1
        # ALLOW_CLIENT_KEYS keys work beside the database's, under the same label as before.
        assert len(generate(proxy.api_base, ENV_KEY).data) == 1

    revoked = sfproxy(database_url, "keys", "revoke", "alice")
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in revoked.stdout
    for proxy in (one, two):
        took = wait_for(
            lambda proxy=proxy: status_of(proxy.api_base, alice["key"]) == 401,
            timeout=10,
            what="refusing the revoked key",
        )
        assert took < 10
        # The other keys still work.
        assert len(generate(proxy.api_base, first["key"]).data) == 1
        assert len(generate(proxy.api_base, ENV_KEY).data) == 1

    for proxy in (one, two):
        records = [r for r in log_records(proxy) if r.get("route") == "/v1/images/generations"]
        clients = {(r.get("client"), r.get("client_name"), r["status"]) for r in records}
        assert (alice["id"], "alice", 200) in clients
        assert (first["id"], "first", 200) in clients
        assert (key_label(ENV_KEY), None, 200) in clients
        # A revoked key is refused before it is known: the 401 names no client.
        assert (None, None, 401) in clients
        log = proxy.log()
        for secret in (alice["key"], first["key"], ENV_KEY):
            assert secret not in log


def test_the_first_database_key_turns_auth_on_and_revoking_it_keeps_it_on(
    start: StartProxy, database_url: str
) -> None:
    proxy = start(DATABASE_URL=database_url, KEYS_REFRESH_SECONDS="0.5")
    assert status_of(proxy.api_base, "anything") == 200
    bob = cli_create(database_url, "bob")
    wait_for(
        lambda: status_of(proxy.api_base, "anything") == 401,
        timeout=10,
        what="requiring a key",
    )
    assert status_of(proxy.api_base, bob["key"]) == 200
    assert sfproxy(database_url, "keys", "revoke", bob["id"]).returncode == 0
    wait_for(lambda: status_of(proxy.api_base, bob["key"]) == 401, timeout=10, what="revocation")
    # No key left, but the service does not turn public again.
    assert status_of(proxy.api_base, "anything") == 401
    response = httpx.post(proxy.api_base + "/images/generations", json={"prompt": "x"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_only_the_hash_and_a_prefix_are_stored(database_url: str) -> None:
    created = cli_create(
        database_url,
        "carol",
        "--rpm",
        "7",
        "--daily-budget",
        "0.9",
        "--models",
        f"{QWEN},{KOLORS}",
        "--expires",
        "2030-06-01",
    )
    key = created["key"]
    assert key.startswith("sk-sfp-") and len(key) >= 7 + 32
    assert created["id"].startswith("ck_")

    async def row() -> dict[str, Any]:
        async with Database.open(database_url) as database:
            async with database.engine.connect() as connection:
                rows = (await connection.execute(select(client_keys))).mappings().all()
        assert len(rows) == 1
        return dict(rows[0])

    stored = asyncio.run(row())
    assert stored["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert stored["prefix"] == key[:11]
    assert not any(key in str(value) for value in stored.values())
    assert (stored["rpm"], stored["models"]) == (7, [QWEN, KOLORS])
    assert str(stored["daily_budget"]).rstrip("0") == "0.9"

    shown = json.loads(sfproxy(database_url, "keys", "show", "carol", "--json").stdout)
    assert "key" not in shown and "key_hash" not in shown
    assert shown["expires_at"] == "2030-06-01T00:00:00Z"
    assert shown["daily_budget"] == "0.9"
    listed = sfproxy(database_url, "keys", "list")
    assert listed.returncode == 0
    assert created["id"] in listed.stdout and key not in listed.stdout


def test_cli_update_clears_with_none_and_reports_bad_options(database_url: str) -> None:
    cli_create(database_url, "dave", "--rpm", "5", "--models", QWEN)
    options = ["--rpm", "none", "--images-per-day", "3", "--name", "dave2", "--json"]
    done = sfproxy(database_url, "keys", "update", "dave", *options)
    assert done.returncode == 0, done.stderr
    updated = json.loads(done.stdout)
    assert (updated["name"], updated["rpm"], updated["images_per_day"]) == ("dave2", None, 3)
    assert updated["models"] == [QWEN]

    bad = sfproxy(database_url, "keys", "update", "dave2", "--rpm", "many", "--expires", "soon")
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == [
        "sfproxy: --rpm: Input should be a valid integer, unable to parse string as an integer",
        "sfproxy: --expires: Input should be a valid datetime or date, input is too short",
    ]
    missing = sfproxy(database_url, "keys", "revoke", "nobody")
    assert (missing.returncode, missing.stderr) == (
        1,
        "sfproxy: No client key has the id or name 'nobody'.\n",
    )
    taken = sfproxy(database_url, "keys", "create", "dave2")
    assert (taken.returncode, taken.stderr) == (
        1,
        "sfproxy: A client key named 'dave2' already exists.\n",
    )


def test_db_upgrade_current_and_copy_to_another_database(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    source = f"sqlite:///{tmp_path / 'old.db'}"
    assert (
        sfproxy(source, "db", "current").stdout
        == "none (never migrated) (behind 0002: run `sfproxy db upgrade`)\n"
    )
    assert sfproxy(source, "db", "upgrade").stdout == "database at revision 0002\n"
    assert sfproxy(source, "db", "current").stdout == "0002 (up to date)\n"
    created = cli_create(source, "erin", "--monthly-budget", "12.5")
    asyncio.run(_add_ledger_rows(source, 3))
    asyncio.run(_add_video_job(source))

    target = postgres_server.create_database()
    copied = sfproxy(source, "db", "copy", "--to", target)
    assert copied.returncode == 0, copied.stderr
    assert copied.stdout == "1 client_keys row(s), 3 ledger row(s), 1 video_jobs row(s) copied\n"
    shown = json.loads(sfproxy(target, "keys", "show", created["id"], "--json").stdout)
    assert (shown["name"], shown["monthly_budget"]) == ("erin", "12.5")
    # The copied key authenticates against the new database: the same hash came along.
    assert asyncio.run(_lookup(target, created["key"])) == created["id"]
    # New ledger rows continue after the copied ids.
    assert asyncio.run(_add_ledger_rows(target, 1)) == [4]

    again = sfproxy(source, "db", "copy", "--to", target)
    assert again.returncode == 1
    assert "already has 1 row(s) in client_keys" in again.stderr


async def _add_video_job(url: str) -> None:
    async with Database.open(url) as database:
        await JobRepository(database.engine).insert(job_row("video_copied"))


async def _add_ledger_rows(url: str, count: int) -> list[int]:
    from sfproxy.db.tables import ledger

    async with Database.open(url) as database:
        async with database.engine.begin() as connection:
            ids = []
            for number in range(count):
                result = await connection.execute(
                    ledger.insert().values(
                        at=datetime.now(UTC),
                        request_id=f"req-{number}",
                        client="ck_test",
                        endpoint="images",
                        model=QWEN,
                        images_requested=1,
                        images_made=1,
                        images_delivered=1,
                        images_refunded=0,
                        status=200,
                    )
                )
                assert result.inserted_primary_key is not None
                ids.append(int(result.inserted_primary_key[0]))
    return ids


async def _lookup(url: str, key: str) -> str | None:
    async with Database.open(url) as database:
        cache = KeyCache(KeyStore(database.engine), refresh_seconds=60)
        await cache.refresh()
        record = await cache.lookup(key)
        return record.id if record else None


def _in_process(fake: FakeSiliconFlow, tmp_path: Path, database_url: str, **overrides: Any) -> Any:
    return in_process(service_settings(fake, tmp_path, database_url=database_url, **overrides))


async def _create(running: Running, **body: Any) -> dict[str, Any]:
    response = await running.http.post("/admin/keys", json=body, headers=admin())
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_admin_keys_create_list_show_update_revoke(
    fake: FakeSiliconFlow, tmp_path: Path, database_url: str
) -> None:
    async with _in_process(fake, tmp_path, database_url, admin_keys=ADMIN) as running:
        http = running.http
        created = await _create(running, name="frank", rpm=10, models=[KOLORS])
        key = created.pop("key")
        assert key.startswith("sk-sfp-")
        assert created["name"] == "frank" and created["state"] == "active"
        assert (created["rpm"], created["models"], created["daily_budget"]) == (10, [KOLORS], None)
        assert "key_hash" not in created

        listed = (await http.get("/admin/keys", headers=admin())).json()["data"]
        assert listed == [created]
        assert key not in json.dumps(listed)
        by_name = await http.get("/admin/keys/frank", headers=admin())
        assert by_name.json() == created
        assert (await http.get(f"/admin/keys/{created['id']}", headers=admin())).json() == created

        # Works at once on this instance, as a client would use it.
        ok = await http.post(
            "/v1/images/generations",
            json={"model": KOLORS, "prompt": "x"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert ok.status_code == 200

        patched = await http.patch(
            f"/admin/keys/{created['id']}",
            json={"rpm": None, "daily_budget": "1.5", "expires_at": "2031-01-02T03:04:05+01:00"},
            headers=admin(),
        )
        assert patched.status_code == 200
        body = patched.json()
        assert (body["rpm"], body["daily_budget"], body["models"]) == (None, "1.5", [KOLORS])
        assert body["expires_at"] == "2031-01-02T02:04:05Z"

        revoked = await http.delete(f"/admin/keys/{created['id']}", headers=admin())
        assert revoked.status_code == 200
        assert revoked.json()["state"] == "revoked"
        # Revoked here: refused here at once, not at the next refresh.
        refused = await http.post(
            "/v1/images/generations",
            json={"model": KOLORS, "prompt": "x"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"


async def test_admin_keys_validate_bodies_and_names(
    fake: FakeSiliconFlow, tmp_path: Path, database_url: str
) -> None:
    async with _in_process(fake, tmp_path, database_url, admin_keys=ADMIN) as running:
        http = running.http
        await _create(running, name="gina")
        cases = [
            ({"name": "gina"}, 409, "name", "conflict"),
            ({"name": "has space"}, 400, "name", "string_pattern_mismatch"),
            ({"name": "ck_lookalike"}, 400, "name", "key_name"),
            ({"name": "h", "rpm": -1}, 400, "rpm", "greater_than_equal"),
            ({"name": "h", "daily_budget": "0.1234567"}, 400, "daily_budget", "decimal_max_places"),
            ({"name": "h", "rmp": 5}, 400, "rmp", "extra_forbidden"),
            ({"name": "h", "models": []}, 400, "models", "too_short"),
        ]
        for body, status, param, code in cases:
            response = await http.post("/admin/keys", json=body, headers=admin())
            assert response.status_code == status, (body, response.text)
            error = response.json()["error"]
            assert (error["param"], error["code"]) == (param, code), body
        missing = await http.patch("/admin/keys/nobody", json={"rpm": 1}, headers=admin())
        assert missing.status_code == 404
        assert missing.json()["error"]["message"] == "No client key has the id or name 'nobody'."
        assert (await http.get("/admin/keys", headers=admin())).json()["data"][0]["name"] == "gina"


async def test_admin_keys_is_404_without_admin_keys_and_401_for_a_client_key(
    fake: FakeSiliconFlow, tmp_path: Path, database_url: str
) -> None:
    async with _in_process(fake, tmp_path, database_url) as running:
        response = await running.http.get("/admin/keys", headers=admin("anything"))
        assert response.status_code == 404
        assert response.json()["error"]["message"] == "Invalid URL (GET /admin/keys)."
        post = await running.http.post("/admin/keys", json={"name": "x"})
        assert post.status_code == 404
    async with _in_process(fake, tmp_path, database_url, admin_keys=ADMIN) as running:
        created = await _create(running, name="henry")
        for method in ("GET", "POST", "PATCH", "DELETE"):
            path = "/admin/keys" if method in ("GET", "POST") else f"/admin/keys/{created['id']}"
            response = await running.http.request(
                method, path, json={"name": "x"}, headers=admin(created["key"])
            )
            assert response.status_code == 401, method
            assert response.json()["error"]["type"] == "authentication_error"
        listed = (await running.http.get("/admin/keys", headers=admin())).json()["data"]
        assert [(key["name"], key["state"]) for key in listed] == [("henry", "active")]


async def test_an_expired_key_is_refused(
    fake: FakeSiliconFlow, tmp_path: Path, database_url: str
) -> None:
    async with _in_process(fake, tmp_path, database_url, admin_keys=ADMIN) as running:
        past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        expired = await _create(running, name="ivy", expires_at=past)
        later = await _create(running, name="jack", expires_at="2999-01-01")
        headers = {"Authorization": f"Bearer {expired['key']}"}
        body = {"model": KOLORS, "prompt": "x"}
        response = await running.http.post("/v1/images/generations", json=body, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"] == {
            "message": "This proxy key has expired.",
            "type": "authentication_error",
            "param": None,
            "code": "expired_api_key",
        }
        assert expired["state"] == "expired"
        headers = {"Authorization": f"Bearer {later['key']}"}
        ok = await running.http.post("/v1/images/generations", json=body, headers=headers)
        assert ok.status_code == 200
        # Expiring a key that is in use takes effect with its record, on every instance.
        await running.http.patch(
            f"/admin/keys/{later['id']}", json={"expires_at": past}, headers=admin()
        )
        again = await running.http.post("/v1/images/generations", json=body, headers=headers)
        assert again.status_code == 401
        assert again.json()["error"]["code"] == "expired_api_key"


async def test_a_key_limited_to_models_gets_403_naming_them_at_every_entry_point(
    fake: FakeSiliconFlow, tmp_path: Path, database_url: str
) -> None:
    async with _in_process(fake, tmp_path, database_url, admin_keys=ADMIN) as running:
        created = await _create(running, name="kate", models=[KOLORS, EDIT])
        headers = {"Authorization": f"Bearer {created['key']}"}
        expected = f"This key may not use the model {QWEN}. Models it may use: {KOLORS}, {EDIT}."
        fake.clear_requests()
        # Not closed here: it would close the test's client.
        sdk = openai.AsyncOpenAI(
            base_url=ASGI_URL + "/v1", api_key=created["key"], http_client=running.http
        )
        with pytest.raises(openai.PermissionDeniedError) as refused:
            await sdk.images.generate(model=QWEN, prompt="x")
        assert refused.value.body == {
            "message": expected,
            "type": "permission_error",
            "param": "model",
            "code": "model_not_allowed",
        }
        made = await sdk.images.generate(model=KOLORS, prompt="x")
        assert len(made.data) == 1
        listed = [model.id async for model in sdk.models.list()]
        assert sorted(listed) == sorted([KOLORS, EDIT])

        edit = await running.http.post(
            "/v1/images/edits",
            files={"image": ("in.png", image_bytes(), "image/png")},
            data={"prompt": "blue", "model": "Qwen/Qwen-Image-Edit-2509"},
            headers=headers,
        )
        assert edit.status_code == 403
        assert edit.json()["error"]["message"] == (
            "This key may not use the model Qwen/Qwen-Image-Edit-2509. "
            f"Models it may use: {KOLORS}, {EDIT}."
        )
        messages = [{"role": "user", "content": "a cat"}]
        for stream in (False, True):
            chat = await running.http.post(
                "/v1/chat/completions",
                json={"model": QWEN, "stream": stream, "messages": messages},
                headers=headers,
            )
            assert chat.status_code == 403
            assert chat.json()["error"]["message"] == expected
        # Refused before any upstream work: SiliconFlow saw only the Kolors generation.
        models = [recorded.body.get("model") for recorded in fake.requests if recorded.body]
        assert models == [KOLORS]


async def test_a_keys_rpm_and_images_per_day_are_enforced(
    fake: FakeSiliconFlow, tmp_path: Path, database_url: str
) -> None:
    settings = {"admin_keys": ADMIN, "client_rpm": 100, "client_images_per_day": 100}
    async with _in_process(fake, tmp_path, database_url, **settings) as running:
        paced = await _create(running, name="leo", rpm=2)
        counted = await _create(running, name="mia", images_per_day=3)
        body = {"model": KOLORS, "prompt": "x"}

        async def post(key: str, n: int = 1) -> httpx.Response:
            return await running.http.post(
                "/v1/images/generations",
                json={**body, "n": n},
                headers={"Authorization": f"Bearer {key}"},
            )

        assert [(await post(paced["key"])).status_code for _ in range(3)] == [200, 200, 429]
        limited = await post(paced["key"])
        assert limited.json()["error"]["code"] == "client_requests_per_minute"
        assert limited.json()["error"]["message"].startswith(
            "Rate limit reached for this key: 2 requests per minute."
        )

        assert (await post(counted["key"], 2)).status_code == 200
        over = await post(counted["key"], 2)
        assert over.status_code == 429
        assert over.json()["error"]["code"] == "client_images_per_day"
        assert (await post(counted["key"], 1)).status_code == 200


async def test_unknown_keys_share_one_bounded_reload(database_url: str) -> None:
    async with Database.open(database_url) as database:
        store = KeyStore(database.engine)
        await store.create(NewKey(name="first"))
        cache = KeyCache(store, refresh_seconds=3600)
        await cache.start()
        try:
            assert cache.loads == 1
            guesses = [f"sk-sfp-guess-{number}" for number in range(50)]
            found = await asyncio.gather(*(cache.lookup(guess) for guess in guesses))
            assert found == [None] * 50
            # Fifty unknown keys at once cost the database one load, not fifty.
            assert cache.loads == 2
            record, key = await store.create(NewKey(name="fresh"))
            # Created a moment ago, found on first use.
            assert (await cache.lookup(key)) == record
            assert cache.loads == 3
            assert (await cache.lookup(key)) == record
            assert cache.loads == 3
            # A request's several credentials (header, query, ...) wait for one reload together.
            assert (await cache.lookup("sk-sfp-a", "sk-sfp-b", key)) == record
            assert (await cache.lookup("sk-sfp-a", "sk-sfp-b", "sk-sfp-c")) is None
            assert cache.loads == 4
        finally:
            await cache.close()


async def test_keys_keep_working_while_the_database_is_unreachable(
    fake: FakeSiliconFlow,
    tmp_path: Path,
    postgres_server: PostgresServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="sfproxy.auth")
    url = postgres_server.create_database()
    name = url.rsplit("/", 1)[1]
    async with _in_process(fake, tmp_path, url, admin_keys=ADMIN) as running:
        created = await _create(running, name="nina")
        headers = {"Authorization": f"Bearer {created['key']}"}
        body = {"model": KOLORS, "prompt": "x"}
        cache = running.services.keys.cache
        assert cache is not None
        postgres_server.psql(
            postgres_server.url(),
            f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false; "
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}';",
        )
        try:
            await cache.reload()
            assert cache.failing
            ok = await running.http.post("/v1/images/generations", json=body, headers=headers)
            assert ok.status_code == 200
            unknown = await running.http.post(
                "/v1/images/generations", json=body, headers={"Authorization": "Bearer nope"}
            )
            assert unknown.status_code == 401
        finally:
            postgres_server.psql(
                postgres_server.url(), f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true;"
            )
        await cache.reload()
        assert not cache.failing
    messages = [record.getMessage() for record in caplog.records]
    assert (
        "client keys: the database did not answer (DBAPIError); "
        "serving the 1 key(s) loaded before" in messages
    )
    assert "client keys: the database answers again" in messages
