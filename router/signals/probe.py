"""Active probes: a one-token request now and then, off any turn's path.

A target no turn goes to is never measured, so a policy cannot learn that it is
(or has become) the better one: a new local engine, a provider that recovered. A
probe is a streamed chat completion of `max_tokens` (1) tokens to the target, timed
to its first token through the same `Attempt` a turn uses, so its TTFT, a failure
(breaker) or a timeout (a censored sample) feed the target's signals like any other
answer. One is sent when the router starts, then every `interval_s`, skipped while
real turns have measured the target within the wait. The wait grows while probes
tell nothing new: each probe whose TTFT is within a factor of two of the last
probe's (the same one-token request, so like is compared with like) doubles it, up
to `max_interval_s` (8 x `interval_s` unless set); a probe that finds the target
changed, or fails, brings it back to `interval_s`. At a steady 30 s, an engine that
turns reached only now and then, minutes apart, was sent 51 probes in an hour beside
239 turns on one of issue 17's tuning fleets (`benchmarks/unseen.py`, seed 96): a
fifth more upstream requests than turns, each answering as the one before.
Probes are on by default
for local engines (`kind: vllm`: they cost nothing to ask) and off for the rest,
priced APIs (`probe:` on a target or a route; `probe_for`). A target that serves no
chat completions (an embedding model: `capabilities: [embeddings]`) is never probed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn

import anyio

from router.clock import Clock
from router.config import Config, Probe, TargetConfig
from router.errors import UpstreamError, UpstreamProtocolError, UpstreamTimeout
from router.signals.target import TargetSignals
from router.turn import sse
from router.upstream.base import Upstream, UpstreamRequest, UpstreamResponse

log = logging.getLogger(__name__)

PROMPT = "ping"
#: the shortest sleep of the prober (a due time met to within float rounding)
MIN_SLEEP_S = 1e-3
#: a probe within this factor of the last probe's TTFT tells nothing new: the wait grows
AGREE = 2.0
#: the longest SSE event a probe reads (a one-token answer is far below it)
MAX_EVENT_BYTES = 64 * 1024


def probe_for(config: Config, target: TargetConfig) -> Probe | None:
    """The target's own `probe:`, else the first of its routes' that sets one, else
    the default: on for local engines (`kind: vllm`), off for the rest. None for a
    target that serves no chat completions: the probe is one."""
    if "chat" not in target.serves:
        return None
    setting = target.probe
    if setting is None:
        setting = next(
            (r.probe for r in config.routes if target.name in r.targets and r.probe is not None),
            None,
        )
    if setting is None:
        setting = target.kind == "vllm"
    if isinstance(setting, bool):
        return Probe() if setting else None
    return setting


def probe_body(config: TargetConfig, probe: Probe) -> dict[str, object]:
    return {
        "model": config.model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": probe.max_tokens,
        "stream": True,
    }


async def _first_token(response: UpstreamResponse, name: str) -> None:
    """Read until the first content (or a finished empty answer); raise on anything else."""
    framer = sse.Framer(MAX_EVENT_BYTES)
    async for chunk in response.aiter_bytes():
        try:
            events = sse.split_events(framer.feed(chunk))
        except sse.EventTooLarge as too_large:  # one name per exception type: mypyc
            raise UpstreamProtocolError(f"{name}: probe: {too_large}", target=name) from too_large
        for event in events:
            try:
                frame, _, _ = sse.classify(event)
            except sse.MalformedFrame as malformed:
                raise UpstreamProtocolError(
                    f"{name}: probe: {malformed}", target=name
                ) from malformed
            if frame in (sse.Frame.TOKEN, sse.Frame.FINISH):
                return
            if frame in (sse.Frame.ERROR, sse.Frame.DONE):
                raise UpstreamProtocolError(f"{name}: probe answered no token", target=name)
    raise UpstreamProtocolError(f"{name}: probe stream closed before a token", target=name)


async def probe_once(
    upstream: Upstream, signals: TargetSignals, config: TargetConfig, probe: Probe
) -> float | None:
    """Send one probe; its TTFT in seconds, or None (failed, or the breaker said no)."""
    attempt = signals.begin(prompt_tokens=1, representative=False)
    response: UpstreamResponse | None = None
    try:
        if not attempt.admitted:
            return None
        request = UpstreamRequest("chat", probe_body(config, probe), True, {})
        with anyio.fail_after(config.timeouts.first_token_s):
            response = await upstream.send(request)
            attempt.headers(response.headers)
            await _first_token(response, config.name)
        attempt.first_token()
        attempt.finished()
        return attempt.ttft_s
    except TimeoutError:
        limit = config.timeouts.first_token_s
        attempt.failed(UpstreamTimeout(f"{config.name}: probe: no token in {limit:g}s"))
    except UpstreamError as err:
        attempt.failed(err)
    finally:
        attempt.release()
        if response is not None:
            with anyio.CancelScope(shield=True):
                await response.aclose()
    return None


async def run(
    upstream: Upstream,
    signals: TargetSignals,
    config: TargetConfig,
    probe: Probe,
    *,
    clock: Clock,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> NoReturn:
    """Probe at once, then whenever nothing measured the target for the wait: the
    interval, doubled after each probe that answered as the last one did (up to
    `Probe.longest_wait_s`), back to the interval after one that did not."""
    wait = probe.interval_s
    #: the last probe's TTFT (None: none yet, or it failed)
    reference: float | None = None
    while True:
        last = signals.measured_at
        now = clock()
        if last is not None and now - last < wait:
            # measured within the wait: sleep until it is due (a turn measuring it
            # meanwhile only moves that later, which the next look sees)
            await sleep(max(last + wait - now, MIN_SLEEP_S))
            continue
        ttft: float | None = None
        try:
            ttft = await probe_once(upstream, signals, config, probe)
        except Exception:
            # An upstream's surprise must not end the prober; it is a bug to see.
            log.warning("probe of %s failed unexpectedly", config.name, exc_info=True)
        if ttft is not None and reference is not None and _agrees(ttft, reference):
            wait = min(wait * 2.0, probe.longest_wait_s)
        else:
            wait = probe.interval_s  # the first answer, a changed one, or none
        reference = ttft
        await sleep(probe.interval_s)


def _agrees(ttft: float, reference: float) -> bool:
    """Whether a probe answered as the last one did: within a factor of `AGREE`."""
    return reference / AGREE <= ttft <= reference * AGREE
