"""app/explanations.py: shared explanations (memory, then disk), the background worker that computes them
before they are asked for, and the review page using a precomputed one."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from app.explanations import (ActivityCounter, ExplanationDisk, ExplanationService, Plan, Precomputer,
                              checkpoint_fingerprint, plan_order, record_fingerprint)
from app.state import Failed, SharedResults
from medfuse_core.record import Labs, PatientRecord

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")


def _record(pid: str, lactate: float = 4.1) -> PatientRecord:
    t0 = pd.Timestamp("2131-05-07 08:00")
    return PatientRecord(pid, age=60, sex="F", index_time=t0, labs=Labs(pd.DataFrame(
        {"time": [t0], "item": ["Lactate"], "value_text": [str(lactate)], "value": [lactate], "unit": ["mmol/L"],
         "ref_low": [0.5], "ref_high": [2.0]})))


class Counting:
    """A stand-in for explain_panels: counts calls per (patient, disease), takes `delay`, fails for `bad`."""

    def __init__(self, delay: float = 0.0, bad: str = "") -> None:
        self.delay, self.bad = delay, bad
        self.calls: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def __call__(self, record, predictor, disease, words=False):
        with self._lock:
            self.calls[(record.patient_id, disease)] = self.calls.get((record.patient_id, disease), 0) + 1
        time.sleep(self.delay)
        if record.patient_id == self.bad:
            raise ValueError(f"no evidence for {record.patient_id}")
        return {"labs": {"Lactate": float(record.labs.table["value"].iloc[0])}, "labs_read": {},
                "notes": {0: [(0, 5, 0.25)]}, "note_tokens": {}, "vitals": {"Heart Rate": {3: -0.5}},
                "image": {0: np.full((8, 8), 0.5, np.float32)}, "summary": {"methods": ("a", "b"), "delta": math.nan}}


@pytest.fixture()
def checkpoint(tmp_path: Path) -> str:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text('{"model": {}}')
    (folder / "model.safetensors").write_bytes(b"weights-1")
    return str(folder)


def _service(tmp_path: Path, compute, memory: SharedResults | None = None) -> ExplanationService:
    return ExplanationService(memory or SharedResults(), ExplanationDisk(tmp_path / "disk"), compute=compute)


def _wait(predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _same(a, b) -> bool:
    """Equal in value and type, arrays by dtype and content, NaN equal to NaN."""
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, dict):
        return type(b) is dict and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and (a == b or (a != a and b != b))


# ------------------------------------------------------------------------------ one computation per key


def test_worker_and_sessions_asking_at_once_compute_each_explanation_once(tmp_path: Path, checkpoint: str) -> None:
    compute = Counting(delay=0.05)
    service = _service(tmp_path, compute)
    records = [_record(f"P{i}") for i in range(3)]
    worker = Precomputer(service, ActivityCounter(external=lambda: 0))
    worker.submit("cohort", Plan("cohort", [(r, d) for r in records for d in ("A", "B")], checkpoint, 0.0, None))
    seen = []

    def session(i: int) -> None:  # sessions open the same patients while the worker computes them
        record = records[i % 3]
        seen.append(service.get(service.key(record, checkpoint, 0.0, "A" if i % 2 else "B"), record, None))

    threads = [threading.Thread(target=session, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _wait(lambda: worker.status()[0]["finished"])
    worker.stop()
    assert compute.calls == {(f"P{i}", d): 1 for i in range(3) for d in ("A", "B")}
    assert worker.status()[0]["done"] == 6 and not worker.alive
    again = service.get(service.key(records[0], checkpoint, 0.0, "A"), records[0], None)
    assert any(again is s for s in seen)  # shared, not copied


def test_different_explanations_asked_at_once_are_computed_at_most_slots_at_a_time(tmp_path: Path,
                                                                                   checkpoint: str) -> None:
    running, peak, lock = [0], [0], threading.Lock()

    def compute(record, predictor, disease, words=False):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return {"labs": {}}

    service = ExplanationService(SharedResults(), ExplanationDisk(tmp_path / "disk"), compute=compute, slots=2)
    records = [_record(f"P{i}") for i in range(8)]
    threads = [threading.Thread(target=service.get, args=(service.key(r, checkpoint, 0.0, "A"), r, None))
               for r in records]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 2 and len(service.cache) == 8


def test_a_bad_patient_is_recorded_and_shown_as_its_error_without_costing_the_others(tmp_path: Path,
                                                                                      checkpoint: str) -> None:
    compute = Counting(bad="BAD")
    service = _service(tmp_path, compute)
    records = [_record("P1"), _record("BAD"), _record("P2")]
    worker = Precomputer(service, ActivityCounter(external=lambda: 0))
    worker.submit("cohort", Plan("cohort", [(r, "A") for r in records], checkpoint, 0.0, None))
    _wait(lambda: worker.status()[0]["finished"])
    worker.stop()
    assert worker.status()[0] | {"seconds": 0} == {"plan": "cohort", "total": 3, "done": 2, "failed": 1,
                                                    "seconds": 0, "finished": True}
    key = service.key(records[1], checkpoint, 0.0, "A")
    assert isinstance(service.cache.get(key), Failed)
    for _ in range(2):  # every session asking sees the error, as if it had computed it; nobody computes again
        with pytest.raises(ValueError, match="no evidence for BAD"):
            service.get(key, records[1], None)
    assert compute.calls[("BAD", "A")] == 1
    assert service.get(service.key(records[2], checkpoint, 0.0, "A"), records[2], None)["labs"] == {"Lactate": 4.1}


def test_worker_yields_to_running_pages_and_stops_cleanly(tmp_path: Path, checkpoint: str) -> None:
    compute = Counting()
    pages = ActivityCounter(external=lambda: 0, poll_s=0.01)
    worker = Precomputer(_service(tmp_path, compute), pages, max_yield_s=60.0)
    with pages.run():  # a session's page is running: the worker waits
        worker.submit("cohort", Plan("cohort", [(_record("P1"), "A"), (_record("P2"), "A")], checkpoint, 0.0, None))
        time.sleep(0.3)
        assert compute.calls == {}
    _wait(lambda: worker.status()[0]["finished"])
    assert compute.calls == {("P1", "A"): 1, ("P2", "A"): 1}
    # waiting for pages that never end, stop() ends it promptly
    blocked = Precomputer(_service(tmp_path, Counting()), ActivityCounter(external=lambda: 1), max_yield_s=60.0)
    blocked.submit("c", Plan("c", [(_record("P3"), "A")], checkpoint, 0.0, None))
    assert blocked.alive
    start = time.monotonic()
    blocked.stop(timeout_s=10)
    assert not blocked.alive and time.monotonic() - start < 5
    worker.stop()
    assert not worker.alive
    assert not worker.submit("later", Plan("later", [(_record("P4"), "A")], checkpoint, 0.0, None))


def test_open_disease_first_then_the_rest_needing_review_and_higher_risk_first() -> None:
    def scores(probabilities, review):
        p = np.asarray(probabilities)
        return SimpleNamespace(labels=["A", "B", "C"], probabilities=p, top=int(np.argmax(p)), needs_review=review)

    cohort = {"low": scores([0.1, 0.2, 0.05], False), "high": scores([0.9, 0.3, 0.1], False),
              "review": scores([0.2, 0.1, 0.3], True)}
    order = plan_order(cohort, dict.fromkeys(cohort))
    assert order[:3] == [("review", "C"), ("high", "A"), ("low", "B")]  # what the review opens on, first
    assert order[3:5] == [("review", "A"), ("review", "B")]
    assert order[5:] == [("high", "B"), ("low", "A"), ("high", "C"), ("low", "C")]
    assert plan_order(cohort, {"low": None}) == [("low", "B"), ("low", "A"), ("low", "C")]  # unreadable: left out


# --------------------------------------------------------------------------------------- disk, keys


def test_a_restarted_server_reads_the_disk_instead_of_computing(tmp_path: Path, checkpoint: str) -> None:
    first = Counting()
    record = _record("P1")
    service = _service(tmp_path, first)
    value = service.get(service.key(record, checkpoint, 0.0, "A"), record, None)
    restarted_compute = Counting()
    restarted = _service(tmp_path, restarted_compute)  # new memory, same disk
    back = restarted.get(restarted.key(_record("P1"), checkpoint, 0.0, "A"), _record("P1"), None)
    assert restarted_compute.calls == {} and restarted.disk_hits == 1
    assert _same(value, back) and isinstance(back["notes"][0][0], tuple) and 3 in back["vitals"]["Heart Rate"]


def test_a_changed_bundle_or_checkpoint_is_computed_again(tmp_path: Path, checkpoint: str) -> None:
    compute = Counting()
    service = _service(tmp_path, compute)
    service.get(service.key(_record("P1"), checkpoint, 0.0, "A"), _record("P1"), None)
    changed = _record("P1", lactate=9.9)  # the bundle's lab changed
    assert record_fingerprint(changed) != record_fingerprint(_record("P1"))
    assert service.get(service.key(changed, checkpoint, 0.0, "A"), changed, None)["labs"] == {"Lactate": 9.9}
    assert compute.calls[("P1", "A")] == 2
    # the checkpoint's weights retrained in place (a new mtime stamp), and a copy elsewhere (same content)
    before = checkpoint_fingerprint(checkpoint, 1.0)
    (Path(checkpoint) / "model.safetensors").write_bytes(b"weights-2")
    assert checkpoint_fingerprint(checkpoint, 2.0) != before
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("config.json", "model.safetensors"):
        (copy / name).write_bytes((Path(checkpoint) / name).read_bytes())
    assert checkpoint_fingerprint(str(copy), 0.0) == checkpoint_fingerprint(checkpoint, 2.0)
    fresh = _service(tmp_path, compute)
    fresh.get(fresh.key(_record("P1"), checkpoint, 2.0, "A"), _record("P1"), None)
    assert compute.calls[("P1", "A")] == 3  # the old weights' explanation on disk is not used


def test_the_disk_cache_is_bounded_and_skips_unreadable_files(tmp_path: Path, checkpoint: str) -> None:
    disk = ExplanationDisk(tmp_path / "disk", max_bytes=20_000)
    service = ExplanationService(SharedResults(), disk, compute=Counting())
    for i in range(60):  # ~1 kB each; pruned every 50 writes
        service.get(service.key(_record(f"P{i}"), checkpoint, 0.0, "A"), _record(f"P{i}"), None)
    disk.prune()
    sizes = [p.stat().st_size for p in disk.root.rglob("*.npz")]
    assert 0 < len(sizes) < 60 and sum(sizes) <= 20_000
    key = service.key(_record("P59"), checkpoint, 0.0, "A")
    disk.path(key).write_bytes(b"not an npz")
    assert disk.load(key) is None


# ------------------------------------------------------------------------------------ the review page


def test_the_review_page_shows_a_precomputed_explanation_without_computing(demo_checkpoint: Path, monkeypatch,
                                                                         tmp_path: Path) -> None:
    from streamlit.testing.v1 import AppTest

    import app.explanations as X
    from app.state import checkpoint_stamp, demo_dir, load_predictor, records_by_id

    monkeypatch.setenv("MEDFUSE_LENS_CHECKPOINT", str(demo_checkpoint))
    monkeypatch.delenv("MEDFUSE_LENS_SOURCE", raising=False)
    checkpoint, patient = str(demo_checkpoint), "P00004"
    stamp = checkpoint_stamp(checkpoint)
    predictor = load_predictor(checkpoint, stamp)
    record = records_by_id(str(demo_dir()))[patient]
    X.SERVICE.cache.clear()  # nothing an earlier test computed: what the page finds, the worker made
    monkeypatch.setattr(X.SERVICE, "disk", ExplanationDisk(tmp_path / "disk"))
    computed = []
    real = X.SERVICE.compute
    monkeypatch.setattr(X.SERVICE, "compute", lambda *a, **k: computed.append(a[2]) or real(*a, **k))
    worker = Precomputer(X.SERVICE, ActivityCounter(external=lambda: 0))  # the service every session reads
    worker.submit("test", Plan("test", [(record, d) for d in predictor.labels], checkpoint, stamp, predictor))
    _wait(lambda: worker.status()[0]["finished"], timeout_s=300)
    worker.stop()
    assert worker.status()[0]["done"] == len(predictor.labels) and sorted(computed) == sorted(predictor.labels)

    def on_demand(*args, **kwargs):
        raise AssertionError("computed while the page was open")

    monkeypatch.setattr(X.SERVICE, "compute", on_demand)
    hits = X.SERVICE.cache.hits
    at = AppTest.from_file(MAIN, default_timeout=300)
    at.query_params["patient"] = patient
    at = at.switch_page("views/patient.py").run()
    assert not at.exception, [e.value for e in at.exception]
    page = " ".join(str(w.value) for w in at.warning)
    assert "could not be computed" not in page
    assert any("model attribution" in h.value for h in at.html)
    opened = at.selectbox(key="disease").value
    other = next(d for d in predictor.labels if d != opened)
    at = at.selectbox(key="disease").select(other).run()  # the switch reads a precomputed one too
    assert not at.exception and "could not be computed" not in " ".join(str(w.value) for w in at.warning)
    assert any("model attribution" in h.value for h in at.html)
    assert X.SERVICE.cache.hits > hits
