from __future__ import annotations

import random

import httpx
import pytest

from router.sim.behaviour import Behaviour
from router.sim.hosted import HostedBackend, HostedParams, HostedSim
from router.sim.ratelimit import RateLimiter, openai_duration
from tests.sim.conftest import chat_body

pytestmark = pytest.mark.anyio

FAST = {"ttft_median_s": 0.005, "ttft_sigma": 0.0, "stall_probability": 0.0, "itl_s": 0.0}


def test_openai_duration_format() -> None:
    assert openai_duration(0.012) == "12ms"
    assert openai_duration(1.0) == "1s"
    assert openai_duration(1.574) == "1.574s"
    assert openai_duration(360.0) == "6m0s"
    assert openai_duration(3723.5) == "1h2m3.5s"


def test_token_bucket_refills_per_minute() -> None:
    now = [0.0]
    limiter = RateLimiter(rpm=60, tpm=None, clock=lambda: now[0])
    for _ in range(60):
        assert limiter.check("k", 10).allowed
    refused = limiter.check("k", 10)
    assert not refused.allowed
    assert refused.retry_after_s == pytest.approx(1.0)
    now[0] = 1.0
    assert limiter.check("k", 10).allowed
    assert limiter.check("other-key", 10).allowed


async def test_rate_limit_headers_then_429(client: httpx.AsyncClient) -> None:
    params = HostedParams(rpm=3, tpm=100_000, **FAST)
    async with HostedSim(params, Behaviour(tokens=5)) as sim:
        url = f"{sim.base_url}/chat/completions"
        auth = {"Authorization": "Bearer key-a"}
        remaining = []
        for _ in range(3):
            r = await client.post(url, json=chat_body(), headers=auth)
            assert r.status_code == 200
            assert r.headers["x-ratelimit-limit-requests"] == "3"
            assert r.headers["x-ratelimit-limit-tokens"] == "100000"
            assert r.headers["x-ratelimit-reset-requests"].endswith("s")
            remaining.append(int(r.headers["x-ratelimit-remaining-requests"]))
        assert remaining == [2, 1, 0]
        r = await client.post(url, json=chat_body(), headers=auth)
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
        error = r.json()["error"]
        assert error["code"] == "rate_limit_exceeded"
        assert error["type"] == "requests"
        assert "Please try again in" in error["message"]
        # another key has its own budget
        other = await client.post(url, json=chat_body(), headers={"Authorization": "Bearer b"})
        assert other.status_code == 200


async def test_token_limit_counts_prompt_and_max_tokens(client: httpx.AsyncClient) -> None:
    async with HostedSim(HostedParams(tpm=100, **FAST), Behaviour(tokens=5)) as sim:
        url = f"{sim.base_url}/chat/completions"
        big = chat_body("x" * 200, max_tokens=40)  # 50 + 40 tokens
        assert (await client.post(url, json=big)).status_code == 200
        r = await client.post(url, json=big)
        assert r.status_code == 429
        assert r.json()["error"]["type"] == "tokens"


async def test_error_bursts_come_in_runs(client: httpx.AsyncClient) -> None:
    params = HostedParams(error_burst_probability=1.0, error_burst_length=3, **FAST)
    async with HostedSim(params) as sim:
        statuses = [
            (await client.post(f"{sim.base_url}/chat/completions", json=chat_body())).status_code
            for _ in range(3)
        ]
        assert statuses == [503, 503, 503]
        assert sim.records[-1].status == 503


def test_seeded_ttft_is_reproducible_with_heavy_tail() -> None:
    params = HostedParams(ttft_median_s=0.5, ttft_sigma=0.3, stall_probability=0.05, stall_s=3.0)

    def draws(seed: int) -> list[float]:
        backend = HostedBackend(params, random.Random(seed), clock=lambda: 0.0)
        return [backend.sample_ttft() for _ in range(2000)]

    a = draws(3)
    assert a == draws(3)
    assert a != draws(4)
    ordered = sorted(a)
    assert 0.45 < ordered[1000] < 0.55  # the median
    assert ordered[1990] > 3.0  # stalls make the p99.5 multi-second
