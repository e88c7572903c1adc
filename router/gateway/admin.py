"""`GET /admin/targets`: every target's live signals, and each route's last decision.

What an SRE reads when asking "why did that turn go there": the numbers the
policies saw (TTFT estimates, queue, breaker, headroom) and the scores of the
last plan of every route, rounded for people. For a realtime target the TTFT
fields hold its time to first audio and `in_flight` its sessions open; its
`realtime` block adds `max_sessions`, the connect time (upgrade to
`session.created`) and the time to transcript transcription sessions are ranked on.
"""

from __future__ import annotations

from router.runtime import Router

#: the price fields that apply, by whether the target is a realtime one
_PRICES = {
    False: {"input_per_mtok", "output_per_mtok"},
    True: {
        "audio_input",
        "audio_output",
        "text_input",
        "text_output",
        "cached_input",
        "transcription",
    },
}


def admin_view(router: Router) -> dict[str, object]:
    """Every target's live signals, and each route's last decision."""
    runtime = router.runtime
    targets = []
    for view in router.views():
        cfg = runtime.config.target(view.name)
        live = runtime.realtime.targets.get(view.name)
        targets.append(
            {
                "name": view.name,
                "kind": view.kind,
                "model": cfg.model,
                "breaker": view.breaker,
                "available": view.available,
                "in_flight": view.in_flight,
                "ttft_ewma_ms": round(view.ttft_ewma_s * 1000, 2),
                "ttft_ms": {
                    f"p{round(q * 100)}": round(v * 1000, 2) for q, v in view.ttft_quantiles
                },
                "ttft_samples": view.ttft_samples,
                "unloaded_ttft_ms": round(view.unloaded_ttft_s * 1000, 2),
                "tpot_ms": None if view.tpot_s is None else round(view.tpot_s * 1000, 3),
                "completion_rate_per_s": view.completion_rate,
                "ratelimit_headroom": view.ratelimit_headroom,
                "within_local_limits": view.within_local_limits,
                "price": cfg.price.model_dump(include=_PRICES[live is not None]),
                "realtime": None
                if live is None
                else {
                    "sessions": live.sessions,
                    "max_sessions": live.max_sessions,
                    "connect_ms": None
                    if live.connect_time.value is None
                    else round(live.connect_time.value * 1000, 2),
                    # what a transcription session is ranked on (commit -> transcript)
                    "transcript_ewma_ms": round(live.transcript.ewma.value * 1000, 2)
                    if live.transcript.samples
                    else None,
                    "transcript_samples": live.transcript.samples,
                },
                "engine": None
                if view.engine is None
                else {
                    "capacity": view.engine.capacity,
                    "proven_running": view.engine.proven_running,
                    "queue_seen": view.engine.queue_seen,
                    "waiting": view.engine.waiting,
                    "running": view.engine.running,
                    "kv_cache_usage_perc": view.engine.kv_usage,
                    "age_s": round(view.engine.age_s, 3),
                    "stale": view.engine.stale,
                    "recent_ttft_ms": None
                    if view.engine.recent_ttft_s is None
                    else round(view.engine.recent_ttft_s * 1000, 2),
                    "decode_ms_per_token": None
                    if view.engine.decode_s is None
                    else round(view.engine.decode_s * 1000, 3),
                    # why stale stats are stale: scrapes failed since the last good one
                    "scrape_failures": view.engine.scrape_failures,
                    "last_scrape_failure": view.engine.last_scrape_failure,
                },
            }
        )
    routes = {}
    for name, route in runtime.routes.items():
        plan = router.last_plans.get(name)
        routes[name] = {
            "policy": route.config.policy.type,
            "targets": list(route.config.targets),
            "hedge_rate": round(route.budget.rate, 4),
            "last_decision": None
            if plan is None
            else {
                "reason": plan.reason,
                "candidates": [
                    {
                        "target": c.name,
                        "predicted_ttft_ms": round(c.predicted_ttft_s * 1000, 2),
                        "expected_cost_usd": c.expected_cost_usd,
                        "score": round(c.score, 4),
                    }
                    for c in plan.candidates
                ],
                "rejected": [{"target": t, "why": why} for t, why in plan.rejected],
            },
        }
    return {
        "targets": targets,
        "routes": routes,
        "realtime_sessions_open": router.active_sessions,
    }
