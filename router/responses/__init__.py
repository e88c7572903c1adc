"""The Responses API's state: which target stored each response (and conversation),
so that follow-ups, GETs and DELETEs reach it (`owners`), and how a request that
builds on stored state is pinned to its owner (`pinning`)."""
