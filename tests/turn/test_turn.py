"""One turn end to end through `Turn.run`: what the client receives and what the turn
reports, with fake upstreams, a recording sink and a recorder of its events."""

from __future__ import annotations

import json

import anyio
import pytest

from router.errors import AllTargetsFailed
from router.turn import sse
from tests.turn.chunks import DONE, chunk, content, error, role, tool_call, usage
from tests.turn.fakes import FakeUpstream, ManualClock, RecordingSink, Reply, Rig

pytestmark = pytest.mark.anyio


async def test_a_stream_is_relayed_unchanged_and_recorded_as_the_client_saw_it() -> None:
    clock = ManualClock(100.0)

    def later(i: int) -> None:
        if i == 2:  # the upstream takes half a second after the first token
            clock.now = 100.5

    chunks = [role(), content("Hi"), content(" there"), usage(7, 3), DONE]
    rig = Rig(FakeUpstream("a", Reply(chunks, before_chunk=later)), FakeUpstream("b"), clock=clock)
    sink = RecordingSink()
    with anyio.fail_after(5):
        result = await rig.turn(arrived=99.9).run(rig.request(), sink)

    assert sink.status == 200 and sink.finished
    assert sink.headers[b"content-type"] == b"text/event-stream"
    assert sink.headers[b"x-firsttoken-target"] == b"a"
    assert sink.headers[b"x-firsttoken-attempts"] == b"1"
    assert sink.headers[b"x-firsttoken-reason"].startswith(b"ordered: as listed; winner pred")
    # Byte for byte what the upstream sent, but the usage chunk nobody asked for.
    assert sink.body == role() + content("Hi") + content(" there") + DONE
    cost = (7 * 1.0 + 3 * 2.0) / 1e6
    assert (result.outcome, result.prompt_tokens, result.completion_tokens) == ("ok", 7, 3)
    assert result.cost_usd == pytest.approx(cost)
    # TTFT from the request's arrival to the response start; duration to the end.
    [done] = rig.events.done
    assert (done.target, done.outcome) == ("a", "ok")
    assert (done.prompt_tokens, done.completion_tokens) == (7, 3)
    assert (done.ttft_s, done.duration_s, done.cost_usd) == pytest.approx((0.1, 0.6, cost))
    assert ("overhead", "first_token_relay") in rig.events.seen


async def test_the_block_that_ends_a_stream_goes_out_with_the_response_end() -> None:
    # One write with the end (the server's terminating chunk in the same segment),
    # not the block and then an empty end; a unary answer likewise.
    chunks = [role(), content("Hi"), content(" there"), DONE]
    rig = Rig(FakeUpstream("a", Reply(chunks)), FakeUpstream("b"))
    sink = RecordingSink()
    with anyio.fail_after(5):
        await rig.turn().run(rig.request(), sink)
    assert sink.last == DONE
    assert sink.body == b"".join(chunks)


async def test_the_usage_chunk_reaches_a_client_that_asked_for_it() -> None:
    chunks = [role(), content("Hi"), usage(7, 3), DONE]
    rig = Rig(FakeUpstream("a", Reply(chunks)), FakeUpstream("b"))
    sink = RecordingSink()
    with anyio.fail_after(5):
        await rig.turn().run(rig.request(wants_usage=True), sink)
    assert sink.body == b"".join(chunks)


async def test_a_tool_call_delta_commits_the_turn_and_reaches_the_client_at_once() -> None:
    # The upstream sends the rest only once the client's response has started: a
    # turn that waited for content before committing would never finish.
    committed = anyio.Event()
    chunks = [role(), tool_call(), chunk({}, finish="tool_calls"), DONE]
    rig = Rig(FakeUpstream("a", Reply(chunks, holds={2: committed})), FakeUpstream("b"))
    sink = RecordingSink(on_start=committed.set)
    with anyio.fail_after(2):
        result = await rig.turn().run(rig.request(), sink)
    assert sink.headers[b"x-firsttoken-target"] == b"a"
    assert sink.body == b"".join(chunks)
    assert result.outcome == "ok"


