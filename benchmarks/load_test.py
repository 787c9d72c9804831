"""Load test: N concurrent sessions for a stretch of time against one dashboard server process.

The dashboard serves every session from one Python process (one model, one set of caches; each
session's script runs in its own thread), so this checks that concurrent clinicians get correct pages
(no exception, no failed explanation or panel, no HTTP or console error), how long a page takes to
settle, and that the server's memory stays bounded and flat. It is the real stack: the server started
as a subprocess (`streamlit run app/main.py`, dev mode on loopback, demo cohort, the checkpoint below,
MALLOC_ARENA_MAX=2 as the README recommends for a server: `--arena-max`, 0 leaves it unset).

Two kinds of session, all started together after a warm-up (one session opens the worklist alone on
the cold server: demo cohort made, model loaded, cohort scored; reported as `cold worklist`):
- websocket sessions (N - B of them; benchmarks/ws_client.py speaks Streamlit's protocol, no browser):
  each opens the worklist, then until the time is up opens a patient review (`?patient=...`: the review
  opens on the patient's highest-risk disease, as from the unsorted worklist) and re-opens it on another
  disease (`?patient=...&disease=...`: a whole page run, costlier than the browser's switch, which reruns
  only the disease part), a different patient each time (session i starts at P{i}, then every 7th), so
  patients and diseases overlap across sessions the way a ward's clinicians would. A step's time is from
  the request to the script's end (`script_finished`);
- browser sessions (B; Debian's Chromium via Playwright), each one clinician's browser (one context, its
  HTTP cache kept): the dashboard loaded once (`first load`), then until the time is up a review opened by
  clicking a row of the worklist, a switch of the Disease selectbox, and back to the worklist from the
  menu. A step ends when the page's own content is there and Streamlit reports the script finished.
  (Until this session each patient had a fresh browser context and full page loads: the dashboard's
  JavaScript parsed again for every patient, which no clinician's browser does; p95 4.0 s that way.)
Between two steps a session reads the page for `--think` seconds (uniform between half and one and a half
times it, seeded per session; 0: back to back, which no clinician does: with ~0.4 s of server CPU a page, 20
sessions back to back ask more than one process can serve in 3 s whatever is cached).

Before the timed run the server is warmed as a deployed one is: one session opens the worklist alone (cohort
scored, reported as `cold worklist`), and with `--precomputed wait` (the default) the driver waits until the
server's background worker has explained every patient (app/explanations.py; its progress file in the
server's MEDFUSE_LENS_HOME), reported as `precompute`; `--precomputed no-wait` starts the sessions at once.

The server's resident memory is sampled every `--sample` seconds; `memory slope` is the least-squares
slope over the second half of the run; memory counts as flat when that slope is within
+-FLAT_MIB_PER_MIN (2 MiB/min, i.e. under 1 GB over an 8-hour day).

Errors: an exception on the page, "could not be computed" or "could not be shown" on the page, a step
timing out, a run that does not finish, an HTTP response >= 400 or a failed request, a JavaScript or
console error (browser sessions), and tracebacks in the server's log.

    python benchmarks/load_test.py [--sessions 20] [--browsers 3] [--duration 600] [--think 10]
                                   [--precomputed wait|no-wait] [--out-dir benchmarks/results]

Writes load_test.json and load_test.md to --out-dir.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from medfuse_core.provenance import write_benchmark_result
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
EVIDENCE_FAILED = "evidence could not be computed"
PANEL_FAILED = "could not be shown"
STEPS = ("first load", "worklist", "patient review", "disease switch", "disease re-open")
FLAT_MIB_PER_MIN = 2.0  # memory is flat when the second half's slope is within this (MiB per minute)
PROGRESS = Path("explanations") / "progress.json"  # app/explanations.py PROGRESS_FILE, in the server's home
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


def start_server(home: Path, checkpoint: str, log: Path, arena_max: int = 2,
                 extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """`streamlit run app/main.py` on a free loopback port, dev mode, its own MEDFUSE_LENS_HOME and audit log,
    MALLOC_ARENA_MAX=`arena_max` as the README recommends for a server (0: not set); `extra_env` on top
    (browser_speed.py: MEDFUSE_LENS_PRECOMPUTE=0)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("STREAMLIT_", "MEDFUSE_LENS_")) and k != "MALLOC_ARENA_MAX"}
    env.update(MEDFUSE_LENS_HOME=str(home), MEDFUSE_LENS_AUDIT_LOG=str(home / "audit.log"),
               MEDFUSE_LENS_CHECKPOINT=checkpoint, HF_HUB_OFFLINE="1")
    if arena_max:
        env["MALLOC_ARENA_MAX"] = str(arena_max)
    env.update(extra_env or {})
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
        self.times: dict[str, list[float]] = {}
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
        if await page.get_by_text(PANEL_FAILED, exact=False).count():
            self.errors.append(f"{step}: {(await page.get_by_text(PANEL_FAILED, exact=False).first.inner_text())[:300]}")
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
        self.times.setdefault(step, []).append(time.perf_counter() - start)
        await self.check(page, step)
        return True


