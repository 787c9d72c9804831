"""Sessions bound to the browser (app/binding.py, served by `streamlit run app/server.py`): a real Chromium signs
in; a second websocket that presents the victim's Streamlit session id without the victim's HttpOnly cookie
is not attached as the victim; a reload keeps the sign-in; a ?patient= deep link survives it; the cookie is
rotated at sign-in; /_stcore/metrics needs a signed-in browser."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.app.test_browser import CHROMIUM, REPO_ROOT, _browser, _free_port

pytestmark = pytest.mark.browser
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def bound_server(tmp_path_factory: pytest.TempPathFactory):
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    from medfuse_core.sources.bundle import write_bundle
    from medfuse_core.users import add_user
    from tests.app.test_patient_page import write_hostile_bundle

    home = tmp_path_factory.mktemp("home")
    source = tmp_path_factory.mktemp("source")
    for pid in ("P00012", "P00013"):
        write_hostile_bundle(source, pid)
    add_user(home / "users.json", "alice", "clinician", PASSWORD)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    env.update(MEDFUSE_LENS_HOME=str(home), MEDFUSE_LENS_AUDIT_LOG=str(home / "audit.log"),
               MEDFUSE_LENS_USERS=str(home / "users.json"), MEDFUSE_LENS_SOURCE=str(source),
               MEDFUSE_LENS_CHECKPOINT="")
    env.pop("MEDFUSE_LENS_DEV", None)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app/server.py", "--server.headless=true",
                             f"--server.port={port}", "--server.address=127.0.0.1"],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(proc.stdout.read())
            time.sleep(0.5)
    yield url, home / "audit.log"
    proc.terminate()
    proc.wait(timeout=20)


def _entries(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _attach(url: str, session_id: str, cookie: str = ""):
    from benchmarks.ws_client import StreamlitSession

    async def go():
        async with StreamlitSession(url, cookie=cookie, existing_session_id=session_id) as s:
            return s.session_id, await s.run("patient", "patient=P00012", timeout_s=120)

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:  # its own thread: Playwright's sync API runs an event loop in this one
        return pool.submit(asyncio.run, go()).result()


def test_hijack_reload_deep_link_rotation_and_metrics(bound_server) -> None:
    from playwright.sync_api import sync_playwright
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    url, log = bound_server
    session_ids: list[str] = []

    def on_ws(ws) -> None:
        def frame(payload) -> None:
            if isinstance(payload, (bytes, bytearray)):
                msg = ForwardMsg()
                try:
                    msg.ParseFromString(bytes(payload))
                except Exception:
                    return
                if msg.WhichOneof("type") == "new_session" and msg.new_session.initialize.session_id:
                    session_ids.append(msg.new_session.initialize.session_id)
        ws.on("framereceived", frame)

    with sync_playwright() as pw:
        browser = _browser(pw)
        context = browser.new_context()
        page = context.new_page()
        page.on("websocket", on_ws)
        page.goto(url + "/patient?patient=P00012")
        page.get_by_label("User name").fill("alice", timeout=120_000)
        before = {c["name"]: c for c in context.cookies()}["medfuse_lens_browser"]
        assert before["httpOnly"]
        page.get_by_role("textbox", name="Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("heading", name="Patient P00012").wait_for(timeout=120_000)
        assert "patient=P00012" in page.url  # the deep link survived the sign-in
        after = {c["name"]: c for c in context.cookies()}["medfuse_lens_browser"]
        assert after["httpOnly"] and after["value"] != before["value"]  # rotated at sign-in

        page.reload()  # a reload does not sign out
        page.get_by_role("heading", name="Patient P00012").wait_for(timeout=120_000)
        assert page.get_by_role("textbox", name="Password").count() == 0
        victim = session_ids[-1]
        views = [e for e in _entries(log) if e["action"] == "view_patient"]

        # the attack: a websocket presenting the victim's session id, with no cookie, then with its own cookie
        _, run = _attach(url, victim)
        assert run.finished and "Sign in to see patient data." in run.text, (run.kinds, run.text)
        assert "Patient P00012" not in run.text and "Signed in as" not in run.text
        own_cookie = urllib.request.urlopen(url + "/").headers["set-cookie"].split(";")[0]
        _, run = _attach(url, victim, own_cookie)
        assert "Sign in to see patient data." in run.text and "Patient P00012" not in run.text
        assert [e for e in _entries(log) if e["action"] == "view_patient"] == views  # nothing audited as alice

        # metrics: refused without the signed-in cookie, served with it
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url + "/_stcore/metrics")
        assert refused.value.code == 403
        request = urllib.request.Request(url + "/_stcore/metrics",
                                         headers={"Cookie": f"medfuse_lens_browser={after['value']}"})
        assert urllib.request.urlopen(request).status == 200
        browser.close()
