"""Batch scoring: a checkpoint and a folder of patient bundles -> one Parquet file of predictions.

`python -m medfuse_core score --checkpoint RUN --data DIR --out preds.parquet`. Built to stream: a
DataLoader reads one bundle per item and its workers featurize each batch (`--workers N` processes,
so reading files and embedding notes run beside the model); the model scores the batch under
`inference_mode` (bf16 autocast and pinned memory on CUDA), and the batch's rows are written as one
Parquet row group at once. Memory is that of a few batches, whatever the cohort's size.

Featurizing a batch rather than one patient embeds its note sentences in one call: one new shard
of the sentence-embedding cache per batch instead of per patient. The cache is shared safely by the
workers: a shard is written under a unique temporary name and renamed into place, so a process only
ever sees complete shards, and a sentence embedded twice by two workers is harmless (see
features/embedding_cache.py). Its hit rate is reported.

A bundle that cannot be read (or featurized) never stops the run: it gets a row with no
probabilities and its message in `error`, and is listed in the summary as failed (the command then
exits 1). A patient whose bundle reads fine but holds nothing the model can use in the window gets
the same kind of row with the "no data" reason in `error`; that is an outcome, not a failure: the
summary counts it apart and the exit status stays 0. Columns: `patient_id`,
`bundle`, `modalities` (those the model used, comma-separated), per label `<label>_prob`
(calibrated per label), `<label>_logit`, `<label>_positive` (calibrated probability >= the label's
threshold), `<label>_low` / `<label>_high` (the conformal interval; null when the checkpoint has none),
`<label>_state` ("above threshold" | "below threshold" | "uncertain"), `status` ("out of domain" |
"uncertain" | "ok"; "insufficient data" on a row without a prediction because every modality was out of
domain), `needs_review`, `out_of_domain` (modalities unlike the training data, comma-separated; left out
of the prediction), `domain_reason` (the same in plain words), per modality `<modality>_given`, `<modality>_read` and
`<modality>_not_read` (what the model read of the record, features/coverage.py), `not_read_reasons`
("labs: 9 unknown test, 3 unit unknown"), `problems` (what reading the bundle
reported, "; "-separated) and `error`.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from medfuse_core.runtime.cache import cache_home
from medfuse_core.features.batch import Batch, PatientFeatures, collate
from medfuse_core.features.coverage import COVERAGE_MODALITIES, Coverage
from medfuse_core.features.featurize import FeatureSpec, Featurizer
from medfuse_core.predictor import Assessment, Predictor, all_out_of_domain_reason, no_data_reason
from medfuse_core.runtime.trust import INSUFFICIENT
from medfuse_core.problems import DataError
from medfuse_core.record import PatientRecord
from medfuse_core.sources.bundle import find_bundles, read_bundle

__all__ = ["BundleDataset", "ScoreSummary", "score_cohort"]


@dataclass
class ScoreSummary:
    out_path: Path
    scored: int  # patients given a prediction (every modality out of domain: not scored, listed in no_data)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (bundle folder, the error): unreadable bundles
    no_data: list[tuple[str, str]] = field(default_factory=list)  # (bundle folder, why): nothing to score, not an error
    seconds: float = 0.0
    row_groups: int = 0
    cache_hits: int = 0  # distinct note sentences per batch found in the embedding cache
    cache_misses: int = 0  # ... and embedded by the text model

    @property
    def patients_per_second(self) -> float:
        return self.scored / self.seconds if self.seconds > 0 else math.nan

    @property
    def cache_hit_rate(self) -> float:
        total = self.cache_hits + self.cache_misses
        return self.cache_hits / total if total else math.nan

    def describe(self) -> str:
        total = self.cache_hits + self.cache_misses
        cache = (f"sentence-embedding cache hit rate {self.cache_hit_rate:.0%} ({self.cache_hits}/{total})" if total
                 else "no note sentences")
        return (f"{self.scored} patient(s) scored, {len(self.no_data)} with no data, {len(self.failed)} failed, "
                f"{self.patients_per_second:.1f} patients/s; "
                f"{cache}; predictions in {self.out_path}")


@dataclass(frozen=True)
class _NoData:
    """A record read and featurized without error that holds nothing the model can use."""

    message: str


@dataclass
class _Read:
    """One bundle as read by a worker: the record, or why there is none."""

    folder: str
    record: PatientRecord | None
    error: str | None


class BundleDataset(Dataset):
    """Item i: bundle folder i read into a record (featurized later, per batch, by `_FeaturizeBatch`)."""

    def __init__(self, folders: Sequence[Path]):
        self.folders = [str(f) for f in folders]

    def __len__(self) -> int:
        return len(self.folders)

    def __getitem__(self, index: int) -> _Read:
        folder = self.folders[index]
        try:
            return _Read(folder, read_bundle(folder), None)
        except DataError as exc:
            return _Read(folder, None, str(exc))
        except Exception as exc:  # noqa: BLE001 - one unreadable bundle must not end the run
            return _Read(folder, None, f"error: {folder}: {type(exc).__name__}: {exc}")


@dataclass
class ScoringBatch:
    """A batch as the loader hands it over: the model's input for the patients that could be
    featurized, and one metadata row per bundle (in order)."""

    rows: list[dict[str, Any]]  # folder, patient_id, problems, error, no_data, index into `batch` (or None)
    batch: Batch | None
    cache_hits: int = 0
    cache_misses: int = 0

    def pin_memory(self) -> "ScoringBatch":  # called by the DataLoader when pin_memory=True
        return ScoringBatch(self.rows, self.batch.pin_memory() if self.batch is not None else None,
                            self.cache_hits, self.cache_misses)


# sentence vectors each scoring process keeps in memory: a cohort streams by once, so a small recent
# window (the templated sentences every note repeats) serves as well as the app's 50,000 and keeps
# memory from growing with the cohort (measured in benchmarks/performance.py)
SCORING_CACHE_ROWS = 4096


@functools.cache
def _libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def _trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc); elsewhere a no-op. Batches of different padded
    shapes otherwise leave the heap fragmented, and the resident size creeps up with the cohort."""
    malloc_trim = getattr(_libc(), "malloc_trim", None)
    if malloc_trim is not None:
        malloc_trim(0)


