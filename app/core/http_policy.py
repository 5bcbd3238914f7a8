"""One HTTP policy for every call Camelid makes to the Hub (or a mirror).

Listings, model info, file listings, GGUF header Range reads and the catalog
refresh all go through a `HubCall`: one operation with

- connect and read timeouts (the read timeout is the longest silence between
  two pieces of a body), never longer than what is left of the deadline;
- a total deadline, checked before each request and between pieces, so a
  server that sends one byte a second ends like a silent one;
- a byte cap per response: bodies are read raw, piece by piece, and reading
  stops at the cap (a Content-Length above it is refused before reading);
- no decompression without a bound: requests send ``Accept-Encoding:
  identity``; a server that compresses anyway is decoded here with zlib's
  ``max_length``, so a deflate bomb costs at most the cap (a Range read
  refuses any compressed answer: its bytes would not be the file's);
- cancellation: a `threading.Event` (or any callable returning True) checked
  before each request and between pieces. A read that blocks on a silent
  server ends at the read timeout or the deadline, whichever comes first.

Why not huggingface_hub's `HfApi`: its shared client has ``timeout=None``,
``model_info`` reads the JSON answer whole, ``list_models`` paginates with
retries and back-off, and none of it can be cancelled. huggingface_hub 2.x
lets one swap that client (``set_client_factory``), but the client is global
to the process (the download engine shares it), and a timeout alone bounds
neither the bytes nor the total time. So Camelid sends the same API routes
HfApi builds through the client here and parses the answers with
huggingface_hub's own types (``ModelInfo``, ``hf_raise_for_status``), so the
answers mean what they mean to HfApi.

Why not `build_hf_headers` either: huggingface_hub 2.4's user agent runs
``detect_agent``, which fetches ``{constants.ENDPOINT}/api/agent-harnesses``
once a day, outside these bounds, at the endpoint read at import (not the
call-time ``HF_ENDPOINT``). `request_headers` builds the user agent and the
token itself, so no Hub call of Camelid's makes that extra request.

The defaults can be changed per process with ``CAMELID_HTTP_TIMEOUT`` (read
timeout, seconds), ``CAMELID_HTTP_CONNECT_TIMEOUT`` and
``CAMELID_HTTP_DEADLINE`` (seconds per operation); tests set them small.
This module sits beside `errors` because both `fit` (the header reader) and
`models` (the Hub client, the refresh) use it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
import unicodedata
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from app.core.errors import CamelidError, ModelFileError, RemoteError

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 30.0
#: One operation (a listing, a model's files, one header read) ends by then, whatever the server does.
DEADLINE_S = 120.0
#: The most one JSON answer may be (a model's files with hashes are ~20 KB; a 100-repo listing ~100 KB).
MAX_JSON_BYTES = 8 * 1024 * 1024
#: The most one GGUF header read may download (the largest real headers, 256k-token vocabularies, are ~10 MB).
MAX_HEADER_BYTES = 64 * 1024 * 1024
#: The most of an error answer that is read (huggingface_hub looks at its JSON message).
MAX_ERROR_BYTES = 64 * 1024

Cancel = threading.Event | Callable[[], bool] | None


class HttpTimeoutError(RemoteError):
    """A Hub call ran past its deadline, or the server went silent for longer than the read timeout."""

    code = "timeout"


class ResponseTooLargeError(RemoteError):
    """An answer was larger than the policy allows; reading it was stopped."""

    code = "too_large"


class MalformedAnswerError(RemoteError):
    """The Hub answered, but not with what its API promises (bad JSON, wrong types, nonsense values)."""

    code = "malformed"


class HubCallCancelled(CamelidError):
    """A Hub call was cancelled on request (the GUI moved on, or the window closed)."""

    code = "cancelled"


class HeaderTooLargeError(ModelFileError):
    """A remote GGUF header needs more bytes than a header read may download."""

    code = "header_too_large"


def _env_seconds(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if math.isfinite(value) and value > 0 else default


@dataclass(frozen=True)
class HttpPolicy:
    """The bounds of one Hub operation."""

    connect_timeout: float = CONNECT_TIMEOUT_S
    read_timeout: float = READ_TIMEOUT_S
    deadline: float = DEADLINE_S
    max_json_bytes: int = MAX_JSON_BYTES
    max_header_bytes: int = MAX_HEADER_BYTES

    @classmethod
    def current(cls) -> HttpPolicy:
        """The defaults, with the ``CAMELID_HTTP_*`` environment variables read now."""
        return cls(connect_timeout=_env_seconds("CAMELID_HTTP_CONNECT_TIMEOUT", CONNECT_TIMEOUT_S),
                   read_timeout=_env_seconds("CAMELID_HTTP_TIMEOUT", READ_TIMEOUT_S),
                   deadline=_env_seconds("CAMELID_HTTP_DEADLINE", DEADLINE_S))

    def with_(self, **changes: Any) -> HttpPolicy:
        return replace(self, **changes)

    def start(self, what: str, *, cancel: Cancel = None, deadline_at: float | None = None,
              on_request: Callable[[], None] | None = None, client: Any = None) -> HubCall:
        """Begin one operation; ``deadline_at`` (a `time.monotonic()` instant) may only shorten it.

        `client`: an `httpx2.Client` of the caller's to send through (it is not closed here).
        """
        return HubCall(self, what, cancel=cancel, deadline_at=deadline_at, on_request=on_request, client=client)


# -- the client ----------------------------------------------------------------------------------

_ssl_lock = threading.Lock()
_ssl_context: Any = None


def _ssl() -> Any:
    """One TLS context for every call (building one costs ~35 ms; a client on a shared one, 0.1 ms)."""
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            import httpx2

            _ssl_context = httpx2.create_ssl_context()
        return _ssl_context


def request_headers(token: str | None, *, purpose: str = "") -> dict[str, str]:
    """A user agent and the bearer token, if any, without huggingface_hub's agent lookup (see above)."""
    from app import __version__

    agent = f"camelid/{__version__}" + (f" ({purpose})" if purpose else "")
    headers = {"user-agent": agent, "accept-encoding": "identity"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    return headers


# -- one operation -------------------------------------------------------------------------------


class HubCall:
    """One operation under a policy: its deadline, its cancel check, and bounded reads."""

    def __init__(self, policy: HttpPolicy, what: str, *, cancel: Cancel = None,
                 deadline_at: float | None = None, on_request: Callable[[], None] | None = None,
                 client: Any = None) -> None:
        self.policy = policy
        self.what = what
        self.began = time.monotonic()
        own = self.began + policy.deadline
        self.deadline_at = min(own, deadline_at) if deadline_at is not None else own
        self._cancel = cancel
        self.on_request = on_request
        self.requests = 0
        #: Body bytes received (raw, as they came over the wire).
        self.bytes_received = 0
        self._client: Any = client
        self._owns_client = client is None

    # -- its own connections (one pool per operation: nothing stale or shared between threads) --

    def __enter__(self) -> HubCall:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None and self._owns_client:
            self._client.close()
            self._client = None

    def _count(self, _request: Any) -> None:
        self.requests += 1
        if self.on_request is not None:
            self.on_request()

    def client(self) -> Any:
        if self._client is None:
            import httpx2

            self._client = httpx2.Client(follow_redirects=True, verify=_ssl(),
                                         timeout=httpx2.Timeout(self.policy.read_timeout,
                                                                connect=self.policy.connect_timeout),
                                         event_hooks={"request": [self._count]})
        return self._client

    # -- checks --

    def cancelled(self) -> bool:
        c = self._cancel
        if c is None:
            return False
        return c.is_set() if isinstance(c, threading.Event) else bool(c())

    def remaining(self) -> float:
        return self.deadline_at - time.monotonic()

    def check(self) -> None:
        """Raise if the operation was cancelled or ran past its deadline."""
        if self.cancelled():
            raise HubCallCancelled(f"Reading {self.what} was cancelled.", None)
        if self.remaining() <= 0:
            raise self._too_slow()

    def _too_slow(self) -> HttpTimeoutError:
        limit = self.deadline_at - self.began
        return HttpTimeoutError(f"The Hub was too slow answering for {self.what}: Camelid gave up after "
                                f"{limit:.3g} s.", "Try again later; if it persists, check HF_ENDPOINT.")

    def _timeout(self) -> Any:
        import httpx2

        left = max(self.remaining(), 0.001)
        return httpx2.Timeout(min(self.policy.read_timeout, left), connect=min(self.policy.connect_timeout, left))

    # -- requests --

    @contextlib.contextmanager
    def stream(self, url: str, *, headers: dict[str, str] | None = None,
               params: Any = None) -> Iterator[Any]:
        """An open streaming GET (redirects followed); transport failures become typed errors."""
        import httpx2

        self.check()
        sent = {"accept-encoding": "identity", **{k.lower(): v for k, v in (headers or {}).items()}}
        try:
            with self.client().stream("GET", url, headers=sent, params=params, timeout=self._timeout(),
                                      follow_redirects=True) as response:
                yield response
        except httpx2.TimeoutException as exc:
            raise (self._too_slow() if self.remaining() <= 0.05 else HttpTimeoutError(
                f"The Hub went silent for {self.policy.read_timeout:.3g} s while answering for {self.what}.",
                "Try again later; if it persists, check HF_ENDPOINT.")) from exc
        except httpx2.TransportError as exc:
            raise unreachable(exc, url) from exc
        except httpx2.HTTPError as exc:  # e.g. too many redirects, an invalid URL from a redirect
            raise RemoteError(f"The Hub's answer for {self.what} could not be followed ({type(exc).__name__}).",
                              "Check HF_ENDPOINT, then try again.") from exc

    def iter_body(self, response: Any, *, limit: int, truncate: bool = False) -> Iterator[bytes]:
        """The body's pieces, decoded within `limit` bytes.

        With ``truncate``, reading stops quietly at `limit` (a Range answer that goes
        on past what was asked); otherwise more than `limit` is a `ResponseTooLargeError`.
        """
        import httpx2

        decoder = _Decoder(response.headers.get("content-encoding", ""), what=self.what)
        length = response.headers.get("content-length")
        if not truncate and decoder.identity and length and length.strip().isdigit() and int(length) > limit:
            raise self._too_large(limit)
        produced = 0
        raw_seen = 0
        try:
            for raw in response.iter_raw():
                self.check()
                raw_seen += len(raw)
                self.bytes_received += len(raw)
                for piece in decoder.feed(raw, room=limit - produced + 1):
                    if produced + len(piece) > limit:
                        if truncate:
                            yield piece[: limit - produced]
                            return
                        raise self._too_large(limit)
                    produced += len(piece)
                    yield piece
                if produced >= limit and truncate:
                    return
                if raw_seen > limit:  # compressed bytes that never decode to anything still count
                    raise self._too_large(limit)
        except httpx2.TimeoutException as exc:
            raise (self._too_slow() if self.remaining() <= 0.05 else HttpTimeoutError(
                f"The Hub went silent for {self.policy.read_timeout:.3g} s while answering for {self.what}.",
                "Try again later; if it persists, check HF_ENDPOINT.")) from exc
        except httpx2.TransportError as exc:
            raise unreachable(exc, str(response.request.url)) from exc
        except httpx2.HTTPError as exc:
            raise RemoteError(f"The Hub's answer for {self.what} broke off ({type(exc).__name__}).",
                              "Try again later; if it persists, check HF_ENDPOINT.") from exc
        self.check()

    def read(self, response: Any, *, limit: int, truncate: bool = False) -> bytes:
        body = bytearray()
        for piece in self.iter_body(response, limit=limit, truncate=truncate):
            body += piece
        return bytes(body)

    def _too_large(self, limit: int) -> ResponseTooLargeError:
        return ResponseTooLargeError(f"The Hub's answer for {self.what} was larger than {_size(limit)}, "
                                     "so Camelid stopped reading it.",
                                     "Try again later; if it persists, check HF_ENDPOINT.")

    def get(self, url: str, *, headers: dict[str, str] | None = None, params: Any = None,
            limit: int | None = None) -> Any:
        """GET `url` and read its whole body within the cap; an `httpx2.Response` that holds it.

        Error answers are read up to `MAX_ERROR_BYTES`, for huggingface_hub's
        `hf_raise_for_status`, which the caller applies.
        """
        import httpx2

        cap = self.policy.max_json_bytes if limit is None else limit
        with self.stream(url, headers=headers, params=params) as response:
            if response.status_code >= 400:
                body = self.read(response, limit=MAX_ERROR_BYTES, truncate=True)
            else:
                body = self.read(response, limit=cap)
            headers_out = [(k, v) for k, v in response.headers.multi_items()
                           if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
            return httpx2.Response(response.status_code, headers=headers_out, content=body,
                                   request=response.request)


def unreachable(exc: BaseException, url: str) -> RemoteError:
    """A connection that failed or broke: one sentence naming the server (not the whole URL)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}" if parts.netloc else url
    return RemoteError(f"Could not reach {safe_text(origin)}: {unreachable_reason(exc)}.",
                       "Check your internet connection (or HF_ENDPOINT), then try again.")


def unreachable_reason(exc: BaseException) -> str:
    """Why a connection failed, in words (not the library's class name, "ConnectError")."""
    text = str(exc).lower()
    name = type(exc).__name__.lower()
    if any(s in text for s in ("name or service not known", "nodename nor servname", "getaddrinfo",
                               "name resolution", "no address associated")):
        return "its name could not be looked up (no internet, or no DNS)"
    if "timeout" in name or "timed out" in text:
        return "it did not answer in time"
    if "refused" in text:
        return "nothing answered at that address (connection refused)"
    if "certificate" in text or "ssl" in name or "ssl" in text:
        return "its security certificate could not be checked"
    if "reset" in text or "broken pipe" in text or "protocol" in name or "remote" in name:
        return "the connection broke off"
    return "no connection could be made"


def _size(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n / 2**10:g} KiB"


class _Decoder:
    """Content-Encoding undone within a bound: identity passes through; gzip and deflate through zlib."""

    def __init__(self, encoding: str, *, what: str) -> None:
        enc = encoding.strip().lower()
        self.identity = enc in ("", "identity")
        self.raw_deflate = False
        self._z: Any = None
        if enc in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif enc == "deflate":
            self._z = zlib.decompressobj(zlib.MAX_WBITS)
        elif not self.identity:
            raise MalformedAnswerError(f"The Hub answered for {what} in an encoding Camelid did not ask for "
                                       f"({safe_text(enc, 40)}).", "Check HF_ENDPOINT, then try again.")
        self.what = what
        self._started = False

    def feed(self, data: bytes, *, room: int) -> Iterator[bytes]:
        if self._z is None:
            yield data
            return
        room = max(room, 1)
        try:
            out = self._z.decompress(data, room)
        except zlib.error:
            if self._started or self.raw_deflate or self._z.unused_data:
                raise self._bad() from None
            # "deflate" without its zlib wrapper, which some servers send.
            self.raw_deflate = True
            self._z = zlib.decompressobj(-zlib.MAX_WBITS)
            try:
                out = self._z.decompress(data, room)
            except zlib.error:
                raise self._bad() from None
        self._started = True
        yield out
        while self._z.unconsumed_tail:
            room -= len(out)
            if room <= 0:
                yield b"\0"  # one byte past the bound: the caller stops here
                return
            try:
                out = self._z.decompress(self._z.unconsumed_tail, room)
            except zlib.error:
                raise self._bad() from None
            yield out

    def _bad(self) -> MalformedAnswerError:
        return MalformedAnswerError(f"The Hub's compressed answer for {self.what} is damaged.", "Try again.")


# -- JSON and names ------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(body: bytes, what: str) -> Any:
    """Strict JSON (no NaN or Infinity, no absurd nesting or numbers) or a `MalformedAnswerError`."""
    fail = MalformedAnswerError(f"The Hub's answer for {what} is not valid JSON.",
                                "Try again later; if it persists, check HF_ENDPOINT.")
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise fail from exc


_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


def unsafe_char(c: str) -> bool:
    """Characters that must never reach a terminal or a file name: controls, escapes, bidi and line marks."""
    return unicodedata.category(c) in _UNSAFE_CATEGORIES


def safe_text(text: object, limit: int = 120) -> str:
    """`text` fit to print: control characters shown as escapes, and at most `limit` characters."""
    s = str(text)
    shown = "".join(c.encode("unicode_escape").decode("ascii") if unsafe_char(c) else c for c in s[: limit * 2])
    return shown if len(shown) <= limit and len(s) <= limit * 2 else shown[: limit - 1] + "…"
