"""One text turn: plan -> attempt / hedge / fall back -> commit -> relay -> record.

    types.py    the turn's vocabulary: TurnRequest, TurnResult, TargetRuntime, Primed
    sink.py     where a turn writes (the `Sink` protocol) and the clock in front of it
    events.py   what a turn reports (`TurnEvents`; `router.metrics.Metrics` satisfies it)
    race.py     before the commit point: attempts racing to the first token
    hedge.py    when to hedge, and the route's budget of extra requests
    relay.py    `Turn`: race, commit, relay the bytes, account, record
    sse.py      SSE framing: JSON before the commit point, a bytes search after

The turn never sees ASGI (it writes to a `Sink`) and never imports Prometheus (it
reports to `TurnEvents`).
"""
