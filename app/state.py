"""Process-wide cached data for the pages: the current patient source, its records, the model
and its scores.

Pages never read files or checkpoints themselves; they ask here, so a cohort is read once per process,
a checkpoint loaded once, and a cohort scored once per (source, checkpoint).
"""

from __future__ import annotations

import copy
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import streamlit as st

from medfuse_core.explain.scores import PatientScores, score_records
from medfuse_core.runtime.checkpoint import is_checkpoint, is_synthetic_model
from medfuse_core.runtime.threads import interactive_threads
from medfuse_core.demo import demo_cohort_dir
from medfuse_core.runtime.cache import cache_home
from medfuse_core.predictor import Predictor
from medfuse_core.record import MODALITIES, PatientRecord
from medfuse_core.sources.cohort import CohortLoad, read_cohort
from medfuse_core.sources.importer import imported_mimic3_dir
from medfuse_core.runtime.device import resolve_device


@st.cache_resource(show_spinner="Preparing the demo cohort (first start only)...")
def demo_dir() -> Path:
    return demo_cohort_dir()


# Sources: the demo, $MEDFUSE_LENS_SOURCE and the folders researchers pick; the least recently used of more than
# 8 are read again when asked for (every process-wide cache is bounded: 20 sessions share one process).
SOURCES_KEPT = 8


@st.cache_resource(show_spinner="Reading patient bundles...", max_entries=SOURCES_KEPT)
def load_cohort_report(root: str) -> CohortLoad:
    """Every readable bundle under `root`, and every folder that could not be used with why (never raises)."""
    return read_cohort(root)


def load_cohort(root: str) -> list[PatientRecord]:
    """Every readable bundle under `root` with a unique patient id (the others: `load_cohort_report`)."""
    return load_cohort_report(root).records


@st.cache_resource(show_spinner=False, max_entries=SOURCES_KEPT)
def records_by_id(source: str) -> dict[str, PatientRecord]:
    return {r.patient_id: r for r in load_cohort(source)}


def record_by_id(source: str, patient_id: str) -> PatientRecord:
    return records_by_id(source)[patient_id]


SOURCE_ENV = "MEDFUSE_LENS_SOURCE"  # a folder of bundles (or one bundle) to show instead of the demo
MIMIC3_ENV = "MEDFUSE_LENS_MIMIC3"  # a folder of MIMIC-III tables offered as a source
SHARED_MIMIC3_DEMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "mimic-iii-demo"


def default_mimic3_tables() -> str:
    """$MEDFUSE_LENS_MIMIC3, else the MIMIC-III demo in ../shared/data when it is there, else ''."""
    env = os.environ.get(MIMIC3_ENV)
    if env is not None:
        return env.strip()
    return str(SHARED_MIMIC3_DEMO) if SHARED_MIMIC3_DEMO.is_dir() else ""


@st.cache_resource(show_spinner="Importing the MIMIC-III tables (first time only)...", max_entries=SOURCES_KEPT)
def mimic3_bundles(tables: str) -> Path:
    """The bundles of a folder of MIMIC-III tables, imported once (cached on disk and per process).
    Raises DataError when the folder is not MIMIC-III tables."""
    return imported_mimic3_dir(tables, cache_home() / "imports")


def current_source() -> Path:
    """The folder of bundles the dashboard shows: the user's pick, else $MEDFUSE_LENS_SOURCE, else the demo."""
    return Path(st.session_state.get("source_dir") or os.environ.get(SOURCE_ENV) or demo_dir())


# ------------------------------------------------------------------------------------ the model

CHECKPOINT_ENV = "MEDFUSE_LENS_CHECKPOINT"  # a run folder (config.json + model.safetensors)
DEMO_MODEL = Path(__file__).resolve().parents[1] / "assets" / "demo_model"
MODEL_CARD = Path(__file__).resolve().parents[1] / "assets" / "MODEL_CARD.md"
EVAL_REPORT = "eval_report.json"  # looked for inside the checkpoint folder


def default_checkpoint() -> str:
    """$MEDFUSE_LENS_CHECKPOINT if set (set but empty: no model), else the bundled demo model if it is
    there, else '' (no model: the pages show the data without predictions)."""
    env = os.environ.get(CHECKPOINT_ENV)
    if env is not None:
        return env.strip()
    return str(DEMO_MODEL) if is_checkpoint(DEMO_MODEL) else ""


def current_checkpoint() -> str:
    """The checkpoint folder the pages use ('' = none): the sidebar's choice, else the default."""
    chosen = st.session_state.get("checkpoint_dir")
    return default_checkpoint() if chosen is None else str(chosen).strip()


def checkpoint_stamp(checkpoint: str) -> float:
    """The weights file's mtime: part of the cache keys, so a retrained checkpoint is reloaded."""
    try:
        return (Path(checkpoint) / "model.safetensors").stat().st_mtime
    except OSError:
        return 0.0