async def _worklist_ready(page, s: Session) -> None:
    await page.wait_for_selector("h1:has-text('Patients')", timeout=s.timeout_ms)
    await page.locator("[data-testid='stDataFrame']").first.wait_for(timeout=s.timeout_ms)


async def first_load(page, url: str, s: Session) -> bool:
    """The dashboard loaded in the browser (its JavaScript, the websocket, the first page: the worklist)."""
    async def go():
        await page.goto(url + "/", timeout=s.timeout_ms)

    return await s.step(page, "first load", go, lambda: _worklist_ready(page, s))


async def worklist(page, s: Session) -> bool:
    """Back to the worklist from the menu, as a clinician does between patients."""
    async def go():
        await page.locator("[data-testid='stSidebarNav'] a").filter(has_text="Patients").first.click()

    return await s.step(page, "worklist", go, lambda: _worklist_ready(page, s))


async def review(page, row: int, s: Session) -> bool:
    """The review of the worklist's row `row`, opened by clicking it (the grid is a canvas: rows are 35 px
    below a 35 px header, the row's selection marker at its left)."""
    async def go():
        box = await page.locator("[data-testid='stDataFrame']").first.bounding_box()
        await page.mouse.click(box["x"] + 18, box["y"] + 35 + 35 * row + 17)

    async def ready():
        await page.wait_for_selector("h1:has-text('Patient P')", timeout=s.timeout_ms)
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


async def think(rng: random.Random, seconds: float) -> None:
    """A clinician reading the page: uniform in [0.5, 1.5] x `seconds`."""
    if seconds > 0:
        await asyncio.sleep(rng.uniform(0.5, 1.5) * seconds)


ROWS = 8  # browser sessions open the worklist's first ROWS rows in turn (the grid shows them without scrolling)


async def run_session(browser, url: str, s: Session, start: asyncio.Event, until: list[float],
                      think_s: float = 0.0, seed: int = 0) -> None:
    """A browser session, one clinician's browser: the dashboard loaded once, then until the time is up a
    review opened from the worklist (row seed, seed + 1, ...), a disease switch, and back to the worklist
    from the menu."""
    rng = random.Random(seed)
    await start.wait()
    await think(rng, think_s)  # the sessions do not all start in the same second
    context = await browser.new_context(viewport={"width": 1400, "height": 1800})
    context.set_default_timeout(s.timeout_ms)  # clicks and waits alike (Playwright's default is 30 s)
    page = await context.new_page()
    s.watch(page)
    try:
        ok = await first_load(page, url, s)
        k = 0
        while ok and time.perf_counter() < until[0]:
            if k and not await worklist(page, s):
                break
            await think(rng, think_s)
            if time.perf_counter() >= until[0]:
                break
            s.details["patients"] = s.details.get("patients", 0) + 1
            if not await review(page, (seed + k) % ROWS, s):
                break
            await think(rng, think_s)
            if time.perf_counter() < until[0]:
                await switch_disease(page, s)
                await think(rng, think_s)
            k += 1
        await page.wait_for_timeout(500)  # late console or network errors of the last step
    finally:
        await context.close()


