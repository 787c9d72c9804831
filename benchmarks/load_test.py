"""Load test: N browser sessions at once against one `streamlit run app/main.py` process.

The dashboard serves every session from one Python process (one model, one set of caches; each
session's script runs in its own thread), so this checks that concurrent sessions get correct pages
(no exception, no failed explanation, no HTTP or console error) and how long a page takes when
N people use it at the same time. It is the real stack: the Streamlit server started as a subprocess
(dev mode on loopback, demo cohort, the checkpoint below), Debian's Chromium driven by Playwright
(one browser, one context per session, asyncio).

Before the timed part, one session opens the worklist alone (warm-up: the demo cohort is generated,
the model loaded and the cohort scored; reported as `cold worklist`). Then every session, all
started together:
1. opens the worklist (`/`);
2. opens a patient review (`/patient?patient=P000NN`, a different patient per session, so each one
   runs its own explanation: Captum on the shared model, from N threads at once);
3. switches the Disease selectbox to another disease (a fragment rerun and a new explanation).
A step's time runs from the navigation or click until the page's own content is there (the worklist's
table; the review's heading, predictions and probability sentence of the selected disease) and
Streamlit reports the script finished (`[data-testid='stApp'][data-test-script-state='notRunning']`).

Errors, counted per session: an exception box (`stException`) or the review's "evidence could not be
computed" warning on the page, a step timing out, an HTTP response >= 400 or a failed request, a
JavaScript error or a console error, and tracebacks in the server's log.

    python benchmarks/load_test.py [--sessions 20] [--out-dir benchmarks/results] [--checkpoint DIR]

Writes load_test.json and load_test.md to --out-dir.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from medfuse_core.provenance import scrub_paths
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
EVIDENCE_FAILED = "evidence could not be computed"
STEPS = ("worklist", "patient review", "disease switch")
# Streamlit's frontend on /patient first looks for the server under /patient/ (a proxy's path prefix):
# these two 404s per page load are that probe, not a failure; counted apart.
BASE_PATH_PROBE = re.compile(r"^https?://[^/]+/[^_][^?#]*/_stcore/(health|host-config)$")
# The frontend's connection handshake (health + host-config pings, under each candidate base path):
# a ping the server is slow to answer is aborted after 15 s and sent again; only when the handshake
# keeps failing (6 rounds) does the frontend give up, with a console error ("DoInitPings timed out"),
# which is counted as an error, as is a page that does not load. A failed ping on its own is the
# handshake retrying: counted and reported apart, with its wait as seen by this driver.
PING = re.compile(r"/_stcore/(health|host-config)$")


# ------------------------------------------------------------------------------------- the server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, checkpoint: str, log: Path) -> tuple[subprocess.Popen, str]:
    """`streamlit run app/main.py` on a free loopback port, dev mode, its own MEDFUSE_LENS_HOME and audit log."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMLIT_", "MEDFUSE_LENS_"))}
    env.update(MEDFUSE_LENS_HOME=str(home), MEDFUSE_LENS_AUDIT_LOG=str(home / "audit.log"),
               MEDFUSE_LENS_CHECKPOINT=checkpoint, HF_HUB_OFFLINE="1")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited early:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=5) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.terminate()
            raise RuntimeError("streamlit did not answer /_stcore/health within 180 s")
        time.sleep(0.5)


# ------------------------------------------------------------------------------------- a session


