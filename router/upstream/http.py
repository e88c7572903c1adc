"""One target's HTTP connection pool, on aiohttp's client. The one place where
aiohttp's exceptions become `router.errors`.

Protocol edge cases are aiohttp's job (its C parser, llhttp): interim 1xx answers
before the final one, trailers, chunk extensions, Content-Length and close-delimited
bodies, a server that compresses anyway (decompressed here, with aiohttp's bounds on
each inflated chunk). What this module adds is what a relay needs around it:

- One `ClientSession` and `TCPConnector` per target: keep-alive, a connection cap
  that means what it says (`max_connections`; aiohttp's own default is 100), Happy
  Eyeballs (RFC 8305, 250 ms) for hosts with IPv6 and IPv4 addresses, TLS verified
  against the system's CAs or the target's `ca_file`.
- Proxies from the environment (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`), resolved
  once per target with aiohttp's own rules rather than on every request.
- Timeouts: `connect_s` bounds getting a connection (a wait for a free one at the cap
  included); the turn bounds the rest (see `openai.OpenAIResponse` for `idle_s`).
- A POST whose reused keep-alive connection turns out to have been closed by the
  server before any answer byte (the server's idle timeout raced our reuse) is sent
  once more on a new connection: nothing reached the target's application.
- Connections made and reused are counted (`on_connection`), so a pool that keeps
  reconnecting shows in the metrics.
- aiohttp 3.14's reader asks its connection to resume reading after every read, paused
  or not, which re-enters the parser with no bytes and resumes a transport that never
  stopped: one more protocol round per streamed chunk, all of it a no-op unless flow
  control had paused the connection (3.13 asked only then). Our connections skip the
  call when nothing is paused (`_ResumeWhenPaused`); measured in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import ssl
import weakref
from collections.abc import Callable, Mapping
from typing import Any, cast

import aiohttp
from aiohttp.base_protocol import BaseProtocol
from aiohttp.client_proto import ResponseHandler
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from router.errors import UpstreamConnectError, UpstreamError, UpstreamTimeout

log = logging.getLogger("firsttoken.upstream")

#: Happy Eyeballs' delay before the next address family is tried (RFC 8305)
HAPPY_EYEBALLS_S = 0.25

#: whether the connection the current request got came from the pool
_reused: contextvars.ContextVar[bool] = contextvars.ContextVar("firsttoken_reused", default=False)


class _ResumeWhenPaused(ResponseHandler):
    """aiohttp's client protocol, resumed only when it was paused.

    aiohttp 3.14's `StreamReader` calls `resume_reading()` after every read that leaves
    its buffer under the low-water mark. Unless flow control paused the connection
    (`pause_reading`, which sets `_reading_paused`; a buffer hold sets
    `_buffer_paused`), that call feeds the parser zero bytes (it holds nothing back:
    it stops mid-body only when `pause_reading` asked it to) and resumes a transport
    that is reading already. So it is skipped then; a paused connection resumes as
    aiohttp does it. Used only where aiohttp has that reader (`RESUMES_EVERY_READ`)."""

    def resume_reading(self, resume_parser: bool = True) -> None:
        if self._reading_paused or self._buffer_paused:
            super().resume_reading(resume_parser)


#: aiohttp's reader resumes the connection after every read (3.14's protocol, whose
#: `resume_reading` takes `resume_parser`, and its two pause flags)
RESUMES_EVERY_READ = "resume_parser" in inspect.signature(
    ResponseHandler.resume_reading
).parameters and {"_reading_paused", "_buffer_paused"} <= set(
    getattr(BaseProtocol, "__slots__", ())
)


class _CountingConnector(aiohttp.TCPConnector):
    """A `TCPConnector` that tells new connections from reused ones (and makes them
    `_ResumeWhenPaused`)."""

    def __init__(self, on_connection: Callable[[bool], None] | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if RESUMES_EVERY_READ:
            # aiohttp's own protocol factory, with the subclass (the TLS path too)
            factory = functools.partial(_ResumeWhenPaused, loop=self._loop)
            self._factory = cast("functools.partial[ResponseHandler]", factory)
        self._seen: weakref.WeakSet[Any] = weakref.WeakSet()
        self._on_connection = on_connection

    async def connect(self, req: Any, *args: Any, **kwargs: Any) -> Any:
        conn = await super().connect(req, *args, **kwargs)
        protocol = conn.protocol
        reused = protocol in self._seen
        if not reused:
            self._seen.add(protocol)
        _reused.set(reused)
        if self._on_connection is not None:
            self._on_connection(reused)
        return conn


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """Verification on; the system's CAs (SSL_CERT_FILE / SSL_CERT_DIR apply), or `ca_file`."""
    return ssl.create_default_context(cafile=ca_file)


