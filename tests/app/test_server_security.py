"""What `streamlit run app/main.py` serves beyond the app: Streamlit's agent API (a JSON/MCP interface
that runs the pages for a client without a browser, /_stcore/agent/...) must stay off."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_project_config_pins_the_agent_api_off() -> None:
    config = tomllib.loads((REPO_ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["enableAgentApi"] is False


def test_the_toolbar_shows_no_deploy_button() -> None:
    """Issue 18: clinicians see the app, not Streamlit's Deploy button or developer options."""
    config = tomllib.loads((REPO_ROOT / ".streamlit" / "config.toml").read_text())
    assert config["client"]["toolbarMode"] == "viewer"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory):
    """The dashboard as deployed (the repository's .streamlit/config.toml, no override in the environment)."""
    home = tmp_path_factory.mktemp("home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    env.update(MEDFUSE_LENS_HOME=str(home), MEDFUSE_LENS_AUDIT_LOG=str(home / "audit.log"))
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless=true", f"--server.port={port}",
         "--server.address=127.0.0.1"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited early:\n{proc.stdout.read()}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("streamlit did not answer /_stcore/health within 120 s")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _request(url: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json",
                                                              "Accept": "application/json, text/event-stream"})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_agent_interact_refuses_to_run_a_patient_page(server_url: str) -> None:
    status, body = _request(f"{server_url}/_stcore/agent/interact",
                            {"page": "patient", "query_params": {"patient": ["P00001"]}})
    assert status == 403
    assert body["error"]["code"] == "not_available"
    assert "tree" not in body


def test_agent_mcp_server_refuses_to_initialize(server_url: str) -> None:
    status, body = _request(f"{server_url}/_stcore/agent/mcp", {
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}}})
    assert status == 400
    assert "not_available" in body["error"]["message"] and "result" not in body


def test_agent_api_description_says_it_is_off(server_url: str) -> None:
    status, body = _request(f"{server_url}/_stcore/agent/openapi.json")
    assert status == 200
    assert body["info"]["x-streamlit-agent-api"] == "disabled"
