"""Admission: the route and the key before the walk, large bodies off the event loop."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator

import pytest

from router.edge import LimitsConfig
from router.errors import BadRequest, ModelNotFound, Overloaded
from router.gateway.admission import BodyParser, BodyScreen, is_small
from router.gateway.prescan import COUNT_BYTES, EARLY_BYTES, locate_model
from router.vocabulary import ParsePlace

pytestmark = pytest.mark.anyio

LIMITS = LimitsConfig()
TINY = b'{"role":"user","content":"a"},'


def tiny_messages(model: bytes, size: int = 2**20) -> bytes:
    """A body of `size` bytes of tiny messages (the issue's stall came from 4 MiB)."""
    n = size // len(TINY)
    return b'{"messages":[' + TINY * n + TINY[:-1] + b'],"model":"' + model + b'"}'


def test_the_model_is_found_in_the_raw_bytes_only_when_that_is_certain() -> None:
    assert locate_model(b'{"messages": [], "model" : "chat"}') == "chat"
    assert locate_model(tiny_messages(b"chat", 4096)) == "chat"
    # twice (which one is top-level?), escaped, not a plain string, or absent: unknown
    assert locate_model(b'{"metadata": {"model": "x"}, "model": "chat"}') is None
    assert locate_model(b'{"model": "ch\\u0061t"}') is None
    assert locate_model(b'{"model": 5}') is None
    assert locate_model(b'{"text": "a \\"model\\": \\"x\\""}') is None
    assert locate_model(b'{"messages": []}') is None


def test_a_body_is_small_by_its_bytes_and_its_count_of_json_values() -> None:
    assert is_small(b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}', LIMITS)
    assert not is_small(b'{"model": "m", "x": "' + b"a" * LIMITS.inline_bytes + b'"}', LIMITS)
    assert not is_small(b'{"x": [' + b"0," * LIMITS.inline_values + b"0]}", LIMITS)


class Recorder:
    def __init__(self) -> None:
        self.places: list[ParsePlace] = []
        self.prechecked: list[str] = []

    def parsed(self, place: ParsePlace) -> None:
        self.places.append(place)

    def precheck(self, model: str) -> None:
        self.prechecked.append(model)
        if model != "chat":
            raise ModelNotFound(f"the model '{model}' does not exist")


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def parser() -> AsyncIterator[tuple[BodyParser, Recorder]]:
    recorder = Recorder()
    bodies = BodyParser(recorder.parsed)
    yield bodies, recorder
    await bodies.aclose()


async def test_a_small_body_is_checked_for_its_route_before_it_is_walked(
    parser: tuple[BodyParser, Recorder],
) -> None:
    bodies, rec = parser
    # Invalid messages, but the route is unknown: the 404 comes before the walk's 400.
    raw = b'{"model": "nope", "messages": [1, 2, 3]}'
    with pytest.raises(ModelNotFound):
        await bodies.parse("chat", raw, None, LIMITS, rec.precheck)
    ok = await bodies.parse(
        "chat", b'{"model": "chat", "messages": [{"role": "user"}]}', None, LIMITS, rec.precheck
    )
    assert (ok.model, rec.prechecked[-2:], rec.places[-1]) == ("chat", ["nope", "chat"], "loop")


async def test_a_large_body_to_an_unknown_model_is_refused_before_any_parse(
    parser: tuple[BodyParser, Recorder],
) -> None:
    bodies, rec = parser
    rec.places.clear()
    with pytest.raises(ModelNotFound):
        await bodies.parse("chat", tiny_messages(b"nope"), None, LIMITS, rec.precheck)
    assert rec.places == [] and bodies.pending == 0


async def test_a_large_body_is_parsed_in_a_worker_while_the_event_loop_runs_on(
    parser: tuple[BodyParser, Recorder],
) -> None:
    """A 1 MiB body of tiny messages takes about 0.1 s to parse; on the loop no other
    task could run meanwhile. The ticker counts how often it ran during it."""
    bodies, rec = parser
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.002)
            ticks += 1

    limits = LimitsConfig(max_messages=200_000, max_content_parts=10)
    task = asyncio.create_task(ticker())
    try:
        parsed = await bodies.parse("chat", tiny_messages(b"chat"), "s-1", limits, rec.precheck)
    finally:
        task.cancel()
    assert rec.places[-1] == "worker"
    assert ticks > 0, "the event loop was blocked for the whole parse"
    assert (parsed.model, parsed.session_key, parsed.stream) == ("chat", "h:s-1", False)
    wire = json.loads(parsed.body.for_target("m").wire)
    assert wire["model"] == "m" and len(wire["messages"]) == 2**20 // len(TINY) + 1


