"""Realtime sessions: the relay, the conversation copy and migration.

The pure pieces (no I/O): `wire` reads an event's type without decoding it,
`conversation` keeps a bounded text copy of a conversation and replays it,
`session_config` tracks what the client configured, `usage` prices a
`response.done`, `clocks` measures time to first audio and text.
"""
