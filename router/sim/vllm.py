"""A vLLM-like server: the continuous-batching engine of `router.sim.engine` behind
the OpenAI API, with vLLM's Prometheus metrics on `GET /metrics`.

Metric names and labels follow vLLM (V1 engine): gauges
`vllm:num_requests_running`, `vllm:num_requests_waiting`, `vllm:kv_cache_usage_perc`
(a 0-1 fraction); counters `vllm:prompt_tokens_total`, `vllm:generation_tokens_total`,
`vllm:prefix_cache_queries_total`, `vllm:prefix_cache_hits_total` (both in tokens),
`vllm:request_success_total{finished_reason}`; histograms
`vllm:time_to_first_token_seconds`, `vllm:e2e_request_latency_seconds`,
`vllm:request_queue_time_seconds`, `vllm:inter_token_latency_seconds`. Every
series carries `model_name`. Each server has its own `CollectorRegistry`.

The number of tokens of an answer is `min(max_tokens, behaviour.tokens)`; the
behaviour's `ttft_s`/`itl_s` are not used (the engine decides timing), its fault
modes are. A request longer than `max_model_len` gets vLLM's 400.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from router.clock import Clock
from router.sim.backend import Generation, Rejection
from router.sim.behaviour import Behaviour
from router.sim.engine import Engine, EngineParams, FinishedReason, Sequence
from router.sim.openai_server import output_tokens
from router.sim.server import SimServer
from router.sim.wire import SimRequest, error_body

_LATENCY_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
_ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
_REASONS: tuple[FinishedReason, ...] = ("stop", "length", "abort")


class VllmMetrics:
    """vLLM's metrics for one engine, in a registry of their own."""

    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["model_name"]
        r = self.registry
        self._model = model_name
        self.running = Gauge(
            "vllm:num_requests_running", "Requests in the batch.", labels, registry=r
        )
        self.waiting = Gauge("vllm:num_requests_waiting", "Requests waiting.", labels, registry=r)
        self.kv_usage = Gauge(
            "vllm:kv_cache_usage_perc", "KV-cache usage, 1 means full.", labels, registry=r
        )
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Prefill tokens processed.", labels, registry=r
        ).labels(model_name)
        self.generation_tokens = Counter(
            "vllm:generation_tokens", "Tokens generated.", labels, registry=r
        ).labels(model_name)
        self.prefix_queries = Counter(
            "vllm:prefix_cache_queries", "Prefix-cache queries (tokens).", labels, registry=r
        ).labels(model_name)
        self.prefix_hits = Counter(
            "vllm:prefix_cache_hits", "Prefix-cache hits (tokens).", labels, registry=r
        ).labels(model_name)
        success = Counter(
            "vllm:request_success", "Finished requests.", [*labels, "finished_reason"], registry=r
        )
        self.success = {reason: success.labels(model_name, reason) for reason in _REASONS}
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Time to first token.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        ).labels(model_name)
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "End-to-end latency.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        ).labels(model_name)
        self.queue = Histogram(
            "vllm:request_queue_time_seconds",
            "Time in WAITING.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        ).labels(model_name)
        self.itl = Histogram(
            "vllm:inter_token_latency_seconds",
            "Inter-token latency.",
            labels,
            buckets=_ITL_BUCKETS,
            registry=r,
        ).labels(model_name)

    def watch(self, engine: Engine) -> None:
        """Read the gauges from the engine at scrape time."""
        self.running.labels(self._model).set_function(lambda: len(engine.running))
        self.waiting.labels(self._model).set_function(lambda: len(engine.waiting))
        self.kv_usage.labels(self._model).set_function(lambda: engine.kv_usage)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    # -- EngineObserver -----------------------------------------------------------

    def admitted(self, seq: Sequence, now: float) -> None:
        self.queue.observe(now - seq.arrived_at)

    def prefilled(self, prompt_tokens: int, cached_tokens: int) -> None:
        self.prompt_tokens.inc(prompt_tokens)
        self.prefix_queries.inc(prompt_tokens)
        self.prefix_hits.inc(cached_tokens)

    def token(self, seq: Sequence, now: float) -> None:
        self.generation_tokens.inc()
        if seq.last_token_at is None:
            self.ttft.observe(now - seq.arrived_at)
        else:
            self.itl.observe(now - seq.last_token_at)

    def finished(self, seq: Sequence, reason: FinishedReason, now: float) -> None:
        self.success[reason].inc()
        if reason != "abort":
            self.e2e.observe(now - seq.arrived_at)


class VllmBackend:
    def __init__(self, params: EngineParams, model: str, clock: Clock) -> None:
        self.metrics = VllmMetrics(model)
        self.engine = Engine(params, self.metrics, clock)
        self.metrics.watch(self.engine)

    def begin(
        self, request: SimRequest, behaviour: Behaviour, headers: Mapping[str, str]
    ) -> Generation | Rejection:
        n = output_tokens(request, behaviour)
        if not self.engine.fits(request.prompt_tokens, n):
            limit = self.engine.params.max_model_len
            message = (
                f"This model's maximum context length is {limit} tokens. However, you "
                f"requested {request.prompt_tokens + n} tokens "
                f"({request.prompt_tokens} in the messages, {n} in the completion)."
            )
            return Rejection(400, error_body(message, "BadRequestError"))
        truncated = request.max_tokens is not None and n == request.max_tokens < behaviour.tokens
        return self.engine.submit(
            request.prompt_tokens, n, request.prefix_keys, "length" if truncated else "stop"
        )

    async def start(self) -> None:
        await self.engine.start()

    async def stop(self) -> None:
        await self.engine.stop()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/metrics", self._metrics)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )


class VllmSim(SimServer):
    """A vLLM-like server. `sim.engine` shows the live queue, `sim.metrics` its metrics."""

    def __init__(
        self,
        params: EngineParams | None = None,
        behaviour: Behaviour | None = None,
        *,
        model: str = "sim-model",
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock = time.monotonic,
        max_records: int = 10_000,
    ) -> None:
        self.vllm = VllmBackend(params or EngineParams(), model, clock)
        super().__init__(
            self.vllm,
            behaviour=behaviour,
            model=model,
            host=host,
            port=port,
            clock=clock,
            max_records=max_records,
        )

    @property
    def engine(self) -> Engine:
        return self.vllm.engine

    @property
    def metrics(self) -> VllmMetrics:
        return self.vllm.metrics