async def test_nothing_reaches_the_client_before_the_commit_point() -> None:
    a = FakeUpstream("a", Reply([role("from-a"), error("a is overloaded")]))
    b = FakeUpstream("b", Reply([role("from-b"), content("Hi", "from-b"), DONE]))
    rig = Rig(a, b)
    sink = RecordingSink()
    with anyio.fail_after(5):
        result = await rig.turn().run(rig.request(), sink)
    assert b"from-a" not in sink.body and b"overloaded" not in sink.body
    assert sink.body == role("from-b") + content("Hi", "from-b") + DONE
    assert sink.headers[b"x-firsttoken-attempts"] == b"2"
    assert b"; fell back" in sink.headers[b"x-firsttoken-reason"]
    assert result.outcome == "fell_back"
    assert rig.events.done[0].outcome == "fell_back"


async def test_a_hedge_that_wins_is_what_the_client_gets() -> None:
    a = FakeUpstream("a", Reply(hang=True))
    b = FakeUpstream("b", Reply([role("from-b"), content("Hi", "from-b"), DONE]))
    rig = Rig(a, b, route="hedged")
    sink = RecordingSink()
    with anyio.fail_after(5):
        result = await rig.turn().run(rig.request(), sink)
    assert sink.headers[b"x-firsttoken-target"] == b"b"
    assert b"; hedged" in sink.headers[b"x-firsttoken-reason"]
    assert result.outcome == "hedged_won"
    assert a.cancelled == 1


async def test_a_hedge_the_spend_cap_held_back_is_said_in_the_explanation() -> None:
    release = anyio.Event()
    a = FakeUpstream("a", Reply([role(), content("Hi"), DONE], gate=release))
    b = FakeUpstream("b", Reply([role("from-b"), content("Hi", "from-b"), DONE]))
    rig = Rig(a, b, route="hedged-capped")  # both priced alike: a hedge would double the cost
    sink = RecordingSink()

    async def answer_late() -> None:
        await anyio.sleep(0.1)  # five hedge delays
        release.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(answer_late)
            result = await rig.turn().run(rig.request(), sink)
    assert sink.headers[b"x-firsttoken-target"] == b"a"
    assert b"; hedge held back by max_cost_share" in sink.headers[b"x-firsttoken-reason"]
    assert (result.outcome, result.hedged, result.hedge_capped) == ("ok", False, True)
    assert b.requests == []


async def test_a_hedge_winners_first_token_is_written_before_the_loser_is_closed() -> None:
    # The primary sent its role chunk and went quiet: cancelling it closes an open
    # response. That close waits (up to a second) for the winner's first write; a turn
    # that wrote only after the loser was closed would see it close first.
    happened: list[str] = []
    written = anyio.Event()

    async def slow_close() -> None:
        with anyio.move_on_after(1):
            await written.wait()
        happened.append("loser closed")

    def on_write(data: bytes) -> None:
        happened.append(f"wrote {data!r}")
        written.set()

    a = FakeUpstream("a", Reply([role("from-a")], then="hang", on_close=slow_close))
    b = FakeUpstream("b", Reply([role("from-b"), content("Hi", "from-b"), DONE]))
    rig = Rig(a, b, route="hedged")
    sink = RecordingSink(on_write=on_write)
    with anyio.fail_after(5):
        result = await rig.turn().run(rig.request(), sink)
    assert result.outcome == "hedged_won"
    head = role("from-b") + content("Hi", "from-b")
    assert happened[0] == f"wrote {head!r}"
    assert "loser closed" in happened
    assert a.responses[0].closed  # the turn still ends with the loser's connection closed
    assert sink.body == head + DONE