async def run_ws_session(url: str, index: int, patients: list[str], labels: list[str], s: Session,
                         start: asyncio.Event, until: list[float], think_s: float = 0.0) -> None:
    """A websocket session: the worklist once, then one patient after another until the time is up: the review
    (on the patient's own top disease), then the same patient on another disease."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.ws_client import StreamlitSession

    rng = random.Random(1000 + index)
    timeout = s.timeout_ms / 1000
    await start.wait()
    await think(rng, think_s)  # the sessions do not all start in the same second
    async with StreamlitSession(url) as client:
        result = await client.run("", "", timeout)
        _record_ws(s, "worklist", result, "Patients")
        k = 0
        while time.perf_counter() < until[0]:
            await think(rng, think_s)
            if time.perf_counter() >= until[0]:
                break
            patient = patients[(index + k * 7) % len(patients)]
            result = await client.run("patient", urllib.parse.urlencode({"patient": patient}), timeout)
            _record_ws(s, "patient review", result, f"Patient {patient}")
            k += 1
            await think(rng, think_s)
            if time.perf_counter() >= until[0]:
                break
            disease = rng.choice(labels)
            query = urllib.parse.urlencode({"patient": patient, "disease": disease})
            result = await client.run("patient", query, timeout)
            _record_ws(s, "disease re-open", result, f"Patient {patient}")
        s.details["patients"] = k


def _record_ws(s: Session, step: str, result, expect: str) -> None:
    if not result.finished:
        s.errors.append(f"{step}: the run did not finish within {s.timeout_ms / 1000:.0f} s")
        return
    s.times.setdefault(step, []).append(result.seconds)
    for error in result.exceptions:
        s.errors.append(f"{step}: exception on the page: {error[:300]}")
    for text in result.texts:
        if EVIDENCE_FAILED in text or PANEL_FAILED in text:
            s.errors.append(f"{step}: {text[:300]}")
    if expect not in result.text:
        s.errors.append(f"{step}: expected {expect!r} on the page")


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return float("nan")


async def sample_memory(pid: int, every_s: float, began: float, samples: list[tuple[float, float]],
                        stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.append((time.perf_counter() - began, _rss_mib(pid)))
        try:
            await asyncio.wait_for(stop.wait(), timeout=every_s)
        except asyncio.TimeoutError:
            pass
    samples.append((time.perf_counter() - began, _rss_mib(pid)))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


async def wait_precomputed(progress: Path, timeout_s: float) -> dict[str, Any]:
    """Wait until the server's background worker reports every plan finished; what it reported, and the wait."""
    began = time.perf_counter()
    report: dict[str, Any] = {"plans": []}
    while time.perf_counter() - began < timeout_s:
        try:
            report = json.loads(progress.read_text())
        except (OSError, ValueError):
            report = {"plans": []}
        if report["plans"] and all(p["finished"] for p in report["plans"]):
            break
        await asyncio.sleep(1.0)
    plans = report["plans"]
    return {"waited_s": time.perf_counter() - began, "finished": bool(plans) and all(p["finished"] for p in plans),
            "explanations": sum(p["done"] for p in plans), "failed": sum(p["failed"] for p in plans),
            "total": sum(p["total"] for p in plans), "worker_s": sum(p["seconds"] for p in plans)}


