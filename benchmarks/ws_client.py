"""A minimal Streamlit websocket client: what a browser tab sends and receives, without the browser.

Used by benchmarks/load_test.py (many sessions at once) and tests/app/test_session_binding.py (a second
websocket presenting another session's id). It speaks Streamlit's own protocol (protobuf BackMsg /
ForwardMsg over /_stcore/stream): `run(page, query)` asks for one script run and collects the text of
every element drawn until the run finishes. Widgets are not driven; pages are opened by name and query
(`?patient=...`, `?disease=...` where a page reads it).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg


@dataclass
class RunResult:
    """One script run as the client saw it."""

    seconds: float
    texts: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    finished: bool = False
    redirect: str = ""
    kinds: list[str] = field(default_factory=list)  # every ForwardMsg type received, in order (for debugging)

    @property
    def text(self) -> str:
        return "\n".join(self.texts)


def _element_texts(msg: ForwardMsg) -> tuple[list[str], list[str]]:
    """(texts, exception messages) of one delta message."""
    if not msg.HasField("delta") or not msg.delta.HasField("new_element"):
        return [], []
    element = msg.delta.new_element
    kind = element.WhichOneof("type")
    if kind is None:
        return [], []
    body = getattr(element, kind)
    if kind == "exception":
        return [], [f"{body.type}: {body.message}"]
    out = []
    for attr in ("body", "label", "value"):
        value = getattr(body, attr, None)
        if isinstance(value, str) and value:
            out.append(value)
    return out, []


class StreamlitSession:
    """One websocket session. `existing_session_id` asks the server to attach to that session (what a tab
    does on reconnect); `cookie` is the Cookie header sent with the handshake."""

    def __init__(self, base_url: str, *, cookie: str = "", existing_session_id: str = "") -> None:
        self.ws_url = base_url.replace("http://", "ws://").replace("https://", "wss://").rstrip("/") + "/_stcore/stream"
        self.cookie = cookie
        self.existing_session_id = existing_session_id
        self.session_id = ""
        self._ws = None

    async def __aenter__(self) -> "StreamlitSession":
        import websockets

        protocols = ["streamlit", "unused-xsrf"] + ([self.existing_session_id] if self.existing_session_id else [])
        headers = {"Cookie": self.cookie} if self.cookie else {}
        self._ws = await websockets.connect(self.ws_url, subprotocols=protocols, additional_headers=headers,
                                            max_size=2**26, open_timeout=30, ping_interval=None)
        return self

    async def __aexit__(self, *exc) -> None:
        if self._ws is not None:
            await self._ws.close()

    async def run(self, page: str = "", query: str = "", timeout_s: float = 120.0) -> RunResult:
        """Rerun the script on `page` (its url path, '' = the default page) with `query`; wait for the end."""
        msg = BackMsg()
        msg.rerun_script.query_string = query
        msg.rerun_script.page_name = page
        start = time.perf_counter()
        await self._ws.send(msg.SerializeToString())
        result = RunResult(0.0)
        started = False  # every script run begins with new_session: a script_finished before it ends an older run
        deadline = start + timeout_s
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                raw = await asyncio.wait_for(self._ws.recv(), timeout=remaining)
            except asyncio.TimeoutError:
                break
            fwd = ForwardMsg()
            fwd.ParseFromString(raw)
            kind = fwd.WhichOneof("type")
            result.kinds.append(kind or "")
            if kind == "new_session":
                self.session_id = fwd.new_session.initialize.session_id or self.session_id
                if started:  # a run started before ours ended first; start collecting again
                    result.texts, result.exceptions = [], []
                started = True
            elif kind == "delta":
                texts, errors = _element_texts(fwd)
                result.texts += texts
                result.exceptions += errors
            elif kind == "auth_redirect":
                result.redirect = fwd.auth_redirect.url
            elif kind == "script_finished" and started:
                result.finished = True
                break
        result.seconds = time.perf_counter() - start
        return result
