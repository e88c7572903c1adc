"""The load driver against a scripted router (httpx.MockTransport): what it records."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

from router.config import Price
from router.sim.workload import Turn
from router.tools.driver import TurnOutcome, drive, percentile, summarise

pytestmark = pytest.mark.anyio


def turn(at: float, session: int = 0) -> Turn:
    return Turn(at, session, 0, ({"role": "user", "content": "hi"},), 8)


def frame(obj: object) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def chunk(content: str) -> bytes:
    return frame({"choices": [{"index": 0, "delta": {"content": content}}]})


def router_stub(
    *, delay_s: float = 0.05, hang: bool = False, status: int = 200, reason: str = "cheapest"
) -> tuple[httpx.AsyncClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    async def body() -> AsyncIterator[bytes]:
        yield frame({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
        await anyio.sleep(delay_s)
        yield chunk("Hello")
        if hang:
            await anyio.sleep(60)
        yield chunk(" world")
        yield frame({"choices": [], "usage": {"prompt_tokens": 1000, "completion_tokens": 500}})
        yield b"data: [DONE]\n\n"

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if status != 200:
            return httpx.Response(status, json={"error": {"message": "no target"}})
        headers = {
            "x-firsttoken-target": "local-a",
            "x-firsttoken-attempts": "2",
            "x-firsttoken-reason": reason,
        }
        return httpx.Response(200, headers=headers, content=body())

    return httpx.AsyncClient(transport=httpx.MockTransport(handler)), seen


async def run(
    client: httpx.AsyncClient,
    turns: list[Turn],
    *,
    duration_s: float = 1.0,
    drain_s: float = 10.0,
    max_in_flight: int = 256,
) -> list[TurnOutcome]:
    async with client:
        return await drive(
            "http://router/v1",
            turns,
            route="chat",
            client=client,
            duration_s=duration_s,
            drain_s=drain_s,
            max_in_flight=max_in_flight,
        )


async def test_records_ttft_at_the_first_content_and_the_router_headers() -> None:
    client, seen = router_stub(delay_s=0.05, reason="cheapest; fell back; hedged")
    [out] = await run(client, [turn(0.0, session=7)])
    assert out.outcome == "ok"
    assert out.ttft_s is not None and out.ttft_s >= 0.05  # not the empty role frame
    assert out.end_s is not None and out.sent_s is not None
    assert (out.target, out.attempts, out.status) == ("local-a", 2, 200)
    assert out.hedged and out.fell_back
    assert (out.prompt_tokens, out.completion_tokens) == (1000, 500)
    request = seen[0]
    assert request.url.path == "/v1/chat/completions"
    assert request.headers["x-session-id"] == "s7"
    body = json.loads(request.content)
    assert body["stream"] is True and body["model"] == "chat"
    assert body["stream_options"] == {"include_usage": True}


async def test_sends_open_loop_at_arrival_times() -> None:
    client, _ = router_stub(delay_s=0.2)
    outcomes = await run(client, [turn(0.0), turn(0.1, 1), turn(0.2, 2)])
    sent = [o.sent_s for o in outcomes]
    assert all(s is not None for s in sent)
    # Each is sent at its arrival time (within a busy machine's scheduling delay), so
    # before the previous turn's answer (0.2 s) could have come back.
    for at, s in zip([0.0, 0.1, 0.2], sent, strict=True):
        assert s is not None and at <= s + 0.005 and s - at < 0.09


async def test_a_full_cap_drops_instead_of_queueing() -> None:
    client, seen = router_stub(delay_s=0.3)
    outcomes = await run(client, [turn(0.0), turn(0.01, 1)], max_in_flight=1)
    assert [o.outcome for o in outcomes] == ["ok", "dropped"]
    assert len(seen) == 1


async def test_hard_stop_cuts_streams_and_skips_late_turns() -> None:
    client, seen = router_stub(delay_s=0.01, hang=True)
    started = time.monotonic()
    outcomes = await run(client, [turn(0.0), turn(0.5, 1)], duration_s=0.3, drain_s=0.2)
    assert time.monotonic() - started < 2.0
    assert len(outcomes) == 1 and len(seen) == 1  # the turn at 0.5 s is past the duration
    [out] = outcomes
    assert out.outcome == "cut"
    assert out.ttft_s is not None  # its first token still counts


async def test_an_error_status_is_recorded() -> None:
    client, _ = router_stub(status=503)
    [out] = await run(client, [turn(0.0)])
    assert (out.outcome, out.status) == ("error", 503)
    assert out.error is not None and "no target" in out.error


def outcome(target: str | None, ttft_ms: float | None, **kw: object) -> TurnOutcome:
    out = TurnOutcome(0, 0, 0.0, sent_s=0.0, target=target, prompt_tokens=1_000_000)
    out.ttft_s = None if ttft_ms is None else ttft_ms / 1000
    out.outcome = "ok" if ttft_ms is not None else "error"
    for k, v in kw.items():
        setattr(out, k, v)
    return out


def test_summarise_counts_misses_shares_and_cost() -> None:
    outcomes = [
        outcome("local-a", 100),
        outcome("local-a", 200),
        outcome("hosted-a", 900, hedged=True),
        outcome(None, None),
    ]
    prices = {"hosted-a": Price(input_per_mtok=2.0)}
    s = summarise(outcomes, slo_ms=300, prices=prices, targets=["local-a", "hosted-a", "hosted-b"])
    assert (s["turns"], s["ok"], s["errors"]) == (4, 3, 1)
    assert s["slo_attainment"] == 0.5  # the error is a miss
    assert s["ttft_p50_ms"] == 200.0
    assert s["hedges"] == 1
    assert s["cost_usd"] == pytest.approx(2.0)
    assert s["cost_per_1k_turns_usd"] == pytest.approx(2000 / 3, rel=1e-3)
    assert s["targets"]["local-a"]["share"] == pytest.approx(2 / 3, abs=1e-3)
    assert s["targets"]["hosted-b"] == {
        "turns": 0,
        "share": 0.0,
        "ttft_p50_ms": None,
        "ttft_p99_ms": None,
        "cost_usd": 0.0,
    }


@pytest.mark.parametrize(("q", "expected"), [(0.0, 1.0), (0.5, 2.5), (1.0, 4.0)])
def test_percentile_interpolates(q: float, expected: float) -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], q) == expected


def test_percentile_of_nothing_is_none() -> None:
    assert percentile([], 0.5) is None