async def drive(url: str, sessions: int, browsers: int, duration_s: float, timeout_s: float, server_pid: int,
                labels: list[str], patients: list[str], sample_s: float, think_s: float = 0.0,
                progress: Path | None = None, precompute_timeout_s: float = 0.0) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = None
        if browsers:
            browser = await pw.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                      "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"])
        warm = Session("warm-up", timeout_s * 2)
        sys.path.insert(0, str(ROOT))
        from benchmarks.ws_client import StreamlitSession

        async with StreamlitSession(url) as client:
            _record_ws(warm, "worklist", await client.run("", "", timeout_s * 2), "Patients")
        precompute = None
        if progress is not None:
            precompute = await wait_precomputed(progress, precompute_timeout_s)
            if not precompute["finished"]:
                warm.errors.append(f"the background explanations had not finished after {precompute_timeout_s:.0f} s "
                                   f"({precompute['explanations']} of {precompute['total']})")

        start, stop = asyncio.Event(), asyncio.Event()
        until = [float("inf")]
        runs = [Session(f"{'browser' if i < browsers else 'websocket'} session {i + 1}", timeout_s)
                for i in range(sessions)]
        tasks = []
        for i, s in enumerate(runs):
            if i < browsers:
                tasks.append(asyncio.create_task(run_session(browser, url, s, start, until, think_s, i)))
            else:
                tasks.append(asyncio.create_task(run_ws_session(url, i, patients, labels, s, start, until, think_s)))
        await asyncio.sleep(1.0)  # every task waiting
        began, cpu = time.perf_counter(), _cpu_seconds(server_pid)
        samples: list[tuple[float, float]] = []
        sampler = asyncio.create_task(sample_memory(server_pid, sample_s, began, samples, stop))
        until[0] = began + duration_s
        start.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        wall, cpu = time.perf_counter() - began, _cpu_seconds(server_pid) - cpu
        stop.set()
        await sampler
        for s, outcome in zip(runs, outcomes):
            if isinstance(outcome, BaseException):
                s.errors.append(f"session crashed: {type(outcome).__name__}: {outcome}")
        version = browser.version if browser else ""
        if browser:
            await browser.close()
    return {"warm": warm, "sessions": runs, "wall_s": wall, "server_cpu_s": cpu, "chromium": version,
            "memory": samples, "precompute": precompute}


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (per second) of (t, y) points; NaN with fewer than 3."""
    points = [(t, y) for t, y in points if y == y]
    if len(points) < 3:
        return float("nan")
    mt = sum(t for t, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    den = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (y - my) for t, y in points) / den if den else float("nan")


# ------------------------------------------------------------------------------------- report


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100])."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def _shown_path(path: str) -> str:
    """A path inside the repository as repo-relative (no build machine's absolute path in a result)."""
    try:
        return Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return Path(path).name


def summarise(result: dict[str, Any], server_log: str, checkpoint: str, sessions: int, browsers: int,
              duration_s: float, timeout_s: float, think_s: float = 0.0, arena_max: int = 0) -> dict[str, Any]:
    runs: list[Session] = result["sessions"]
    steps = {}
    for step in STEPS:
        values = [t for s in runs for t in s.times.get(step, [])]
        steps[step] = {"n": len(values), "p50_s": statistics.median(values) if values else None,
                       "p95_s": _percentile(values, 95) if values else None, "max_s": max(values) if values else None}
    tracebacks = server_log.count("Traceback (most recent call last)")
    errors = sum(len(s.errors) for s in runs) + len(result["warm"].errors) + tracebacks
    memory = result["memory"]
    half = [p for p in memory if p[0] >= result["wall_s"] / 2]
    slope = _slope(half) * 60
    every_step = [t for s in runs for step in STEPS for t in s.times.get(step, [])]
    return {
        "sessions": sessions,
        "browser_sessions": browsers,
        "duration_s": duration_s,
        "think_s": think_s,
        "steps": steps,
        "all_steps": {"n": len(every_step), "p50_s": statistics.median(every_step) if every_step else None,
                      "p95_s": _percentile(every_step, 95) if every_step else None},
        "precompute": result.get("precompute"),
        "cold_worklist_s": (result["warm"].times.get("worklist") or [None])[0],
        "wall_s": result["wall_s"],
        "server_cpu_s": result["server_cpu_s"],
        "memory_mib": {"start": memory[0][1] if memory else None, "peak": max((m for _, m in memory), default=None),
                       "end": memory[-1][1] if memory else None,
                       "slope_second_half_mib_per_min": slope,
                       "flat": bool(abs(slope) <= FLAT_MIB_PER_MIN),
                       "flat_criterion": f"least-squares slope over the second half within +-{FLAT_MIB_PER_MIN} MiB/min",
                       "samples": [[round(t, 1), round(m, 1)] for t, m in memory]},
        "errors": errors,
        "server_tracebacks": tracebacks,
        "base_path_probes_not_errors": sum(s.probes for s in runs) + result["warm"].probes,
        "connection_ping_retries": {"count": sum(len(s.ping_retries) for s in runs),
                                    "sessions": sum(bool(s.ping_retries) for s in runs),
                                    "longest_wait_s": max((t for s in runs for t in s.ping_retries), default=None)},
        "error_list": ([f"warm-up: {e}" for e in result["warm"].errors]
                       + [f"{s.name}: {e}" for s in runs for e in s.errors]),
        "per_session": [{"name": s.name, **s.details, "times_s": s.times, "errors": s.errors} for s in runs],
        "setup": {"checkpoint": _shown_path(checkpoint), "page_timeout_s": timeout_s, "server": "one `streamlit run app/main.py` "
                  "process serves every session (scripts in threads of that process, one shared model)",
                  "malloc_arena_max": arena_max or None,
                  "browser": (f"Chromium {result['chromium']} via Playwright, one context per browser session"
                              if browsers else "no browser sessions")},
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
                    "load_avg_1min_at_end": os.getloadavg()[0]},
    }


