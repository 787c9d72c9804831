"""The dashboard as an ASGI app with its sessions bound to the browser: `streamlit run app/server.py`.

Same pages as `streamlit run app/main.py`, plus app/binding.py's middleware: every browser gets an HttpOnly
signed cookie, a sign-in is recorded against that cookie (rotated at sign-in), every run checks it, and
/_stcore/metrics answers only a signed-in browser. Use this entry point whenever sign-in is configured.
"""

from app.memory import limit_arenas

limit_arenas()  # before the server's threads allocate: see app/memory.py

import streamlit as st  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402

from app.binding import BrowserCookieMiddleware

app = st.App("main.py", middleware=[Middleware(BrowserCookieMiddleware)])
