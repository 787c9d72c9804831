"""A signed-in session bound to a secret the browser holds: an HttpOnly cookie the Streamlit session id
does not reveal.

Why: Streamlit lets a websocket that presents an existing session id take that session over (the id also
travels in upload URLs, so it reaches proxy logs), and a local sign-in kept only in the session's state
went with it. Here the sign-in belongs to the browser's cookie instead:

- `BrowserCookieMiddleware` (ASGI, installed by app/server.py) gives every browser a random, signed
  `medfuse_lens_browser` cookie (HttpOnly: page scripts cannot read it; SameSite=Lax; Secure over HTTPS).
- A correct password creates a one-time ticket for the cookie the sign-in came from; the browser is sent to
  BIND_PATH, which checks that the same cookie presents the ticket, then issues a fresh cookie (rotation at
  sign-in), records the viewer against it and redirects back to the page it came from (`?patient=` kept).
- Every run of the script looks the viewer up from `st.context.cookies`, which Streamlit takes from the
  websocket currently attached to the session: a second websocket presenting the victim's session id but
  not the victim's cookie finds no viewer and sees the sign-in form. A reload keeps the cookie, so it keeps
  the sign-in. Sign-out forgets the cookie's entry.
- `/_stcore/metrics` answers only a signed-in browser.

Everything is in this process's memory (a restart signs everyone out), bounded in size and time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qs

COOKIE = "medfuse_lens_browser"
BIND_PATH = "/_medfuse/bind"
METRICS_PATH = "/_stcore/metrics"
SIGNED_IN_TTL_S = 12 * 3600.0  # a sign-in lasts a working day without activity
TICKET_TTL_S = 60.0
MAX_ENTRIES = 20_000

_gate_active = False  # set when the middleware is constructed: the server binds sessions


def gate_active() -> bool:
    """Whether this process serves through BrowserCookieMiddleware (app/server.py)."""
    return _gate_active


@dataclass
class BrowserSessions:
    """Cookie token -> signed-in viewer, and one-time sign-in tickets. Thread-safe, process-wide."""

    clock: Callable[[], float] = time.monotonic
    _secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    _signed_in: dict[str, tuple[Any, float]] = field(default_factory=dict, repr=False)
    _tickets: dict[str, tuple[Any, str, str, float]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # ---- cookie tokens

    def new_token(self) -> str:
        raw = secrets.token_urlsafe(32)
        return f"{raw}.{self._sign(raw)}"

    def valid(self, token: str | None) -> bool:
        if not token or token.count(".") != 1:
            return False
        raw, sig = token.split(".")
        return hmac.compare_digest(sig, self._sign(raw))

    def _sign(self, raw: str) -> str:
        return hmac.new(self._secret, raw.encode(), hashlib.sha256).hexdigest()[:32]

    @staticmethod
    def _key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    # ---- sign-in state

    def viewer_for(self, token: str | None) -> Any | None:
        """The viewer signed in with this cookie (refreshing its expiry), or None."""
        if not self.valid(token):
            return None
        with self._lock:
            key, now = self._key(token), self.clock()
            entry = self._signed_in.get(key)
            if entry is None or entry[1] < now:
                self._signed_in.pop(key, None)
                return None
            self._signed_in[key] = (entry[0], now + SIGNED_IN_TTL_S)
            return entry[0]

    def sign_out(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._signed_in.pop(self._key(token), None)

    def ticket(self, viewer: Any, token: str, next_url: str) -> str:
        """A one-time ticket that BIND_PATH exchanges, from the browser holding `token`, for a signed-in cookie."""
        ticket = secrets.token_urlsafe(24)
        with self._lock:
            self._prune()
            self._tickets[ticket] = (viewer, self._key(token), next_url, self.clock() + TICKET_TTL_S)
        return ticket

    def redeem(self, ticket: str, token: str | None) -> tuple[str, str] | None:
        """(new cookie token, where to go next) when `ticket` is unused, unexpired and presented by the browser it
        was made for; the viewer is then signed in under the new token (the old one is forgotten)."""
        with self._lock:
            entry = self._tickets.pop(ticket, None)
            if entry is None or not self.valid(token):
                return None
            viewer, token_key, next_url, expires = entry
            if expires < self.clock() or not hmac.compare_digest(token_key, self._key(token)):
                return None
            self._signed_in.pop(token_key, None)
            fresh = self.new_token()
            self._signed_in[self._key(fresh)] = (viewer, self.clock() + SIGNED_IN_TTL_S)
            return fresh, next_url

    def sign_in_directly(self, token: str, viewer: Any) -> None:
        """Record `viewer` for `token` (tests; the page goes through `ticket`/`redeem`)."""
        with self._lock:
            self._signed_in[self._key(token)] = (viewer, self.clock() + SIGNED_IN_TTL_S)

    def clear(self) -> None:
        with self._lock:
            self._signed_in.clear()
            self._tickets.clear()

    def _prune(self) -> None:
        now = self.clock()
        for store, expiry in ((self._tickets, 3), (self._signed_in, 1)):
            if len(store) >= MAX_ENTRIES:
                for key in [k for k, v in store.items() if v[expiry] < now]:
                    del store[key]
                while len(store) >= MAX_ENTRIES:
                    del store[next(iter(store))]


BROWSER_SESSIONS = BrowserSessions()


def safe_next(url: str) -> str:
    """A same-site path to return to (never another host: '//evil' and 'https://...' become '/')."""
    if not url.startswith("/") or url.startswith("//") or "\\" in url:
        return "/"
    return url


def _cookie_header(token: str, secure: bool) -> bytes:
    flags = "; Path=/; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")
    return f"{COOKIE}={token}{flags}".encode("latin-1")


def _cookies(scope: dict) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, val = part.strip().partition("=")
                if key:
                    out.setdefault(key, val)
    return out


def _is_https(scope: dict) -> bool:
    if scope.get("scheme") == "https":
        return True
    headers = dict(scope.get("headers", []))
    return headers.get(b"x-forwarded-proto", b"").decode("latin-1").lower() == "https"


class BrowserCookieMiddleware:
    """ASGI middleware: a signed browser cookie on every HTTP response that lacks a valid one; the sign-in
    binding route; `/_stcore/metrics` only for a signed-in browser."""

    def __init__(self, app, sessions: BrowserSessions | None = None) -> None:
        global _gate_active
        _gate_active = True
        self.app = app
        self.sessions = sessions or BROWSER_SESSIONS

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = _cookies(scope).get(COOKIE)
        path = scope.get("path", "")
        secure = _is_https(scope)
        if path.endswith(BIND_PATH):
            await self._bind(scope, token, secure, send)
            return
        if path.endswith(METRICS_PATH) and self.sessions.viewer_for(token) is None:
            await _respond(send, 403, b"sign in to read the server's metrics\n")
            return
        fresh = None if self.sessions.valid(token) else self.sessions.new_token()

        async def send_with_cookie(message) -> None:
            if fresh is not None and message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"set-cookie", _cookie_header(fresh, secure))]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    async def _bind(self, scope, token: str | None, secure: bool, send) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        redeemed = self.sessions.redeem((query.get("ticket") or [""])[0], token)
        if redeemed is None:
            await _respond(send, 303, b"", [(b"location", b"/")])
            return
        fresh, next_url = redeemed
        await _respond(send, 303, b"", [(b"location", safe_next(next_url).encode("latin-1")),
                                        (b"set-cookie", _cookie_header(fresh, secure)),
                                        (b"cache-control", b"no-store")])


async def _respond(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
