"""One text turn: plan -> attempt / hedge / fall back -> commit -> relay -> record.

    types.py    the turn's vocabulary: TurnRequest, TurnResult, TargetRuntime, Primed
    sink.py     where a turn writes (the `Sink` protocol)
    race.py     before the commit point: attempts racing to the first token
    hedge.py    when to hedge, and the route's budget of extra requests
    relay.py    `Turn`: race, commit, relay the bytes, account
    sse.py      SSE framing: JSON before the commit point, a bytes search after

The turn never sees ASGI: it writes to a `Sink`.
"""