@st.cache_resource(show_spinner="Loading the model...", max_entries=4)
def load_predictor(checkpoint: str, stamp: float = 0.0) -> Predictor:
    """One Predictor per checkpoint folder and process (weights are read once)."""
    return Predictor.load(checkpoint)


def predictor_or_reason(checkpoint: str) -> tuple[Predictor | None, str]:
    """(predictor, '') or (None, why there is none, in words for the page); never raises."""
    if not checkpoint:
        return None, ("Predictions are off: no model checkpoint is configured, so the pages show the data only. "
                      f"Set {CHECKPOINT_ENV} or enter a run folder in the sidebar.")
    if not is_checkpoint(checkpoint):
        return None, (f"`{checkpoint}` is not a checkpoint (expected config.json and model.safetensors): "
                      "showing the data without predictions.")
    try:
        return load_predictor(checkpoint, checkpoint_stamp(checkpoint)), ""
    except Exception as exc:  # a broken or incompatible checkpoint must not take the dashboard down
        return None, f"The checkpoint `{checkpoint}` could not be loaded ({type(exc).__name__}: {exc})."


@st.cache_data(show_spinner="Scoring the patients...", max_entries=8)
def cohort_scores(source: str, checkpoint: str, stamp: float = 0.0) -> dict[str, PatientScores]:
    """Predictions, contributions and uncertainty of every patient of `source` under `checkpoint`."""
    predictor, _ = predictor_or_reason(checkpoint)
    if predictor is None:
        return {}
    with interactive_threads():  # batches of <= 64 small tensors: see medfuse_core/runtime/threads.py
        return score_records(predictor, load_cohort(source))


def scores_or_none(source: str, checkpoint: str) -> dict[str, PatientScores] | None:
    """cohort_scores, or None when there is no usable model (the caller shows the reason)."""
    predictor, _ = predictor_or_reason(checkpoint)
    if predictor is None:
        return None
    stamp = checkpoint_stamp(checkpoint)
    scores = cohort_scores(source, checkpoint, stamp)
    if scores and checkpoint == default_checkpoint():
        # the server's model: its explanations are computed in the background before they are asked for
        # (imported here: app/explanations.py builds on this module's caches)
        from app.explanations import precompute_cohort

        precompute_cohort(source, checkpoint, stamp, predictor, records_by_id(source), scores)
    return scores


def device_in_use(checkpoint: str) -> str:
    """The device the model runs on ('cuda:0', 'cpu'); without a model, the one it would use."""
    predictor, _ = predictor_or_reason(checkpoint) if checkpoint else (None, "")
    if predictor is not None:
        return str(predictor.device)
    return str(resolve_device("auto"))


def model_is_synthetic(checkpoint: str) -> bool:
    predictor, _ = predictor_or_reason(checkpoint) if checkpoint else (None, "")
    return predictor is not None and is_synthetic_model(predictor.config, checkpoint, DEMO_MODEL)


# ------------------------------------------------------------------------- planted truth (synthetic)


@st.cache_data(show_spinner=False, max_entries=64)
def planted_evidence(source: str, patient_id: str, disease: str | None = None) -> dict[str, Any]:
    """The synthetic cohort's planted evidence in the panels' attribution formats (one disease, or all)."""
    record = record_by_id(source, patient_id)
    out: dict[str, Any] = {key: {} for key in MODALITIES}
    evidence = (record.truth or {}).get("evidence", {}) or {}
    if disease is not None:
        evidence = {disease: evidence[disease]} if disease in evidence else {}
    folder = Path(record.source)
    for item in evidence.values():
        for lab in item.get("labs", []) or []:
            name = lab.get("item") or lab.get("label")
            if name:
                out["labs"][str(name)] = 1.0
        for span in item.get("notes", []) or []:
            for i, note in enumerate(record.notes):
                if span.get("file") and Path(note.source).name == Path(span["file"]).name:
                    out["notes"].setdefault(i, []).append((int(span["start"]), int(span["end"]), 1.0))
        for vit in item.get("vitals", []) or []:
            lo, hi = (vit.get("hours") or [0, 0])[:2]
            hours = out["vitals"].setdefault(vit["channel"], {})
            for h in range(int(np.floor(lo)), int(np.ceil(hi))):
                hours[h] = 1.0
        for img in item.get("image", []) or []:
            for i, image in enumerate(record.images):
                if Path(image.source).name != Path(img.get("file", "")).name:
                    continue
                mask = read_mask(folder, str(img["mask"])) if img.get("mask") else None
                if mask is None or mask.shape != image.pixels.shape:
                    mask = np.zeros(image.pixels.shape, dtype=np.float32)
                    x0, y0, x1, y1 = (int(v) for v in img["box"])
                    mask[y0:y1, x0:x1] = 1.0
                out["image"][i] = np.maximum(out["image"].get(i, 0), mask)
    return out


