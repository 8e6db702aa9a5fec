"""Several SiliconFlow keys across accounts, against the fake's accounts over real HTTP."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sfproxy.fake_upstream import FakeSiliconFlow
from sfproxy.setting_values import ConfigError
from sfproxy.settings import load_settings
from sfproxy.upstream_accounts import account_label, key_label
from sfproxy.upstream_keys import KeyPool
from tests.support.inprocess import Running, in_process, service_settings
from tests.support.redis import RedisServer

QWEN = "Qwen/Qwen-Image"
KOLORS = "Kwai-Kolors/Kolors"
A1, A2, B1 = "sk-acct-a-key-one-0001", "sk-acct-a-key-two-0002", "sk-acct-b-key-one-0003"


@pytest.fixture
async def upstream() -> AsyncIterator[FakeSiliconFlow]:
    async with FakeSiliconFlow() as fake:
        yield fake


@pytest.fixture
def upstream_thread() -> Iterator[FakeSiliconFlow]:
    """A fake on its own thread, for a command run as a subprocess while the test waits."""
    with FakeSiliconFlow() as fake:
        yield fake


def proxy(fake: FakeSiliconFlow, tmp_path: Path, keys: list[str], **overrides: Any) -> Any:
    settings = service_settings(
        fake,
        tmp_path,
        siliconflow_api_key=None,
        siliconflow_api_keys=", ".join(keys),
        image_store="off",
        **overrides,
    )
    return in_process(settings)


async def generate(running: Running, model: str = QWEN) -> httpx.Response:
    body = {"model": model, "prompt": "a fox", "size": "1024x1024"}
    return await running.http.post("/v1/images/generations", json=body)


def pool(running: Running) -> KeyPool:
    return running.services.client.keys


def used_keys(fake: FakeSiliconFlow) -> list[tuple[str, int | None]]:
    """Which key each generation came with, and how the fake answered it."""
    return [(str(r.authorization).removeprefix("Bearer "), r.status) for r in fake.requests]


def two_accounts(fake: FakeSiliconFlow, **limits: Any) -> None:
    fake.accounts.add("acct-a", keys=[A1, A2], **limits)
    fake.accounts.add("acct-b", keys=[B1], **limits)


async def test_two_accounts_double_the_images_per_minute(
    upstream: FakeSiliconFlow, tmp_path: Path
) -> None:
    two_accounts(upstream, images_per_minute=2)
    async with proxy(upstream, tmp_path, [A1, B1]) as running:
        for _ in range(4):
            response = await generate(running)
            assert response.status_code == 200, response.text
        assert sorted(key for key, _ in used_keys(upstream)) == [A1, A1, B1, B1]
        refused = await generate(running)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert re.fullmatch(
        r"All 2 SiliconFlow accounts are rate limited for Qwen/Qwen-Image; the first is free "
        r"again in \d+ s\.",
        error["message"],
    ), error["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 61
    # The fifth call met a 429 at each account in turn, and no client saw the first of them.
    assert sorted(used_keys(upstream)[4:]) == [(A1, 429), (B1, 429)]


async def test_a_per_account_pacing_budget_keeps_429s_away_from_siliconflow(
    upstream: FakeSiliconFlow, tmp_path: Path
) -> None:
    two_accounts(upstream, images_per_minute=2)
    async with proxy(
        upstream, tmp_path, [A1, B1], upstream_images_per_minute=2, queue_timeout=0
    ) as running:
        statuses = [(await generate(running)).status_code for _ in range(4)]
        refused = await generate(running)
    assert statuses == [200] * 4
    assert (refused.status_code, refused.json()["error"]["code"]) == (429, "upstream_pacing")
    assert int(refused.headers["Retry-After"]) >= 1
    # Every call SiliconFlow saw was within its account's budget.
    assert sorted(used_keys(upstream)) == [(A1, 200), (A1, 200), (B1, 200), (B1, 200)]


async def test_an_account_at_its_limit_leaves_the_others_serving(
    upstream: FakeSiliconFlow, tmp_path: Path
) -> None:
    upstream.accounts.add("acct-a", keys=[A1], images_per_minute=1)
    upstream.accounts.add("acct-b", keys=[B1])
    async with proxy(upstream, tmp_path, [A1, B1]) as running:
        statuses = [(await generate(running)).status_code for _ in range(6)]
    assert statuses == [200] * 6
    calls = used_keys(upstream)
    # A made its one image, met its limit once, then rested while B served the rest.
    assert [c for c in calls if c[0] == A1] == [(A1, 200), (A1, 429)]
    assert [c for c in calls if c[0] == B1] == [(B1, 200)] * 5


async def test_keys_of_one_account_share_its_cooldown(
    upstream: FakeSiliconFlow, tmp_path: Path
) -> None:
    two_accounts(upstream)
    upstream.accounts.update("acct-a", images_per_minute=0)
    async with proxy(upstream, tmp_path, [A1, A2, B1]) as running:
        accounts = {key.secret: key.account for key in pool(running).keys}
        statuses = [(await generate(running)).status_code for _ in range(4)]
    assert accounts == {A1: "acct-a", A2: "acct-a", B1: "acct-b"}
    assert statuses == [200] * 4
    calls = used_keys(upstream)
    # One 429 cooled account A: its other key was not tried.
    assert [c for c in calls if c[0] in (A1, A2)] in ([(A1, 429)], [(A2, 429)])
    assert [c for c in calls if c[0] == B1] == [(B1, 200)] * 4


async def test_a_revoked_key_leaves_the_others_serving_and_comes_back(
    upstream: FakeSiliconFlow, tmp_path: Path
) -> None:
    two_accounts(upstream)
    async with proxy(upstream, tmp_path, [A1, B1]) as running:
        upstream.accounts.revoke(A1)
        statuses = [(await generate(running)).status_code for _ in range(4)]
        assert statuses == [200] * 4
        assert [c for c in used_keys(upstream) if c[0] == A1] == [(A1, 401)]
        assert (await running.http.get("/readyz")).json()["checks"]["upstream_keys"] == (
            "1 of 2 keys usable, in 1 account; 1 invalid"
        )
        upstream.accounts.restore(A1)
        await pool(running).probe_now()
        upstream.clear_requests()
        statuses = [(await generate(running)).status_code for _ in range(2)]
    assert statuses == [200, 200]
    assert sorted(used_keys(upstream)) == [(A1, 200), (B1, 200)]


async def test_an_empty_account_serves_free_models_and_comes_back_when_topped_up(
    upstream: FakeSiliconFlow, tmp_path: Path
) -> None:
    two_accounts(upstream)
    async with proxy(upstream, tmp_path, [A1, B1]) as running:
        upstream.accounts.set_balance("acct-a", 0)
        statuses = [(await generate(running)).status_code for _ in range(4)]
        assert statuses == [200] * 4
        assert [c for c in used_keys(upstream) if c[0] == A1] == [(A1, 403)]
        # Both empty: the paid model has no key left, Kolors (free on .cn) is still served.
        upstream.accounts.set_balance("acct-b", 0)
        assert (await generate(running)).status_code == 503
        no_key = await generate(running)
        upstream.clear_requests()
        kolors = [(await generate(running, KOLORS)).status_code for _ in range(2)]
        assert kolors == [200, 200]
        assert sorted(key for key, _ in used_keys(upstream)) == [A1, B1]
        upstream.accounts.set_balance("acct-a", 3)
        await pool(running).probe_now()
        upstream.clear_requests()
        topped_up = await generate(running)
    assert no_key.status_code == 503
    error = no_key.json()["error"]
    assert error["code"] == "no_upstream_key"
    assert error["message"] == (
        "No SiliconFlow key can serve Qwen/Qwen-Image; 2 keys out of balance for paid models. "
        "Keys taken out are checked again every 300 s."
    )
    assert topped_up.status_code == 200
    assert used_keys(upstream) == [(A1, 200)]


async def test_every_key_invalid_is_one_503_and_not_ready(
    upstream: FakeSiliconFlow, tmp_path: Path
) -> None:
    two_accounts(upstream)
    async with proxy(upstream, tmp_path, [A1, B1]) as running:
        upstream.accounts.revoke(A1)
        upstream.accounts.revoke(B1)
        first = await generate(running)
        second = await generate(running)
        ready = await running.http.get("/readyz")
    for response in (first, second):
        assert response.status_code == 503
        assert response.json()["error"] == {
            "message": "No SiliconFlow key can serve Qwen/Qwen-Image; 2 keys invalid "
            "(SiliconFlow answered 401). Keys taken out are checked again every 300 s.",
            "type": "upstream_error",
            "param": None,
            "code": "no_upstream_key",
        }
    # The second request did not reach SiliconFlow.
    assert sorted(used_keys(upstream)) == [(A1, 401), (B1, 401)]
    assert ready.status_code == 503
    assert ready.json()["checks"]["upstream_keys"] == (
        "0 of 2 keys usable, in 0 accounts; 2 invalid"
    )


async def test_a_key_refused_at_start_is_out_from_the_start(
    upstream: FakeSiliconFlow, tmp_path: Path
) -> None:
    two_accounts(upstream)
    unknown = "sk-not-a-siliconflow-key-9999"
    async with proxy(upstream, tmp_path, [unknown, A1, B1]) as running:
        statuses = [(await generate(running)).status_code for _ in range(3)]
        ready = await running.http.get("/readyz")
    assert statuses == [200] * 3
    assert unknown not in {key for key, _ in used_keys(upstream)}
    assert ready.json()["checks"]["upstream_keys"] == "2 of 3 keys usable, in 2 accounts; 1 invalid"


async def test_no_key_appears_in_answers_logs_or_metrics(
    upstream: FakeSiliconFlow, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    two_accounts(upstream, images_per_minute=1)
    unknown = "sk-not-a-siliconflow-key-9999"
    keys = [unknown, A1, A2, B1]
    seen: list[str] = []
    async with proxy(upstream, tmp_path, keys) as running:
        upstream.accounts.revoke(A2)
        upstream.accounts.set_balance("acct-b", 0)
        for model in (QWEN, QWEN, QWEN, KOLORS, KOLORS):
            response = await generate(running, model)
            seen.append(f"{response.status_code} {response.headers} {response.text}")
        await pool(running).probe_now()
        for path in ("/readyz", "/metrics", "/healthz"):
            response = await running.http.get(path)
            seen.append(f"{response.headers} {response.text}")
    seen.append(caplog.text)
    seen.extend(str(record.__dict__) for record in caplog.records)
    everything = "\n".join(seen)
    # Something did happen: a 429, a 401 and a 403 were met along the way.
    assert sorted({status for _, status in used_keys(upstream)}) == [200, 401, 403, 429]
    assert key_label(A2) in caplog.text
    for key in keys:
        assert key not in everything


async def test_two_instances_sharing_redis_agree_on_a_cooldown_and_a_removal(
    upstream: FakeSiliconFlow, tmp_path: Path, redis: RedisServer
) -> None:
    two_accounts(upstream)
    upstream.accounts.add("acct-c", keys=["sk-acct-c-key-one-0004"])
    upstream.accounts.update("acct-a", images_per_minute=0)
    keys = [A1, B1, "sk-acct-c-key-one-0004"]
    shared = {"redis_url": redis.url}
    async with (
        proxy(upstream, tmp_path / "one", keys, **shared) as one,
        proxy(upstream, tmp_path / "two", keys, **shared) as two,
    ):
        upstream.accounts.revoke(B1)
        # The first instance meets account A's 429 and B's 401 (in some order) and is served by C.
        for _ in range(3):
            assert (await generate(one)).status_code == 200
        assert {key for key, _ in used_keys(upstream)} == {A1, B1, keys[2]}
        upstream.clear_requests()
        statuses = [(await generate(two)).status_code for _ in range(4)]
        ready = await two.http.get("/readyz")
    assert statuses == [200] * 4
    # The second instance never tried A (cooling) or B (invalid): it learnt both from Redis.
    assert used_keys(upstream) == [(keys[2], 200)] * 4
    assert ready.json()["checks"]["upstream_keys"] == (
        "2 of 3 keys usable, in 2 accounts; 1 invalid"
    )


async def test_balances_become_gauges_and_a_low_one_is_logged(
    upstream: FakeSiliconFlow, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sfproxy.upstream_keys")
    two_accounts(upstream)
    upstream.accounts.set_balance("acct-a", 12.5)
    upstream.accounts.update("acct-b", balance=0.5, charge_balance=0.25)
    async with proxy(upstream, tmp_path, [A1, A2, B1], low_balance_warning=1) as running:
        gauge = "sfproxy_upstream_balance"
        a, b = account_label("acct-a"), account_label("acct-b")
        assert (running.metric(gauge, account=a), running.metric(gauge, account=b)) == (12.5, 0.75)
        low = [r.getMessage() for r in caplog.records if "LOW_BALANCE_WARNING" in r.getMessage()]
        assert low == [f"SiliconFlow account {b} has 0.75 left, below LOW_BALANCE_WARNING (1)"]
        caplog.clear()
        upstream.accounts.set_balance("acct-a", 0.25)
        upstream.clear_requests()
        await pool(running).refresh_balances()
        assert running.metric(gauge, account=a) == 0.25
        low = [r.getMessage() for r in caplog.records if "LOW_BALANCE_WARNING" in r.getMessage()]
        assert sorted(low) == sorted(
            f"SiliconFlow account {label} has {left:.2f} left, below LOW_BALANCE_WARNING (1)"
            for label, left in ((a, 0.25), (b, 0.75))
        )
        metrics = (await running.http.get("/metrics")).text
    assert f'sfproxy_upstream_balance{{account="{a}"}} 0.25' in metrics
    for secret in ('"acct-a"', '"acct-b"', A1, A2, B1):
        assert secret not in metrics


async def test_admin_upstream_lists_accounts_and_refuses_client_keys(
    upstream: FakeSiliconFlow, tmp_path: Path
) -> None:
    two_accounts(upstream)
    upstream.accounts.set_balance("acct-b", 2)
    admin, client = "admin-key-0123456789", "client-key-0123456789"
    async with proxy(
        upstream,
        tmp_path,
        [A1, A2, B1],
        admin_keys=admin,
        allow_client_keys=client,
        model_limits='{"Qwen/Qwen-Image": {"images_per_minute": 5}}',
    ) as running:
        upstream.accounts.revoke(A2)
        upstream.accounts.update("acct-b", images_per_minute=0)
        for _ in range(3):
            assert (
                await running.http.post(
                    "/v1/images/generations",
                    json={"model": QWEN, "prompt": "a fox"},
                    headers={"Authorization": f"Bearer {client}"},
                )
            ).status_code == 200
        refused = [
            await running.http.get("/admin/upstream", headers=headers)
            for headers in ({}, {"Authorization": f"Bearer {client}"}, {"Authorization": "x"})
        ]
        listed = await running.http.get(
            "/admin/upstream", headers={"Authorization": f"Bearer {admin}"}
        )
    assert [r.status_code for r in refused] == [401, 401, 401]
    assert listed.status_code == 200
    body = listed.json()
    for key in (A1, A2, B1, admin, client):
        assert key not in listed.text
    assert (body["site"], body["probed"]) == ("cn", True)
    accounts = {account["account"]: account for account in body["accounts"]}
    a, b = accounts[account_label("acct-a")], accounts[account_label("acct-b")]
    assert (a["grouped"], a["balance"], a["cooling_seconds"]) == (True, 100.0, None)
    assert [(k["label"], k["state"], k["reasons"]) for k in a["keys"]] == [
        (key_label(A1), "ok", []),
        (key_label(A2), "out", ["invalid"]),
    ]
    assert b["balance"] == 2.0 and 0 < b["cooling_seconds"] <= 61
    # Only Qwen-Image has a budget; A made its three images, B's 429 made none.
    assert a["budgets"] == {QWEN: {"limit": 5, "used": 3}}
    assert b["budgets"] == {QWEN: {"limit": 5, "used": 0}}
    assert [(k["label"], k["state"]) for k in b["keys"]] == [(key_label(B1), "cooling")]
    listed = [spec.id for spec in running.services.catalogue.listed]
    assert body["models"] == {
        "source": "discovered",
        "status": running.services.models.status,
        "listed": listed,
        "account": running.services.models.account_models,
    }
    assert body["models"]["account"] is not None and QWEN in body["models"]["listed"]


async def test_admin_is_404_without_admin_keys(upstream: FakeSiliconFlow, tmp_path: Path) -> None:
    two_accounts(upstream)
    async with proxy(upstream, tmp_path, [A1, B1]) as running:
        response = await running.http.get(
            "/admin/upstream", headers={"Authorization": "Bearer anything"}
        )
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (GET /admin/upstream)."


def test_a_key_cannot_be_both_admin_and_client() -> None:
    with pytest.raises(ConfigError, match="ADMIN_KEYS must differ from every client key"):
        load_settings(
            _env_file=None, siliconflow_api_key="sk-x", admin_keys="k1 k2", allow_client_keys="k2"
        )


def test_the_upstream_command_lists_accounts_and_key_states(
    upstream_thread: FakeSiliconFlow,
) -> None:
    fake = upstream_thread
    two_accounts(fake)
    fake.accounts.set_balance("acct-b", 0)
    fake.accounts.revoke(A2)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "SF_BASE": fake.base_url,
        "SILICONFLOW_API_KEYS": f"{A1} {A2} {B1}",
    }
    command = [sys.executable, "-m", "sfproxy", "upstream"]
    shown = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [
        "SiliconFlow (cn): 3 key(s) in 3 account(s)",
        f"{account_label('acct-a')}  balance 100.00",
        f"  {key_label(A1)}  ok",
        # A key SiliconFlow refuses cannot tell its account: it stands alone.
        f"{account_label(key_label(A2))}  balance unknown  (account unknown)",
        f"  {key_label(A2)}  out (invalid)",
        f"{account_label('acct-b')}  balance 0.00",
        f"  {key_label(B1)}  out (no_balance)",
        "image models of the account: Kwai-Kolors/Kolors, Qwen/Qwen-Image, "
        "Qwen/Qwen-Image-Edit, Qwen/Qwen-Image-Edit-2509, Tongyi-MAI/Z-Image, "
        "Tongyi-MAI/Z-Image-Turbo, baidu/ERNIE-Image-Turbo",
    ]
    fake.accounts.revoke(A1)
    as_json = subprocess.run(
        [*command, "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert as_json.returncode == 1
    states = [
        (key["label"], key["state"])
        for account in json.loads(as_json.stdout)["accounts"]
        for key in account["keys"]
    ]
    assert states == [(key_label(A1), "out"), (key_label(A2), "out"), (key_label(B1), "out")]
    # An empty account still lists its models: B1 is not invalid, only out of balance.
    assert json.loads(as_json.stdout)["models"]["account"][:2] == [
        "Kwai-Kolors/Kolors",
        "Qwen/Qwen-Image",
    ]
    for key in (A1, A2, B1):
        assert key not in shown.stdout + shown.stderr + as_json.stdout + as_json.stderr