def markdown(report: dict[str, Any]) -> str:
    m, setup = report["machine"], report["setup"]
    intro = (f"{report['sessions']} sessions at once ({report['browser_sessions']} in a real browser, the others "
             f"websocket clients) for {report['duration_s']:.0f} s against **one** `streamlit run app/main.py` process "
             f"(it serves every session: scripts in threads, one shared model), on {m['cpu_count']} CPU cores "
             f"(1-min load {m['load_avg_1min_at_end']:.1f} at the end; the clients run on the same machine"
             + (f"; MALLOC_ARENA_MAX={setup['malloc_arena_max']} as the README recommends" if setup.get("malloc_arena_max")
                else "; MALLOC_ARENA_MAX not set") + "). "
             f"{setup['browser']}. Checkpoint `{setup['checkpoint']}`, demo cohort, dev mode. Websocket sessions open "
             f"the worklist, then one patient after another: its review (on its top disease), then the same patient "
             f"re-opened on another disease (a whole page run); browser sessions load the dashboard once, then repeat "
             f"a review opened from a worklist row, a Disease switch, and the worklist from the menu. Between steps each session reads the page for {report['think_s']:g} s on average (uniform "
             f"between half and one and a half times it). A step ends when the script has finished (and, in the "
             f"browser, the page's content is there); p95 is the nearest rank over every step of every session. "
             f"Produced by `python benchmarks/load_test.py --sessions {report['sessions']} --browsers "
             f"{report['browser_sessions']} --duration {report['duration_s']:.0f} --think {report['think_s']:g}"
             + ("" if setup.get("malloc_arena_max") == 2 else f" --arena-max {setup.get('malloc_arena_max') or 0}")
             + (" --precomputed no-wait" if report.get("precompute") is None else "") + "`.")
    pre = report.get("precompute")
    if pre is not None:
        intro += (f" Before the sessions started, the server's background worker explained every patient for every "
                  f"disease ({pre['explanations']} of {pre['total']} explanations, {pre['failed']} failed; "
                  f"{pre['worker_s']:.0f} s of its time; the driver waited {pre['waited_s']:.0f} s), as on a server "
                  f"that has been up a few minutes.")
    else:
        intro += (" The sessions started right after the cold worklist, while the server's background worker was "
                  "still explaining the patients.")
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
    every = report["all_steps"]
    if every["n"]:
        lines.append(f"| every step | {every['n']} | {every['p50_s']:.1f} s | {every['p95_s']:.1f} s | |")
    mem = report["memory_mib"]
    memory_lines: list[str] = []
    if mem["start"] is not None:
        verdict = "**flat**" if mem["flat"] else "**not flat**"
        memory_lines = ["", f"Server memory (resident): {mem['start']:.0f} MiB at the start, peak {mem['peak']:.0f} MiB, "
                        f"{mem['end']:.0f} MiB at the end; slope over the second half "
                        f"{mem['slope_second_half_mib_per_min']:+.1f} MiB/min: {verdict} ({mem['flat_criterion']}; "
                        f"{len(mem['samples'])} samples). By minute:", "", "| minute | MiB |", "|---|---|"]
        shown_minute = -1
        for t, m in mem["samples"]:
            if int(t // 60) > shown_minute:
                shown_minute = int(t // 60)
                memory_lines.append(f"| {t / 60:.1f} | {m:.0f} |")
        memory_lines.append(f"| {mem['samples'][-1][0] / 60:.1f} (end) | {mem['samples'][-1][1]:.0f} |")
    lines += ["", errors, "", wall] + memory_lines
    if report["error_list"]:
        lines += ["", "## Errors", ""] + [f"- {e}" for e in report["error_list"][:50]]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=20, help="concurrent sessions in all (default 20)")
    parser.add_argument("--browsers", type=int, default=3, help="of which real browser sessions (default 3)")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds the sessions keep going (default 600)")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between memory samples")
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help="where load_test.json and .md go")
    parser.add_argument("--checkpoint", default=str(ROOT / "assets" / "demo_model"))
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds allowed for one step of one session")
    parser.add_argument("--think", type=float, default=10.0,
                        help="seconds a session reads a page before its next step, on average (default 10; 0: none)")
    parser.add_argument("--precomputed", choices=("wait", "no-wait"), default="wait",
                        help="wait for the server's background explanations before the timed run (default) or not")
    parser.add_argument("--arena-max", type=int, default=2,
                        help="MALLOC_ARENA_MAX for the server, as the README recommends (0: not set)")
    parser.add_argument("--precompute-timeout", type=float, default=1200.0,
                        help="seconds to wait for the background explanations at most")
    args = parser.parse_args()
    if args.browsers and not Path(CHROMIUM).exists():
        print(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="medfuse_load_") as tmp:
        home = Path(tmp)
        log = home / "server.log"
        proc, url = start_server(home, args.checkpoint, log, args.arena_max)
        try:
            labels = json.loads((Path(args.checkpoint) / "config.json").read_text())["model"]["labels"]
            patients = [f"P{i:05d}" for i in range(40)]  # the demo cohort
            result = asyncio.run(drive(url, args.sessions, min(args.browsers, args.sessions), args.duration,
                                       args.timeout, proc.pid, labels, patients, args.sample, args.think,
                                       home / PROGRESS if args.precomputed == "wait" else None,
                                       args.precompute_timeout))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        server_log = log.read_text(errors="replace")
    report = summarise(result, server_log, args.checkpoint, args.sessions, min(args.browsers, args.sessions),
                       args.duration, args.timeout, args.think, args.arena_max)
    write_benchmark_result(args.out_dir, "load_test", report, markdown(report))
    print(markdown(report))
    return 0 if report["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