async def test_the_ttft_sample_is_booked_after_the_first_token_is_written_at_its_arrival() -> None:
    # The target's TTFT sample (sketches, EWMA) is bookkeeping: it waits until the
    # first token is on its way to the client, and still counts from when it came.
    clock = ManualClock(100.0)

    def later(i: int) -> None:
        if i == 1:
            clock.now = 100.25  # the first token comes 250 ms after the send

    chunks = [role(), content("Hi"), DONE]
    rig = Rig(FakeUpstream("a", Reply(chunks, before_chunk=later)), FakeUpstream("b"), clock=clock)
    signals = rig.targets["a"].signals
    seen_at_write: list[int] = []

    def on_write(data: bytes) -> None:
        if not seen_at_write:
            seen_at_write.append(signals.ttft_sketch.count)
            clock.now += 1.0  # a slow write must not lengthen the sample

    with anyio.fail_after(5):
        await rig.turn(arrived=100.0).run(rig.request(), RecordingSink(on_write=on_write))
    assert seen_at_write == [0]
    assert signals.ttft_sketch.count == 1
    assert signals.ttft.value == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("reply", "said"),
    [
        (Reply([role(), content("Hi")], then="reset"), b"connection reset"),
        (Reply([role(), content("Hi")]), b"stream ended without [DONE]"),
    ],
)
async def test_a_failure_after_the_first_token_ends_with_an_error_event(
    reply: Reply, said: bytes
) -> None:
    rig = Rig(FakeUpstream("a", reply), FakeUpstream("b", Reply([role(), content("b"), DONE])))
    sink = RecordingSink()
    with anyio.fail_after(5):
        result = await rig.turn().run(rig.request(), sink)
    head, _, tail = sink.body.partition(content("Hi"))
    assert head == role()
    error_body = json.loads(sse.event_data(tail) or b"")["error"]
    assert error_body["code"] == "stream_interrupted" and said in error_body["message"].encode()
    assert sink.finished  # a clean end, never a silent truncation
    assert rig.upstreams["b"].requests == []  # too late to fall back
    assert result.outcome == "error"
    assert rig.events.done[0].outcome == "error"
    assert rig.events.kinds("attempt_failed")[0][1] == "a"


async def test_a_stream_running_past_total_s_after_its_first_token_ends_with_an_error() -> None:
    clock = ManualClock(100.0)

    def later(i: int) -> None:
        if i == 2:  # the default total_s is 600 s: the next bytes come after it
            clock.now = 800.0

    chunks = [role(), content("Hi"), content("late"), DONE]
    rig = Rig(FakeUpstream("a", Reply(chunks, before_chunk=later)), FakeUpstream("b"), clock=clock)
    sink = RecordingSink()
    with anyio.fail_after(5):
        result = await rig.turn().run(rig.request(), sink)
    head, _, tail = sink.body.partition(content("Hi"))
    assert head == role()
    error_body = json.loads(sse.event_data(tail) or b"")["error"]
    assert error_body["code"] == "stream_interrupted"
    assert "exceeded total_s=600s" in error_body["message"]
    assert b"late" not in sink.body and sink.finished
    assert result.outcome == "error"
    assert rig.events.kinds("attempt_failed")[0][1] == "a"


async def test_an_error_event_mid_stream_is_passed_on_and_ends_the_turn() -> None:
    chunks = [role(), content("Hi"), error("overloaded"), content("never"), DONE]
    rig = Rig(FakeUpstream("a", Reply(chunks)), FakeUpstream("b"))
    sink = RecordingSink()
    with anyio.fail_after(5):
        result = await rig.turn().run(rig.request(), sink)
    assert sink.body.startswith(role() + content("Hi") + error("overloaded"))
    assert result.outcome == "error"


async def test_when_no_target_answers_nothing_is_sent_and_the_turn_is_unanswered() -> None:
    rig = Rig(FakeUpstream("a", Reply(status=500)), FakeUpstream("b", Reply(status=502)))
    sink = RecordingSink()
    with anyio.fail_after(5), pytest.raises(AllTargetsFailed):
        await rig.turn().run(rig.request(), sink)
    assert sink.status is None
    assert rig.events.kinds("turn_unanswered", "turn_done") == [("turn_unanswered", False)]


async def test_a_client_leaving_mid_stream_closes_the_upstream() -> None:
    a = FakeUpstream("a", Reply([role(), content("Hi")], then="hang"))
    rig = Rig(a, FakeUpstream("b"))
    with anyio.fail_after(5), anyio.CancelScope() as gone:
        sink = RecordingSink(on_start=gone.cancel)
        turn = rig.turn()
        await turn.run(rig.request(), sink)
    assert sink.body == role() + content("Hi")
    assert a.responses[0].closed
    assert turn.result.outcome == "client_cancelled"
    assert [d.outcome for d in rig.events.done] == ["client_cancelled"]