async def test_a_large_body_in_the_pieces_it_arrived_in_is_parsed_whole(
    parser: tuple[BodyParser, Recorder],
) -> None:
    """The pieces go to the worker as they are: cut anywhere, even mid-character,
    the body forwarded is the body sent."""
    bodies, rec = parser
    raw = tiny_messages(b"chat", 2**19).replace(b'"a"', '"é"'.encode(), 1)
    cut = raw.index("é".encode()) + 1  # inside the two bytes of é
    pieces = [raw[:cut], raw[cut : cut + 65536], raw[cut + 65536 :]]
    limits = LimitsConfig(max_messages=200_000)
    parsed = await bodies.parse("chat", pieces, None, limits, rec.precheck, checked="chat")
    assert rec.places[-1] == "worker"
    wire = json.loads(parsed.body.for_target("m").wire)
    assert wire["messages"][0]["content"] == "é"
    assert wire["messages"] == json.loads(raw)["messages"]


async def test_a_large_body_over_the_limits_is_a_400_from_the_worker(
    parser: tuple[BodyParser, Recorder],
) -> None:
    bodies, rec = parser
    offload = LimitsConfig(inline_bytes=0, max_messages=10)  # every body goes to a worker
    with pytest.raises(BadRequest, match="limit is 10"):
        await bodies.parse("chat", tiny_messages(b"chat", 4096), None, offload, rec.precheck)
    nonfinite = b'{"model": "chat", "messages": [{"role": "user"}], "x": 1e999}'
    with pytest.raises(BadRequest, match="too large"):
        await bodies.parse("chat", nonfinite, None, offload, rec.precheck)
    assert rec.places[-2:] == ["worker", "worker"]


async def test_a_refused_large_body_is_freed_with_its_error_not_kept_by_a_cycle(
    parser: tuple[BodyParser, Recorder],
) -> None:
    # The hostile mix: a router whose refusals of 4 MiB bodies wait for the cyclic GC
    # grows by those bodies until it runs (1.45 GiB with a lazier GC).
    bodies, rec = parser
    offload = LimitsConfig(inline_bytes=0, max_messages=10)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(3):
            with pytest.raises(BadRequest, match="limit is 10"):
                await bodies.parse(
                    "chat", tiny_messages(b"chat", 4096), None, offload, rec.precheck
                )
        gc.collect()
        kept = [o for o in gc.garbage if isinstance(o, BadRequest)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert kept == []


async def test_past_the_queue_of_large_bodies_the_answer_is_a_503(
    parser: tuple[BodyParser, Recorder],
) -> None:
    bodies, rec = parser
    limits = LimitsConfig(inline_bytes=0, parse_workers=1, parse_queue=1)
    raw = b'{"model": "chat", "messages": [{"role": "user"}]}'
    results = await asyncio.gather(
        *(bodies.parse("chat", raw, None, limits, rec.precheck) for _ in range(4)),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, Overloaded)]
    assert len(refused) == 2, results  # one parsing, one waiting, two refused
    assert bodies.pending == 0
    assert (await bodies.parse("chat", raw, None, limits, rec.precheck)).model == "chat"


async def test_a_worker_that_dies_is_replaced(parser: tuple[BodyParser, Recorder]) -> None:
    bodies, rec = parser
    offload = LimitsConfig(inline_bytes=0)
    raw = b'{"model": "chat", "messages": [{"role": "user"}]}'
    assert (await bodies.parse("chat", raw, None, offload, rec.precheck)).model == "chat"
    for worker in bodies._idle:  # what the OOM killer would do
        worker.process.kill()
        await worker.process.wait()
    with pytest.raises(Overloaded):
        await bodies.parse("chat", raw, None, offload, rec.precheck)
    assert (await bodies.parse("chat", raw, None, offload, rec.precheck)).model == "chat"


def _fed_until_refused(screen: BodyScreen, body: bytes) -> int:
    """Feed `body` in 16 KiB pieces until the screen refuses it; how much was fed."""
    fed = 0
    with pytest.raises(BadRequest, match="over 2048 items"):
        while fed < len(body):
            piece = body[fed : fed + 16384]
            fed += len(piece)
            screen.feed(piece, fed < len(body))
    return fed


def test_a_large_body_over_max_messages_is_refused_on_its_first_64_kib() -> None:
    """4 MiB of tiny messages arriving in 16 KiB pieces: the 400 comes once 64 KiB
    (over 2,048 of them) have arrived, not after `COUNT_BYTES` (256 KiB), so the
    router stops reading the body there."""
    body = tiny_messages(b"chat", 4 * 2**20)
    seen: list[str] = []
    fed = _fed_until_refused(BodyScreen(seen.append, LIMITS, len(body), messages=True), body)
    assert EARLY_BYTES <= fed < 2 * EARLY_BYTES < COUNT_BYTES
    # Declared small (or not declared): one look, on COUNT_BYTES, as before.
    fed = _fed_until_refused(BodyScreen(seen.append, LIMITS, None, messages=True), body)
    assert fed == COUNT_BYTES