def env_proxy(url: URL) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """The proxy the environment names for `url` (NO_PROXY honoured), as aiohttp reads it."""
    try:
        return get_env_proxy_for_url(url)
    except LookupError:
        return None, None


def _drop_frames(exc: BaseException) -> None:
    """Forget the tracebacks of `exc` and the errors behind it. aiohttp's connector
    and aiohappyeyeballs raise errors they keep in locals of their own frames
    (`last_exc`, the list of attempts' exceptions), and those frames hold the request
    and its body: a cycle the cyclic collector frees only thousands of allocations
    later. The errors stay, as `__cause__`, without their frames."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        err.__traceback__ = None
        todo += [err.__cause__, err.__context__]


def translate(exc: BaseException, target: str, during: str) -> UpstreamError:
    """aiohttp's (and the socket's) exceptions, in our tree. Names the target, never a key."""
    kind = type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamTimeout(
            f"{target}: connect timeout ({kind})", target=target, phase="connect"
        )
    if isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        return UpstreamTimeout(f"{target}: idle timeout ({kind})", target=target, phase="idle")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return UpstreamConnectError(
            f"{target}: TLS certificate verification failed ({kind})", target=target
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamConnectError(f"{target}: cannot connect ({kind})", target=target)
    return UpstreamConnectError(
        f"{target}: connection failed during {during} ({kind})", target=target
    )


#: what `HttpPool.post` and the bodies it returns may raise, for `translate`
ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


class HttpPool:
    """A keep-alive pool to one target. The session is made on first use (it needs the
    running loop) and closed by `aclose`."""

    def __init__(
        self,
        target: str,
        base_url: str,
        *,
        max_connections: int,
        keepalive_s: float,
        ca_file: str | None = None,
        on_connection: Callable[[bool], None] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.target = target
        #: sent with every request (a request's own headers of the same name win)
        self._headers = dict(headers or {})
        self._max_connections = max_connections
        self._keepalive_s = keepalive_s
        self._on_connection = on_connection
        url = URL(base_url)
        self._proxy, self._proxy_auth = env_proxy(url)
        # made here, not on the first turn's path: loading the CA store takes ~20 ms
        self._ssl: ssl.SSLContext | bool = ssl_context(ca_file) if url.scheme == "https" else True
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the pool runs on (a turn's timers go on it): asked for once, since
        `asyncio.get_running_loop()` is a `getpid()` system call each time."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    @property
    def proxy(self) -> URL | None:
        return self._proxy

    def _get_session(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None:
            connector = _CountingConnector(
                self._on_connection,
                limit=self._max_connections,
                limit_per_host=0,
                keepalive_timeout=self._keepalive_s,
                happy_eyeballs_delay=HAPPY_EYEBALLS_S,
                ssl=self._ssl,
            )
            session = self._session = aiohttp.ClientSession(
                connector=connector,
                # the proxy is resolved once, in __init__, with aiohttp's own rules
                trust_env=False,
                # a server that compresses anyway: the relay needs the plain bytes
                auto_decompress=True,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
                # targets set no cookies a relay should keep (and a jar costs per turn)
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None),
                # the target's fixed headers, merged by aiohttp's C multidict: a request
                # brings only its own (a merged dict and a loop over it a turn less)
                headers=self._headers,
            )
        return session

    async def post(
        self,
        url: URL,
        headers: Mapping[str, str],
        body: bytes | None,
        limits: aiohttp.ClientTimeout,
        method: str = "POST",
    ) -> aiohttp.ClientResponse:
        """Send the request (a POST unless `method` says otherwise) with the pool's
        headers and `headers` (these win); return once the final status and headers
        are in. A pool a reload closed (a turn that outlived `server.drain_s` trying
        its next target) is a connect error of that target, never a new session
        nobody would close."""
        if self.closed:
            raise UpstreamConnectError(f"{self.target}: closed by a reload", target=self.target)
        session = self._get_session()
        _reused.set(False)
        for attempt in (1, 2):
            try:
                return await session.request(
                    method,
                    url,
                    data=body,
                    headers=headers,
                    timeout=limits,
                    allow_redirects=False,
                    proxy=self._proxy,
                    proxy_auth=self._proxy_auth,
                )
            except aiohttp.ClientConnectorError as exc:
                _drop_frames(exc)
                raise translate(exc, self.target, "connect") from exc
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                if attempt == 1 and _reused.get():
                    # A keep-alive connection the server had closed: once more, anew.
                    log.debug("%s: reused connection was closed; retrying once", self.target)
                    continue
                raise translate(exc, self.target, "connect") from exc
            except ERRORS as exc:
                raise translate(exc, self.target, "connect") from exc
            except RuntimeError as exc:  # aiohttp: "Session is closed", closed while we waited
                if not session.closed:
                    raise
                raise UpstreamConnectError(
                    f"{self.target}: closed by a reload", target=self.target
                ) from exc
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        self.closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None