async def test_a_client_leaving_a_hedged_turn_closes_both_upstreams() -> None:
    # The hedge wins and relays in its own task; the client leaves as it starts.
    a = FakeUpstream("a", Reply([role("from-a")], then="hang"))
    b = FakeUpstream("b", Reply([role("from-b"), content("Hi", "from-b")], then="hang"))
    rig = Rig(a, b, route="hedged")
    with anyio.fail_after(5), anyio.CancelScope() as gone:
        sink = RecordingSink(on_start=gone.cancel)
        turn = rig.turn()
        await turn.run(rig.request(), sink)
    assert sink.body == role("from-b") + content("Hi", "from-b")
    assert a.responses[0].closed and b.responses[0].closed
    assert turn.result.outcome == "client_cancelled"
    assert [d.outcome for d in rig.events.done] == ["client_cancelled"]


async def test_a_failed_write_on_a_hedged_turn_is_raised_as_itself() -> None:
    # The winner writes in a task of the turn's group; the gateway still sees the
    # client's OSError itself, not an exception group, and every upstream is closed.
    def broken(data: bytes) -> None:
        raise OSError("client went away")

    a = FakeUpstream("a", Reply([role("from-a")], then="hang"))
    b = FakeUpstream("b", Reply([role("from-b"), content("Hi", "from-b"), DONE]))
    rig = Rig(a, b, route="hedged")
    with anyio.fail_after(5), pytest.raises(OSError, match="client went away"):
        await rig.turn().run(rig.request(), RecordingSink(on_write=broken))
    assert a.responses[0].closed and b.responses[0].closed


async def test_a_client_leaving_before_the_first_token_closes_the_upstream() -> None:
    a = FakeUpstream("a", Reply(hang=True))
    rig = Rig(a, FakeUpstream("b"))
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def leave() -> None:
                await a.called.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(leave)
            await rig.turn().run(rig.request(), RecordingSink())
    assert a.cancelled == 1
    assert rig.events.kinds("turn_unanswered", "turn_done") == [("turn_unanswered", True)]


async def test_a_whole_answer_is_relayed_with_its_usage() -> None:
    answer = {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2},
    }
    body = json.dumps(answer).encode()
    rig = Rig(FakeUpstream("a", Reply(body=body)), FakeUpstream("b"))
    sink = RecordingSink()
    with anyio.fail_after(5):
        result = await rig.turn().run(rig.request(stream=False), sink)
    assert sink.headers[b"content-type"] == b"application/json"
    assert sink.body == body
    assert sink.last == body  # the whole answer with the response's end
    assert (result.prompt_tokens, result.completion_tokens) == (9, 2)
    assert rig.upstreams["a"].requests[0].body["stream"] is False
    [done] = rig.events.done
    assert done.streamed is False  # so the metrics book no time per token for it


# -- issue 14: after the commit point, per the SSE spec, and the two first-token figures ---


async def test_a_reasoning_stream_reports_its_first_token_and_its_first_answer() -> None:
    clock = ManualClock(100.0)

    def later(i: int) -> None:
        clock.now = 100.0 + 0.1 * i  # one chunk every 100 ms

    thinking = chunk({"reasoning_content": "hmm"})
    chunks = [role(), thinking, thinking, thinking, content("Paris"), DONE]
    rig = Rig(FakeUpstream("a", Reply(chunks, before_chunk=later)), FakeUpstream("b"), clock=clock)
    sink = RecordingSink()
    with anyio.fail_after(5):
        result = await rig.turn(arrived=100.0).run(rig.request(), sink)
    assert sink.body == b"".join(chunks)
    assert (
        b"first token (reasoning) 100ms, first answer pending"
        in sink.headers[b"x-firsttoken-reason"]
    )
    [done] = rig.events.done
    assert done.ttft_s == pytest.approx(0.1)
    assert done.first_answer_s == pytest.approx(0.4)
    assert result.first_kind == "reasoning"
    signals = rig.targets["a"].signals
    assert signals.ttft_sketch.count == 1 and signals.answer_sketch.count == 1
    assert signals.answer.value > signals.ttft.value


