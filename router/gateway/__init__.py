"""The edge: raw ASGI endpoints, the uvicorn runner and drain, request parsing,
client keys, the OpenAPI description and the admin view. Knows HTTP, not routing:
a parsed request goes to `router.runtime.Router`, whose turn writes back through
an `AsgiSink`."""