class _FeaturizeBatch:
    """The loader's collate_fn: featurize the readable records of a batch (in the worker process).

    Pickled to worker processes without the featurizer, which is rebuilt there from its spec (its
    text model loads on first use there; its embedding cache opens the same folder)."""

    def __init__(self, spec: FeatureSpec, cache_dir: Path, featurizer: Featurizer | None = None):
        self.spec = spec
        self.cache_dir = cache_dir
        self._featurizer = featurizer

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec, "cache_dir": self.cache_dir, "_featurizer": None}

    @property
    def featurizer(self) -> Featurizer:
        if self._featurizer is None:
            self._featurizer = Featurizer(self.spec, cache_dir=self.cache_dir, cache_memory_rows=SCORING_CACHE_ROWS)
        return self._featurizer

    def _cache_counts(self) -> tuple[int, int]:
        cache = self.featurizer.embedding_cache
        return (cache.hits, cache.misses) if cache is not None else (0, 0)

    def __call__(self, items: list[_Read]) -> ScoringBatch:
        hits, misses = self._cache_counts()
        records = [item.record for item in items if item.record is not None]
        features = self._featurize(records)
        rows, kept = [], []
        readable = iter(features)
        for item in items:
            row = {"folder": item.folder, "patient_id": Path(item.folder).name, "problems": "", "error": item.error,
                   "no_data": False, "index": None, "coverage": None}
            if item.record is not None:
                row["patient_id"] = item.record.patient_id
                row["problems"] = "; ".join(str(p) for p in item.record.problems)
                row["coverage"] = self._coverage(item.record)
                result = next(readable)
                if isinstance(result, _NoData):
                    row["error"], row["no_data"] = result.message, True
                elif isinstance(result, str):
                    row["error"] = result
                else:
                    row["index"] = len(kept)
                    kept.append(result)
            rows.append(row)
        new_hits, new_misses = self._cache_counts()
        batch = ScoringBatch(rows, collate(kept) if kept else None, new_hits - hits, new_misses - misses)
        del features, kept, records
        _trim_heap()
        return batch

    def _coverage(self, record: PatientRecord) -> Coverage | None:
        """What the model reads of the record (None if that cannot be worked out: the row still scores)."""
        try:
            return self.featurizer.coverage(record)
        except Exception:  # noqa: BLE001 - a report about the record must not cost its prediction
            return None

    def _featurize(self, records: list[PatientRecord]) -> list[PatientFeatures | _NoData | str]:
        """Features per record (the batch's sentences embedded together), or the error of a record
        that cannot be featurized (found by retrying one at a time when the batch fails)."""
        if not records:
            return []
        try:
            features = list(self.featurizer.featurize_many(records, progress=False)[0])
        except Exception:  # noqa: BLE001 - find the patient(s) at fault, one at a time
            features = [self._featurize_one(record) for record in records]
        # as Predictor.predict: nothing the model can use gives no number, only the reason
        reason = no_data_reason(float(self.spec.hours))
        return [_NoData(f"{f.patient_id}: {reason}") if not isinstance(f, str) and not f.present.any() else f
                for f in features]

    def _featurize_one(self, record: PatientRecord) -> PatientFeatures | str:
        try:
            return self.featurizer.featurize(record)[0]
        except Exception as exc:  # noqa: BLE001 - one patient must not end the run
            return f"error: {record.patient_id}: featurizing failed: {type(exc).__name__}: {exc}"