class Session:
    """One browser context: what it saw (errors) and how long each step took."""

    def __init__(self, name: str, timeout_s: float):
        self.name, self.timeout_ms = name, timeout_s * 1000
        self.times: dict[str, float] = {}
        self.errors: list[str] = []
        self.probes = 0  # Streamlit's base-path probes (BASE_PATH_PROBE), not errors
        self.ping_retries: list[float] = []  # seconds each failed connection ping had waited
        self._sent: dict[int, float] = {}
        self.details: dict[str, str] = {}

    def watch(self, page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append(f"javascript error: {e}"))
        page.on("response", self._response)
        page.on("request", lambda r: self._sent.__setitem__(id(r), time.perf_counter()))
        page.on("requestfailed", self._failed)

    def _failed(self, request) -> None:
        waited = time.perf_counter() - self._sent.get(id(request), time.perf_counter())
        if PING.search(request.url) and request.failure == "net::ERR_ABORTED":
            self.ping_retries.append(waited)
        else:
            self.errors.append(f"request failed ({request.failure}) after {waited:.1f} s: {request.url}")

    def _console(self, message) -> None:
        if message.type not in ("error", "assert"):
            return
        if message.text.startswith("Failed to load resource: the server responded with a status of 404") \
                and BASE_PATH_PROBE.match(message.location.get("url", "")):
            return  # the probe's 404, counted in _response
        self.errors.append(f"console {message.type}: {message.text} ({message.location.get('url', '')})")

    def _response(self, response) -> None:
        if response.status == 404 and BASE_PATH_PROBE.match(response.url):
            self.probes += 1
        elif response.status >= 400:
            self.errors.append(f"HTTP {response.status} {response.url}")

    async def check(self, page, step: str) -> None:
        if await page.locator("[data-testid='stException']").count():
            self.errors.append(f"{step}: exception on the page: {(await page.locator('[data-testid=stException]').first.inner_text())[:300]}")
        if await page.get_by_text(EVIDENCE_FAILED, exact=False).count():
            self.errors.append(f"{step}: {(await page.get_by_text(EVIDENCE_FAILED, exact=False).first.inner_text())[:300]}")

    async def step(self, page, step: str, action, ready) -> bool:
        """Run `action` (navigation or click), wait for `ready` and the script's end; time it."""
        start = time.perf_counter()
        try:
            await action()
            await ready()
            await page.wait_for_selector(IDLE, timeout=self.timeout_ms)
        except Exception as exc:  # a timeout or a closed page: an error of this session, the others go on
            self.errors.append(f"{step}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
            return False
        self.times[step] = time.perf_counter() - start
        await self.check(page, step)
        return True


async def worklist(page, url: str, s: Session) -> bool:
    async def go():
        await page.goto(url + "/", timeout=s.timeout_ms)

    async def ready():
        await page.wait_for_selector("h1:has-text('Patients')", timeout=s.timeout_ms)
        await page.locator("[data-testid='stDataFrame']").first.wait_for(timeout=s.timeout_ms)

    return await s.step(page, "worklist", go, ready)


async def review(page, url: str, patient: str, s: Session) -> bool:
    async def go():
        await page.goto(f"{url}/patient?patient={patient}", timeout=s.timeout_ms)

    async def ready():
        await page.wait_for_selector(f"h1:has-text('Patient {patient}')", timeout=s.timeout_ms)
        await page.get_by_role("heading", name="Predictions").wait_for(timeout=s.timeout_ms)
        await page.get_by_text(re.compile(r": estimated probability \d+%")).first.wait_for(timeout=s.timeout_ms)

    return await s.step(page, "patient review", go, ready)


async def switch_disease(page, s: Session) -> bool:
    box = page.locator("[data-testid='stSelectbox']").filter(has_text="Disease").first
    current = await box.locator("input[role='combobox']").input_value()  # the short label shown
    chosen: dict[str, str] = {}

    async def click():
        await box.click()
        options = page.get_by_role("option")
        await options.first.wait_for(timeout=s.timeout_ms)
        names = [n.strip() for n in await options.all_inner_texts()]
        chosen["name"] = next(n for n in names if n and n != current)
        await options.filter(has_text=chosen["name"]).first.click()

    async def ready():
        pattern = re.compile(rf"^{re.escape(chosen['name'])}.*: estimated probability")
        await page.get_by_text(pattern).first.wait_for(timeout=s.timeout_ms)

    ok = await s.step(page, "disease switch", click, ready)
    s.details["disease switch"] = f"{current} -> {chosen.get('name')}"
    return ok


async def run_session(browser, url: str, patient: str, s: Session, start: asyncio.Event) -> None:
    context = await browser.new_context(viewport={"width": 1400, "height": 1800})
    context.set_default_timeout(s.timeout_ms)  # clicks and waits alike (Playwright's default is 30 s)
    page = await context.new_page()
    s.watch(page)
    s.details["patient"] = patient
    await start.wait()
    try:
        if await worklist(page, url, s) and await review(page, url, patient, s):
            await switch_disease(page, s)
        await page.wait_for_timeout(500)  # late console or network errors of the last step
    finally:
        await context.close()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


async def drive(url: str, sessions: int, timeout_s: float, server_pid: int) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"])
        warm = Session("warm-up", timeout_s * 2)
        context = await browser.new_context(viewport={"width": 1400, "height": 1800})
        context.set_default_timeout(warm.timeout_ms)
        page = await context.new_page()
        warm.watch(page)
        await worklist(page, url, warm)
        await context.close()

        start = asyncio.Event()
        runs = [Session(f"session {i + 1}", timeout_s) for i in range(sessions)]
        tasks = [asyncio.create_task(run_session(browser, url, f"P{i:05d}", s, start)) for i, s in enumerate(runs)]
        await asyncio.sleep(1.0)  # every context and page created
        began, cpu = time.perf_counter(), _cpu_seconds(server_pid)
        start.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        wall, cpu = time.perf_counter() - began, _cpu_seconds(server_pid) - cpu
        for s, outcome in zip(runs, outcomes):
            if isinstance(outcome, BaseException):
                s.errors.append(f"session crashed: {type(outcome).__name__}: {outcome}")
        version = browser.version
        await browser.close()
    return {"warm": warm, "sessions": runs, "wall_s": wall, "server_cpu_s": cpu, "chromium": version}


# ------------------------------------------------------------------------------------- report


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100])."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def summarise(result: dict[str, Any], server_log: str, checkpoint: str, sessions: int, timeout_s: float) -> dict[str, Any]:
    runs: list[Session] = result["sessions"]
    steps = {}
    for step in STEPS:
        values = [s.times[step] for s in runs if step in s.times]
        steps[step] = {"n": len(values), "p50_s": statistics.median(values) if values else None,
                       "p95_s": _percentile(values, 95) if values else None, "max_s": max(values) if values else None}
    tracebacks = server_log.count("Traceback (most recent call last)")
    errors = sum(len(s.errors) for s in runs) + len(result["warm"].errors) + tracebacks
    return {
        "sessions": sessions,
        "steps": steps,
        "cold_worklist_s": result["warm"].times.get("worklist"),
        "wall_s": result["wall_s"],
        "server_cpu_s": result["server_cpu_s"],
        "errors": errors,
        "server_tracebacks": tracebacks,
        "base_path_probes_not_errors": sum(s.probes for s in runs) + result["warm"].probes,
        "connection_ping_retries": {"count": sum(len(s.ping_retries) for s in runs),
                                    "sessions": sum(bool(s.ping_retries) for s in runs),
                                    "longest_wait_s": max((t for s in runs for t in s.ping_retries), default=None)},
        "error_list": ([f"warm-up: {e}" for e in result["warm"].errors]
                       + [f"{s.name}: {e}" for s in runs for e in s.errors]),
        "per_session": [{"name": s.name, **s.details, "times_s": s.times, "errors": s.errors} for s in runs],
        "setup": {"checkpoint": checkpoint, "page_timeout_s": timeout_s, "server": "one `streamlit run app/main.py` "
                  "process serves every session (scripts in threads of that process, one shared model)",
                  "browser": f"Chromium {result['chromium']} via Playwright, one browser, one context per session"},
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
                    "load_avg_1min_at_end": os.getloadavg()[0]},
    }


