"""One patient's explanation for one disease, computed once per server (or once per disk cache) and shared by
every session; and the background worker that computes them before anyone asks.

Why: one explanation costs ~0.2-0.7 s of CPU (app/scoring.py explain_panels) and the dashboard's sessions are
threads of one process on a small machine; 20 clinicians opening different patients at once cannot each wait
for their own. So, once a cohort has been scored with the server's model (app/state.py scores_or_none), the
`Precomputer` thread explains every patient for the disease the review opens on (its highest-risk disease),
then for the other diseases, patients needing review and higher risks first, into:

* the server-wide `EXPLANATIONS` (app/state.py SharedResults: bounded by bytes and entries, one computation
  per key, concurrent askers wait for it: a session asking for the explanation the worker is computing waits
  for that one computation), and
* an on-disk cache under $MEDFUSE_LENS_HOME/explanations (`ExplanationDisk`), so a restarted server does not
  compute again. It is keyed by what the result depends on: the code that computes it (`code_fingerprint`),
  the checkpoint's files (`checkpoint_fingerprint`: weights, config, domain), the patient's record as read
  (`record_fingerprint`), the disease and the word-level switch; a changed bundle or checkpoint is a new key.
  Stored as .npz (arrays) with a JSON tree, never pickle; bounded in bytes (oldest files removed first).

The worker is lower priority than pages: it runs with one torch thread (interactive_threads), only between
page runs (it waits while any session's script is running, `PAGE_RUNS`, up to `MAX_YIELD_S`), one explanation
at a time; it stops cleanly (`stop`), and a patient that cannot be explained is recorded as `Failed` (the page
then shows the same warning it would show had it computed it itself) without stopping the others.
Checkpoints other than the server's configured one (an uploaded one, another folder a researcher typed) are
not precomputed: their explanations are computed on demand, shared by the same key.

Memory: every explanation computed holds ~50-100 MB of temporaries, and the C heap keeps what was freed, so
at most COMPUTE_SLOTS are computed at once (other askers queue), freed memory is handed back to the system
after each page's computation, every 10 of the worker's and every TRIM_EVERY_S while it is idle
(app/memory.py `trim`), and the kept explanations are bounded (EXPLANATIONS in memory, DISK_MAX_BYTES on disk).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import io
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from app.memory import trim as trim_memory
from app.scoring import explain_panels
from app.state import EXPLANATIONS, Failed, SharedResults
from medfuse_core.runtime.cache import cache_home
from medfuse_core.runtime.digest import file_sha256

FORMAT = 1  # the on-disk layout; part of every key
DISK_MAX_BYTES = 2 * 1024**3  # the on-disk cache's bound (the demo's 40 patients x 11 diseases: ~0.25 GB)
MAX_YIELD_S = 5.0  # the worker waits for page runs to end at most this long before its next explanation
PRECOMPUTE_ENV = "MEDFUSE_LENS_PRECOMPUTE"  # 0: no background explanations (the tests; a server short of CPU)
COMPUTE_SLOTS = 2  # explanations computed at once per server: each holds ~50-100 MB of temporaries (the film's
# Integrated Gradients), and 8 at once raised the resident size by 300-450 MB, which the heap then kept
PROGRESS_FILE = "progress.json"  # in the disk cache folder: what the worker has done (benchmarks/load_test.py)
TRIM_EVERY_S = 30.0  # the idle worker gives freed heap back to the system this often (app/memory.py trim)


# ------------------------------------------------------------------------------------------ page runs


def scripts_running() -> int:
    """Session scripts (or fragments) running now in this Streamlit server; 0 outside one. Streamlit has no
    public API for it: this reads its session manager, and any change there reads as 0 (counted runs only)."""
    try:
        from streamlit.runtime import Runtime
        from streamlit.runtime.app_session import AppSessionState

        if not Runtime.exists():
            return 0
        sessions = Runtime.instance()._session_mgr.list_active_sessions()
        return sum(1 for info in sessions if getattr(info.session, "_state", None) == AppSessionState.APP_IS_RUNNING)
    except Exception:  # noqa: BLE001 - a Streamlit internals change, or the list changing while read
        return 0


class ActivityCounter:
    """Whether sessions' pages are running now, so the worker can yield to them: the runs app/main.py counts
    (`run()`), and the scripts and fragments Streamlit reports running (`external`)."""

    def __init__(self, external: Callable[[], int] = scripts_running, poll_s: float = 0.05) -> None:
        self.external, self.poll_s = external, poll_s
        self._n = 0
        self._lock = threading.Lock()

    @property
    def running(self) -> int:
        with self._lock:
            counted = self._n
        return max(counted, self.external())

    @contextlib.contextmanager
    def run(self) -> Iterator[None]:
        with self._lock:
            self._n += 1
        try:
            yield
        finally:
            with self._lock:
                self._n -= 1

    def wait_idle(self, timeout_s: float, stop: threading.Event | None = None) -> bool:
        """Wait until no page runs (True) or `timeout_s` passes or `stop` is set (False)."""
        deadline = time.monotonic() + timeout_s
        while self.running:
            left = deadline - time.monotonic()
            if left <= 0 or (stop is not None and stop.is_set()):
                return False
            time.sleep(min(self.poll_s, left))
        return True


PAGE_RUNS = ActivityCounter()


# ---------------------------------------------------------------------------------------- fingerprints


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


_CODE: list[str] = []


def code_fingerprint() -> str:
    """sha256 of the code an explanation comes from (the library, app/scoring.py, app/components/evidence.py):
    a disk cache written by other code is not read."""
    if not _CODE:
        root = Path(__file__).resolve().parents[1]
        files = sorted((root / "medfuse_core").rglob("*.py")) + [root / "app" / "scoring.py",
                                                                  root / "app" / "components" / "evidence.py"]
        _CODE.append(_digest(str(FORMAT).encode(), *(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes()
                                                    for p in files)))
    return _CODE[0]


_CHECKPOINTS: OrderedDict[tuple[str, float], str] = OrderedDict()
_CHECKPOINTS_LOCK = threading.Lock()


def checkpoint_fingerprint(folder: str, stamp: float = 0.0) -> str:
    """sha256 of every regular file of a checkpoint folder (weights, config, domain, notes model), once per
    folder and weights mtime `stamp` per process; links are not followed."""
    key = (str(folder), stamp)
    with _CHECKPOINTS_LOCK:
        if key in _CHECKPOINTS:
            return _CHECKPOINTS[key]
    root = Path(folder)
    parts = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            parts.append(path.relative_to(root).as_posix().encode() + b"\0" + file_sha256(path).encode())
    value = _digest(*parts)
    with _CHECKPOINTS_LOCK:
        _CHECKPOINTS[key] = value
        while len(_CHECKPOINTS) > 64:
            _CHECKPOINTS.popitem(last=False)
    return value


def _feed(h: Any, value: Any, depth: int = 0) -> None:
    """Hash the content of a record's value: dataclasses field by field (paths of the files read excepted:
    `source`), tables by their cells, arrays by their bytes."""
    if depth > 12:
        h.update(b"<deep>")
        return
    if is_dataclass(value) and not isinstance(value, type):
        h.update(type(value).__name__.encode())
        for f in fields(value):
            if f.name != "source":
                h.update(f.name.encode())
                _feed(h, getattr(value, f.name), depth + 1)
    elif isinstance(value, pd.DataFrame):
        h.update(repr((list(map(str, value.columns)), list(map(str, value.dtypes)), value.shape)).encode())
        try:
            h.update(pd.util.hash_pandas_object(value, index=True).to_numpy().tobytes())
        except (TypeError, ValueError):  # cells pandas cannot hash: their text
            h.update(value.to_json(date_format="iso", default_handler=str).encode())
    elif isinstance(value, np.ndarray):
        h.update(repr((value.dtype.str, value.shape)).encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, dict):
        h.update(b"{")
        for k in sorted(value, key=repr):
            _feed(h, k, depth + 1)
            _feed(h, value[k], depth + 1)
        h.update(b"}")
    elif isinstance(value, (list, tuple)):
        h.update(b"[")
        for v in value:
            _feed(h, v, depth + 1)
        h.update(b"]")
    else:
        h.update(repr(value).encode())
    h.update(b";")


_RECORDS: OrderedDict[int, tuple[Any, str]] = OrderedDict()
_RECORDS_LOCK = threading.Lock()


def record_fingerprint(record: Any) -> str:
    """sha256 of a PatientRecord's content (what the model reads, and the rest of the record), once per
    record object (records are read once per process: app/state.py records_by_id)."""
    with _RECORDS_LOCK:
        known = _RECORDS.get(id(record))
        if known is not None and known[0] is record:
            return known[1]
    h = hashlib.sha256()
    _feed(h, record)
    value = h.hexdigest()
    with _RECORDS_LOCK:
        _RECORDS[id(record)] = (record, value)
        while len(_RECORDS) > 8192:
            _RECORDS.popitem(last=False)
    return value


@dataclass(frozen=True)
class ExplanationKey:
    """What an explanation depends on."""

    checkpoint: str  # checkpoint_fingerprint
    record: str  # record_fingerprint
    disease: str
    words: bool  # word-level note attribution too

    def file_name(self) -> str:
        return _digest(self.disease.encode(), str(self.words).encode())[:24] + ".npz"


# ------------------------------------------------------------------------------------------ the disk


def _to_tree(value: Any, arrays: list[np.ndarray]) -> Any:
    """A JSON-able tree of an explanation (panel evidence), arrays moved to `arrays`; exact round trip with
    _from_tree (int keys, tuples, floats, NaN)."""
    if isinstance(value, np.ndarray):
        arrays.append(value)
        return {"a": len(arrays) - 1}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {"d": {k: _to_tree(v, arrays) for k, v in value.items()}}
        return {"k": [[_to_tree(k, arrays), _to_tree(v, arrays)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"t": [_to_tree(v, arrays) for v in value]}
    if isinstance(value, list):
        return {"l": [_to_tree(v, arrays) for v in value]}
    if isinstance(value, np.generic):
        return _to_tree(value.item(), arrays)
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"v": value}
    raise TypeError(f"an explanation holds a {type(value).__name__}, which the disk cache does not store")


def _from_tree(node: Any, arrays: Any) -> Any:
    (kind, body), = node.items()
    if kind == "a":
        return arrays[f"a{body}"]
    if kind == "d":
        return {k: _from_tree(v, arrays) for k, v in body.items()}
    if kind == "k":
        return {_from_tree(k, arrays): _from_tree(v, arrays) for k, v in body}
    if kind == "t":
        return tuple(_from_tree(v, arrays) for v in body)
    if kind == "l":
        return [_from_tree(v, arrays) for v in body]
    return body


class ExplanationDisk:
    """Explanations as files: <root>/<code + checkpoint>/<record>/<disease, words>.npz (the arrays and a JSON
    tree, np.load without pickle), written atomically; the oldest removed past `max_bytes`."""

    def __init__(self, root: Path | None = None, max_bytes: int = DISK_MAX_BYTES) -> None:
        self._root, self.max_bytes = root, max_bytes  # None: $MEDFUSE_LENS_HOME/explanations, read when used
        self._writes = 0
        self._lock = threading.Lock()

    @property
    def root(self) -> Path:
        return Path(self._root) if self._root is not None else cache_home() / "explanations"

    def path(self, key: ExplanationKey) -> Path:
        model = _digest(code_fingerprint().encode(), key.checkpoint.encode())[:32]
        return self.root / model / key.record[:32] / key.file_name()

    def load(self, key: ExplanationKey) -> dict[str, Any] | None:
        """The stored explanation, or None (absent, or unreadable: then it is computed again)."""
        path = self.path(key)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files if name != "tree"}
                return _from_tree(json.loads(bytes(data["tree"]).decode()), arrays)
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError):
            return None

    def save(self, key: ExplanationKey, value: dict[str, Any]) -> None:
        arrays: list[np.ndarray] = []
        tree = json.dumps(_to_tree(value, arrays)).encode()
        path = self.path(key)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)  # patients' evidence: the server's user only
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, tree=np.frombuffer(tree, dtype=np.uint8), **{f"a{i}": a for i, a in enumerate(arrays)})
        scratch = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        scratch.write_bytes(buffer.getvalue())
        os.replace(scratch, path)
        with self._lock:
            self._writes += 1
            prune = self._writes % 50 == 1
        if prune:
            self.prune()

    def prune(self) -> None:
        """Remove the oldest files until the folder is within `max_bytes`."""
        files = []
        for path in self.root.rglob("*.npz*"):
            try:
                st = path.stat()
            except OSError:
                continue
            if path.name.startswith(".") and st.st_mtime < time.time() - 3600:  # a write cut off by a kill
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            files.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            with contextlib.suppress(OSError):
                path.unlink()
                total -= size


# ------------------------------------------------------------------------------------ the explanation


class ExplanationService:
    """The shared explanations: memory (`cache`), then disk, then `compute(record, predictor, disease, words)`."""

    def __init__(self, cache: SharedResults, disk: ExplanationDisk | None,
                 compute: Callable[..., dict[str, Any]] = explain_panels, slots: int = COMPUTE_SLOTS) -> None:
        self.cache, self.disk, self.compute = cache, disk, compute
        self.slots = threading.BoundedSemaphore(slots)  # explanations computed at once, in all sessions
        self.disk_hits = 0

    def key(self, record: Any, checkpoint: str, stamp: float, disease: str, words: bool = False) -> ExplanationKey:
        return ExplanationKey(checkpoint_fingerprint(checkpoint, stamp), record_fingerprint(record), disease, words)

    def get(self, key: ExplanationKey, record: Any, predictor: Any, *, record_failure: bool = False,
            waiting: Callable[[], Any] | None = None, trim: bool = True) -> dict[str, Any]:
        """The explanation of `key`; raises what the computation raised (a recorded failure: a copy of it).
        `waiting()` is a context manager entered while it has to be computed (the page's spinner); `trim`:
        give the computation's freed memory back to the system after it."""
        def produce() -> dict[str, Any]:
            stored = self.disk.load(key) if self.disk is not None else None
            if stored is not None:
                self.disk_hits += 1
                return stored
            with self.slots:
                try:
                    value = self.compute(record, predictor, key.disease, key.words)
                finally:
                    if trim:
                        trim_memory()
            if self.disk is not None:
                try:
                    self.disk.save(key, value)
                except (OSError, TypeError, ValueError):  # a full disk costs the restart, not the page
                    pass
            return value

        value = self.cache.get(key, _MISSING)
        if value is _MISSING:
            with (waiting() if waiting is not None else contextlib.nullcontext()):
                value = self.cache.get_or_compute(key, produce, record_failure=record_failure)
        if isinstance(value, Failed):
            value.reraise()
        return value


_MISSING = object()
SERVICE = ExplanationService(EXPLANATIONS, ExplanationDisk())


# ------------------------------------------------------------------------------------------ the worker


@dataclass
class Plan:
    """The explanations of one scored cohort under one checkpoint, in the order they are computed."""

    name: str  # (source, checkpoint) in words, for the progress file
    tasks: list[tuple[Any, str]]  # (record, disease)
    checkpoint: str
    stamp: float
    predictor: Any
    done: int = 0
    failed: int = 0
    started: float = 0.0
    finished: float = 0.0


def plan_order(scores: dict[str, Any], records: dict[str, Any]) -> list[tuple[str, str]]:
    """(patient id, disease) in the order worth computing: first every patient's opening disease (the review
    opens on the patient's highest-risk disease), patients needing review first, then by that risk; then the
    other diseases, needing review first, then by the disease's risk."""
    ids = [pid for pid in scores if pid in records]

    def review_first(pid: str, k: int) -> tuple[bool, float]:
        s = scores[pid]
        return (not s.needs_review, -float(s.probabilities[k]))

    first = sorted(ids, key=lambda pid: review_first(pid, scores[pid].top))
    order = [(pid, scores[pid].labels[scores[pid].top]) for pid in first]
    rest = [(pid, k) for pid in ids for k in range(len(scores[pid].labels)) if k != scores[pid].top]
    rest.sort(key=lambda item: review_first(*item))
    order += [(pid, scores[pid].labels[k]) for pid, k in rest]
    return order


class Precomputer:
    """One background thread per server computing planned explanations through `service` (see the module)."""

    def __init__(self, service: ExplanationService, activity: ActivityCounter, *,
                 max_yield_s: float = MAX_YIELD_S, max_plans: int = 4,
                 progress: Callable[[], Path] | None = None) -> None:
        self.service, self.activity, self.max_yield_s, self.max_plans = service, activity, max_yield_s, max_plans
        self.progress = progress  # where to write the progress file (a callable: the cache home is read late)
        self._plans: OrderedDict[Any, Plan] = OrderedDict()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def submit(self, plan_key: Any, plan: Plan) -> bool:
        """Queue `plan` unless one with `plan_key` is known (True: queued); starts the thread if needed. Past
        `max_plans` the oldest plan is forgotten (its finished explanations stay in the caches)."""
        with self._lock:
            if plan_key in self._plans or self._stop.is_set():
                return False
            self._plans[plan_key] = plan
            while len(self._plans) > self.max_plans:
                self._plans.popitem(last=False)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="medfuse-precompute", daemon=True)
                self._thread.start()
            self._wake.notify_all()
        self._write_progress()
        return True

    def knows(self, plan_key: Any) -> bool:
        with self._lock:
            return plan_key in self._plans

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop after the explanation in progress (if any); waits for the thread up to `timeout_s`."""
        self._stop.set()
        with self._lock:
            self._wake.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def status(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"plan": p.name, "total": len(p.tasks), "done": p.done, "failed": p.failed,
                     "seconds": round((p.finished or time.time()) - p.started, 1) if p.started else 0.0,
                     "finished": bool(p.finished)} for p in self._plans.values()]

    def _next(self) -> tuple[Plan, Any, str] | None | bool:
        """The next task; None when stopped; False after `TRIM_EVERY_S` with nothing to do."""
        with self._lock:
            while not self._stop.is_set():
                for plan in self._plans.values():
                    if plan.done + plan.failed < len(plan.tasks):
                        record, disease = plan.tasks[plan.done + plan.failed]
                        plan.started = plan.started or time.time()
                        return plan, record, disease
                if not self._wake.wait(TRIM_EVERY_S):
                    return False
        return None

    def _loop(self) -> None:
        while not self._stop.is_set():
            job = self._next()
            if job is None:
                return
            if job is False:  # idle: what the pages freed goes back to the system
                trim_memory()
                continue
            plan, record, disease = job
            self.activity.wait_idle(self.max_yield_s, self._stop)  # pages first
            if self._stop.is_set():
                return
            ok = True
            try:
                key = self.service.key(record, plan.checkpoint, plan.stamp, disease)
                self.service.get(key, record, plan.predictor, record_failure=True, trim=False)
            except Exception:  # noqa: BLE001 - recorded in the cache as Failed; the next patient goes on
                ok = False
            with self._lock:
                if ok:
                    plan.done += 1
                else:
                    plan.failed += 1
                if plan.done + plan.failed == len(plan.tasks):
                    plan.finished = time.time()
            if (plan.done + plan.failed) % 10 == 0 or plan.finished:
                trim_memory()
            self._write_progress()
            time.sleep(0)  # let a waiting page thread take the interpreter

    def _write_progress(self) -> None:
        if self.progress is None:
            return
        with contextlib.suppress(OSError):
            path = self.progress()
            path.parent.mkdir(parents=True, exist_ok=True)
            scratch = path.with_name(f".{path.name}.{os.getpid()}")
            scratch.write_text(json.dumps({"pid": os.getpid(), "plans": self.status()}))
            os.replace(scratch, path)


PRECOMPUTER = Precomputer(SERVICE, PAGE_RUNS, progress=lambda: SERVICE.disk.root / PROGRESS_FILE)
atexit.register(PRECOMPUTER.stop, 10.0)  # a server shutting down lets the explanation in progress finish


def precompute_cohort(source: str, checkpoint: str, stamp: float, predictor: Any, records: dict[str, Any],
                      scores: dict[str, Any]) -> bool:
    """Queue every patient's explanations of a scored cohort for the background worker (once per source,
    checkpoint and weights mtime; later calls return False at once)."""
    if os.environ.get(PRECOMPUTE_ENV, "1").strip() == "0" or PRECOMPUTER.knows((source, checkpoint, stamp)):
        return False
    order = plan_order(scores, records)
    tasks = [(records[pid], disease) for pid, disease in order]
    name = f"{Path(source).name} with {Path(checkpoint).name}"
    return PRECOMPUTER.submit((source, checkpoint, stamp), Plan(name, tasks, checkpoint, stamp, predictor))