def output_schema(labels: Sequence[str]) -> pa.Schema:
    columns = [pa.field("patient_id", pa.string()), pa.field("bundle", pa.string()), pa.field("modalities", pa.string())]
    for name in labels:
        columns += [pa.field(f"{name}_prob", pa.float32()), pa.field(f"{name}_logit", pa.float32()),
                    pa.field(f"{name}_positive", pa.bool_()), pa.field(f"{name}_low", pa.float32()),
                    pa.field(f"{name}_high", pa.float32()), pa.field(f"{name}_state", pa.string())]
    columns += [pa.field("status", pa.string()), pa.field("needs_review", pa.bool_()), pa.field("out_of_domain", pa.string()),
                pa.field("domain_reason", pa.string())]
    for modality in COVERAGE_MODALITIES:  # what the model read (features/coverage.py)
        columns += [pa.field(f"{modality}_given", pa.int32()), pa.field(f"{modality}_read", pa.int32()),
                    pa.field(f"{modality}_not_read", pa.int32())]
    columns += [pa.field("not_read_reasons", pa.string()), pa.field("problems", pa.string()), pa.field("error", pa.string())]
    return pa.schema(columns)


def _table(scoring: ScoringBatch, assessment: Assessment | None, predictor: Predictor, schema: pa.Schema) -> pa.Table:
    """One row per bundle of the batch; nulls in the prediction columns where it was not scored."""
    logits = assessment.logits if assessment is not None else None
    probs = assessment.probabilities if assessment is not None else None
    columns: dict[str, list] = {name: [] for name in schema.names}
    for row in scoring.rows:
        i = row["index"]
        trust = assessment.trust(i, predictor.thresholds, predictor.level) if i is not None else None
        # every modality out of domain: no prediction, said as such (the row keeps its domain columns)
        scored = i is not None and bool(assessment.used[i].any())
        columns["patient_id"].append(row["patient_id"])
        columns["bundle"].append(row["folder"])
        used = assessment.used[i].tolist() if scored else None
        columns["modalities"].append(",".join(m for m, p in zip(assessment.modalities, used) if p) if used else None)
        for k, name in enumerate(predictor.labels):
            columns[f"{name}_prob"].append(float(probs[i, k]) if scored else None)
            columns[f"{name}_logit"].append(float(logits[i, k]) if scored else None)
            columns[f"{name}_positive"].append(bool(probs[i, k] >= predictor.thresholds[k]) if scored else None)
            has_interval = scored and trust.low is not None
            columns[f"{name}_low"].append(float(trust.low[k]) if has_interval else None)
            columns[f"{name}_high"].append(float(trust.high[k]) if has_interval else None)
            columns[f"{name}_state"].append(trust.states[k] if scored else None)
        columns["status"].append((trust.status if scored else INSUFFICIENT) if trust is not None else None)
        columns["needs_review"].append((trust.needs_review or not scored) if trust is not None else None)
        columns["out_of_domain"].append(",".join(trust.domain.flagged) if trust is not None else None)
        columns["domain_reason"].append(trust.reason if trust is not None else None)
        cov = row["coverage"]
        if cov is not None and trust is not None:
            cov = cov.leaving_out(trust.left_out)
        counts = cov.counts() if cov is not None else {}
        for modality in COVERAGE_MODALITIES:
            for what in ("given", "read", "not_read"):
                columns[f"{modality}_{what}"].append(counts.get(f"{modality}_{what}"))
        columns["not_read_reasons"].append(None if cov is None else "; ".join(
            f"{m}: " + ", ".join(f"{n} {r}" for r, n in c.not_read.items()) for m, c in cov.modalities.items() if c.not_read))
        columns["problems"].append(row["problems"])
        error = row["error"]
        if trust is not None and not scored:
            error = f"{row['patient_id']}: {all_out_of_domain_reason(trust.domain)}"
        columns["error"].append(error)
    return pa.table(columns, schema=schema)