async def test_the_first_answer_after_reasoning_is_written_before_its_sample_is_booked() -> None:
    # As for the first token: the answer's sample (sketch, EWMA) waits until the first
    # answer token is on its way to the client, and counts from when it came.
    clock = ManualClock(100.0)

    def later(i: int) -> None:
        clock.now = 100.0 + 0.1 * i  # one chunk every 100 ms

    thinking = chunk({"reasoning_content": "hmm"})
    answer = content("Paris")
    chunks = [role(), thinking, thinking, answer, DONE]
    rig = Rig(FakeUpstream("a", Reply(chunks, before_chunk=later)), FakeUpstream("b"), clock=clock)
    signals = rig.targets["a"].signals
    seen_at_write: list[int] = []

    def on_write(data: bytes) -> None:
        if answer in data:
            seen_at_write.append(signals.answer_sketch.count)
            clock.now += 1.0  # a slow write must not lengthen the sample

    with anyio.fail_after(5):
        result = await rig.turn(arrived=100.0).run(rig.request(), RecordingSink(on_write=on_write))
    assert seen_at_write == [0]
    assert signals.answer_sketch.count == 1
    assert signals.answer.value == pytest.approx(0.3)
    assert result.first_answer_s == pytest.approx(0.3)


@pytest.mark.parametrize(
    "done", [b"data:[DONE]\n\n", b"data: [DONE]\r\n\r\n", b"data:[DONE]\r\r"], ids=repr
)
async def test_done_without_the_space_or_with_other_line_ends_ends_the_stream(done: bytes) -> None:
    # The upstream then hangs: a relay that missed [DONE] would wait for idle_s.
    rig = Rig(
        FakeUpstream("a", Reply([role(), content("Hi"), done], then="hang")), FakeUpstream("b")
    )
    sink = RecordingSink()
    with anyio.fail_after(2):
        result = await rig.turn().run(rig.request(), sink)
    assert result.outcome == "ok" and b"error" not in sink.body
    # and its connection goes back to the pool for the next turn
    assert rig.upstreams["a"].responses[0].finished


async def test_a_crlf_split_across_chunks_after_the_first_token_is_relayed_intact() -> None:
    stream = (role() + content("Hi") + content(" there") + DONE).replace(b"\n", b"\r\n")
    cut = stream.index(b"\r\n", len(role()) + 30) + 1  # between a CR and its LF
    rig = Rig(FakeUpstream("a", Reply([stream[:cut], stream[cut:]])), FakeUpstream("b"))
    sink = RecordingSink()
    with anyio.fail_after(2):
        result = await rig.turn().run(rig.request(), sink)
    assert result.outcome == "ok"
    assert sink.body == role() + content("Hi") + content(" there") + DONE


async def test_an_error_event_however_framed_after_the_first_token_ends_the_stream() -> None:
    frame = b'data:{"error":{"message":"engine died","type":"server_error"}}\r\n\r\n'
    rig = Rig(
        FakeUpstream("a", Reply([role(), content("Hi"), frame], then="hang")), FakeUpstream("b")
    )
    sink = RecordingSink()
    with anyio.fail_after(2):
        result = await rig.turn().run(rig.request(), sink)
    assert result.outcome == "error"
    assert b"engine died" in sink.body
    assert not rig.upstreams["a"].responses[0].finished  # a failed stream is not reused


async def test_an_event_past_the_bound_after_the_first_token_ends_with_an_error_event() -> None:
    endless = [b"data: " + b"x" * 4096] * 400  # never a blank line
    rig = Rig(FakeUpstream("a", Reply([role(), content("Hi"), *endless])), FakeUpstream("b"))
    sink = RecordingSink()
    with anyio.fail_after(5):
        result = await rig.turn().run(rig.request(), sink)
    assert result.outcome == "error"
    assert sink.body.startswith(role() + content("Hi"))
    last = sink.body.rsplit(b"\n\n", 2)[-2]
    assert b"grew past" in last and len(sink.body) < 100_000


async def test_a_hedged_turn_books_the_hedge_once_whoever_wins() -> None:
    # Through a whole turn (the winner commits in its own task), a primary that
    # answers after its hedge started is booked as a lost hedge, once.
    b = FakeUpstream("b", Reply([role()], then="hang"))
    a = FakeUpstream("a", Reply([role(), content("Hi"), DONE], gate=b.called))
    rig = Rig(a, b, route="hedged")
    with anyio.fail_after(5):
        result = await rig.turn().run(rig.request(), RecordingSink())
    assert result.outcome == "hedged_lost"
    assert [e for _, e in rig.events.kinds("hedge")] == ["started", "cancelled", "lost"]
    assert b.responses[0].closed