def markdown(report: dict[str, Any]) -> str:
    m, setup = report["machine"], report["setup"]
    intro = (f"{report['sessions']} browser sessions at once against **one** `streamlit run app/main.py` process "
             f"(it serves every session: scripts in threads, one shared model), on {m['cpu_count']} CPU cores "
             f"(shared machine; 1-min load {m['load_avg_1min_at_end']:.1f} at the end) that also run the browser. "
             f"{setup['browser']}. Checkpoint `{setup['checkpoint']}`, demo cohort, dev mode. Each session: "
             f"worklist, then its own patient's review (P00000, P00001, ...), then a switch of the Disease "
             f"selectbox. A step ends when the page's content is there and the script has finished; p95 is the "
             f"nearest rank over sessions. Produced by `python benchmarks/load_test.py --sessions {report['sessions']}`.")
    errors = (f"Errors: **{report['errors']}** (exceptions or failed explanations on the page, timeouts at "
              f"{setup['page_timeout_s']:.0f} s a step, HTTP >= 400 or failed requests, JavaScript and console "
              f"errors, {report['server_tracebacks']} tracebacks in the server log). Not counted: "
              f"{report['base_path_probes_not_errors']} 404s of Streamlit's own base-path probe "
              f"(`/patient/_stcore/health` and `host-config` before it finds the server at `/`).")
    pings = report["connection_ping_retries"]
    if pings["count"]:
        errors += (f" Also not counted, but a sign of load: in {pings['sessions']} sessions the frontend aborted "
                   f"{pings['count']} connection pings (`_stcore/health`, `host-config`) the server had not answered "
                   f"(up to {pings['longest_wait_s']:.0f} s as seen by the driver; the frontend's limit is 15 s) and "
                   f"sent them again; every one of those pages then loaded (the frontend gives up only after 6 "
                   f"failed rounds, with a console error, which would count).")
    wall = (f"All sessions took {report['wall_s']:.1f} s from the common start to the last one's end; the "
            f"server process used {report['server_cpu_s']:.0f} of the {m['cpu_count']} x {report['wall_s']:.0f} "
            f"core-seconds (the browser and any other job on the machine had the rest).")
    if report["cold_worklist_s"] is not None:
        wall += (f" Before them, one session alone opened the worklist on the cold server (demo cohort made, model "
                 f"loaded, cohort scored): {report['cold_worklist_s']:.1f} s.")
    lines = ["# Load test: concurrent dashboard sessions", "", intro, "", "| step | n | p50 | p95 | max |", "|---|---|---|---|---|"]
    for step, s in report["steps"].items():
        if s["n"]:
            lines.append(f"| {step} | {s['n']} | {s['p50_s']:.1f} s | {s['p95_s']:.1f} s | {s['max_s']:.1f} s |")
        else:
            lines.append(f"| {step} | 0 | | | |")
    lines += ["", errors, "", wall]
    if report["error_list"]:
        lines += ["", "## Errors", ""] + [f"- {e}" for e in report["error_list"][:50]]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=20, help="concurrent browser sessions (default 20)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help="where load_test.json and .md go")
    parser.add_argument("--checkpoint", default=str(ROOT / "assets" / "demo_model"))
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds allowed for one step of one session")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="medfuse_load_") as tmp:
        home = Path(tmp)
        log = home / "server.log"
        proc, url = start_server(home, args.checkpoint, log)
        try:
            result = asyncio.run(drive(url, args.sessions, args.timeout, proc.pid))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        server_log = log.read_text(errors="replace")
    report = summarise(result, server_log, args.checkpoint, args.sessions, args.timeout)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "load_test.json").write_text(scrub_paths(json.dumps(report, indent=1)))
    (args.out_dir / "load_test.md").write_text(scrub_paths(markdown(report)))
    print(markdown(report))
    return 0 if report["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