def read_mask(folder: Path, name: str) -> np.ndarray | None:
    """A planted-region mask image (truth.json names it, relative to the bundle) as 0/1 float32, or None when
    it cannot be read, lies outside the bundle or is reached through a link (truth.json is input too)."""
    path = folder / name
    try:
        if not path.resolve().is_relative_to(folder.resolve()):
            return None
        here = folder
        for part in Path(name).parts:
            here = here / part
            if here.is_symlink():
                return None
    except (OSError, ValueError):
        return None
    try:
        from PIL import Image

        with Image.open(path) as im:
            return (np.asarray(im.convert("L"), dtype=np.float32) > 127).astype(np.float32)
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------ shared explanations


def approx_bytes(value: Any, _depth: int = 0) -> int:
    """Rough memory of a result made of dicts, lists, tuples, numpy arrays, strings and numbers."""
    if _depth > 8:
        return 64
    if isinstance(value, np.ndarray):
        return int(value.nbytes) + 112
    if isinstance(value, (str, bytes)):
        return len(value) + 49
    if isinstance(value, dict):
        return 232 + sum(approx_bytes(k, _depth + 1) + approx_bytes(v, _depth + 1) for k, v in value.items())
    if isinstance(value, (list, tuple, set)):
        return 56 + 8 * len(value) + sum(approx_bytes(v, _depth + 1) for v in value)
    return sys.getsizeof(value, 64)


@dataclass(frozen=True)
class Failed:
    """A computation that raised, kept in a SharedResults in place of its value (`record_failure=True`): the
    exception without its traceback (which would hold the frames, and their arrays, alive)."""

    error: BaseException

    def reraise(self) -> None:
        """Raise a copy of the recorded exception (a copy: several sessions may raise it at once)."""
        try:
            error = copy.copy(self.error)
        except Exception:  # noqa: BLE001 - an exception class that cannot be copied
            error = RuntimeError(f"{type(self.error).__name__}: {self.error}")
        raise error.with_traceback(None)


class SharedResults:
    """A process-wide cache of results every session may read: computed once per key per server, even when
    several sessions (or the background precomputation, app/explanations.py) ask for it at the same moment
    (the others wait for the first), least recently used dropped past `max_entries` or `max_bytes`. Values
    are shared, not copied: callers must not change them.

    Why not st.cache_data: it pickles each result in and copies it out for every reader, and two sessions
    asking at once both compute; with 20 clinicians on a ward the same patient's explanation was computed
    several times and held in several copies."""

    def __init__(self, max_entries: int = 256, max_bytes: int = 512 * 1024**2,
                 sizeof: Callable[[Any], int] = approx_bytes) -> None:
        self.max_entries, self.max_bytes, self.sizeof = max_entries, max_bytes, sizeof
        self._values: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._computing: dict[Hashable, threading.Lock] = {}
        self.computed = self.hits = self.failed = 0

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._values

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The cached value (counted as a hit), or `default`; never computes."""
        with self._lock:
            if key not in self._values:
                return default
            self._values.move_to_end(key)
            self.hits += 1
            return self._values[key][0]

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any], *, record_failure: bool = False) -> Any:
        """The value of `key`, computed by `compute()` if nobody has (one computation per key: concurrent
        askers wait for it). A computation that raises is not kept and the error reaches the caller (the next
        asker tries again), unless `record_failure`: then a `Failed` is kept and returned, to this caller and
        to every later one, so a patient that cannot be explained is not retried by every session."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                self.hits += 1
                return self._values[key][0]
            gate = self._computing.setdefault(key, threading.Lock())
        with gate:  # one computation per key; the others wait here, then find the value
            with self._lock:
                if key in self._values:
                    self._values.move_to_end(key)
                    self.hits += 1
                    return self._values[key][0]
            try:
                try:
                    value = compute()
                except Exception as exc:
                    if not record_failure:
                        raise
                    value = Failed(exc.with_traceback(None))
                self.put(key, value)  # before the gate goes: a late asker finds the value, not a new gate
            finally:
                with self._lock:
                    self._computing.pop(key, None)
            return value

    def put(self, key: Hashable, value: Any) -> None:
        """Keep `value` for `key` (a value larger than `max_bytes` is not kept), dropping the least recently
        used entries past the bounds."""
        size = self.sizeof(value)
        with self._lock:
            if isinstance(value, Failed):
                self.failed += 1
            else:
                self.computed += 1
            if size > self.max_bytes:
                return
            if key in self._values:
                self._bytes -= self._values.pop(key)[1]
            self._values[key] = (value, size)
            self._bytes += size
            while len(self._values) > self.max_entries or self._bytes > self.max_bytes:
                _, (_, dropped) = self._values.popitem(last=False)
                self._bytes -= dropped

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._bytes = 0


# Model explanations per (checkpoint, patient record, disease, words), for every session (app/explanations.py).
# ~1.1 MB with a film (its 512 x 512 evidence map), ~40 kB without; past the bound they are read back from the
# disk cache (~10 ms) instead of being kept.
EXPLANATIONS = SharedResults(max_entries=1024, max_bytes=256 * 1024**2)