def score_cohort(checkpoint: str | Path, data_dir: str | Path, out_path: str | Path, batch_size: int = 64,
                 workers: int = 0, device: str = "auto", progress: bool = True,
                 cache_dir: str | Path | None = None) -> ScoreSummary:
    """Score every bundle under `data_dir` with the checkpoint; predictions stream to `out_path`
    (Parquet, one row group per batch; written as `<out>.partial` and renamed when complete)."""
    if batch_size < 1 or workers < 0:
        raise ValueError(f"batch_size must be >= 1 and workers >= 0; got {batch_size}, {workers}")
    folders = find_bundles(Path(data_dir))
    if not folders:
        raise DataError(str(data_dir), "", "expected patient bundles (folders with patient.json); found none")
    cache_dir = Path(cache_dir) if cache_dir is not None else cache_home() / "embeddings"
    predictor = Predictor.load(checkpoint, device=device, cache_dir=cache_dir)
    target = predictor.device
    # in this process the predictor's own featurizer does the work; workers rebuild one from the spec
    featurize = _FeaturizeBatch(predictor.featurizer.spec, cache_dir, predictor.featurizer if workers == 0 else None)
    loader = DataLoader(BundleDataset(folders), batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=featurize, pin_memory=target.type == "cuda")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".partial")
    schema = output_schema(predictor.labels)
    summary = ScoreSummary(out_path, 0)
    started = time.perf_counter()
    with pq.ParquetWriter(partial, schema) as writer, \
            tqdm(total=len(folders), desc="scoring", unit="patient", disable=not progress) as bar:
        for scoring in loader:
            assessment = predictor.assess(scoring.batch) if scoring.batch is not None else None
            writer.write_table(_table(scoring, assessment, predictor, schema))
            summary.row_groups += 1
            # a patient whose every modality was out of domain has no prediction: not scored, but no data
            # left to predict from (its row says why), as a patient with nothing to score
            predicted = [row["index"] is not None and bool(assessment.used[row["index"]].any()) for row in scoring.rows]
            summary.scored += sum(predicted)
            summary.failed += [(row["folder"], row["error"]) for row in scoring.rows
                               if row["index"] is None and not row["no_data"]]
            summary.no_data += [(row["folder"], row["error"]) for row in scoring.rows if row["no_data"]]
            summary.no_data += [(row["folder"], all_out_of_domain_reason(assessment.checks[row["index"]]))
                                for row, done in zip(scoring.rows, predicted) if row["index"] is not None and not done]
            summary.cache_hits += scoring.cache_hits
            summary.cache_misses += scoring.cache_misses
            bar.update(len(scoring.rows))
            del scoring, assessment
            _trim_heap()
    os.replace(partial, out_path)
    summary.seconds = time.perf_counter() - started
    return summary
