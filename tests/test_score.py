"""Batch scoring: the Parquet file holds what the Predictor says, bad bundles never stop the run,
rows stream out in row groups, and DataLoader workers share the sentence-embedding cache."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from medfuse_core.cli import main
from medfuse_core.predictor import Predictor
from medfuse_core.record import MODALITIES
from medfuse_core.runtime.calibration import sigmoid
from medfuse_core.score import score_cohort
from medfuse_core.sources.bundle import find_bundles, read_bundle

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cohort(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 12-patient tiny cohort plus one bundle whose patient.json is not JSON."""
    out = tmp_path_factory.mktemp("score_cohort") / "cohort"
    shutil.copytree(tiny_cohort, out)
    broken = out / "P_BROKEN"
    broken.mkdir()
    (broken / "patient.json").write_text("{this is not json", encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def expected(demo_checkpoint: Path, cohort: Path) -> tuple[Predictor, dict]:
    """Predictor.predict on the readable records, by patient id."""
    predictor = Predictor.load(demo_checkpoint, device="cpu")
    records = [read_bundle(f) for f in find_bundles(cohort) if f.name != "P_BROKEN"]
    return predictor, {p.patient_id: p for p in predictor.predict(records)}


@pytest.mark.parametrize("workers", [0, 2])
def test_parquet_matches_predictor_and_streams_row_groups(demo_checkpoint, cohort, expected, tmp_path, workers) -> None:
    predictor, by_id = expected
    z = np.linspace(-3, 3, 7)[:, None].repeat(len(predictor.labels), 1)
    assert not np.allclose(predictor.probabilities(z), sigmoid(z))  # so calibrated probabilities differ from sigmoid
    out = tmp_path / "preds.parquet"
    summary = score_cohort(demo_checkpoint, cohort, out, batch_size=5, workers=workers, device="cpu", progress=False)
    n = len(find_bundles(cohort))  # 13: 12 readable + the broken one
    assert summary.scored == n - 1 and len(summary.failed) == 1
    assert pq.ParquetFile(out).metadata.num_row_groups == math.ceil(n / 5) == summary.row_groups
    assert not out.with_name(out.name + ".partial").exists()
    table = pq.read_table(out).to_pandas()
    assert len(table) == n
    scored = table[table["error"].isna()]
    assert sorted(scored["patient_id"]) == sorted(by_id)
    for _, row in scored.iterrows():
        want = by_id[row["patient_id"]]
        probs = np.array([row[f"{name}_prob"] for name in predictor.labels])
        logits = np.array([row[f"{name}_logit"] for name in predictor.labels])
        np.testing.assert_allclose(probs, want.probabilities, atol=1e-5)
        np.testing.assert_allclose(logits, want.logits, atol=1e-4)
        positive = [bool(row[f"{name}_positive"]) for name in predictor.labels]
        assert positive == [bool(p >= t) for p, t in zip(want.probabilities, want.thresholds)]
        assert row["modalities"] == ",".join(m for m, used in zip(MODALITIES, want.present) if used)


def test_unreadable_bundle_gets_a_row_with_its_message(demo_checkpoint, cohort, tmp_path) -> None:
    out = tmp_path / "preds.parquet"
    summary = score_cohort(demo_checkpoint, cohort, out, batch_size=4, device="cpu", progress=False)
    [(folder, message)] = summary.failed
    assert Path(folder).name == "P_BROKEN" and "patient.json" in message
    table = pq.read_table(out).to_pandas()
    broken = table[table["bundle"] == folder].iloc[0]
    assert broken["patient_id"] == "P_BROKEN" and "patient.json" in broken["error"]
    assert all(broken[c] is None or np.isnan(broken[c]) for c in table.columns if c.endswith(("_prob", "_logit")))
    assert table["error"].isna().sum() == len(table) - 1  # the others were scored


def test_a_patient_that_cannot_be_featurized_is_reported_and_the_batch_scored(demo_checkpoint, cohort, tmp_path,
                                                                              monkeypatch) -> None:
    from medfuse_core.features.featurize import Featurizer

    original = Featurizer.featurize_many

    def failing(self, records, progress=True):
        if any(r.patient_id == "P00003" for r in records):
            raise ValueError("unusable vitals")
        return original(self, records, progress)

    monkeypatch.setattr(Featurizer, "featurize_many", failing)
    out = tmp_path / "preds.parquet"
    summary = score_cohort(demo_checkpoint, cohort, out, batch_size=6, device="cpu", progress=False)
    assert summary.scored == 11 and {Path(f).name for f, _ in summary.failed} == {"P_BROKEN", "P00003"}
    table = pq.read_table(out).to_pandas().set_index("patient_id")
    assert "featurizing failed: ValueError: unusable vitals" in table.loc["P00003", "error"]
    assert table["error"].isna().sum() == 11  # P00003's batch-mates were scored


def test_workers_share_the_embedding_cache(demo_checkpoint, cohort, tmp_path) -> None:
    """Two workers fill a fresh cache concurrently; a second run finds every sentence there and
    scores the same; no temporary shard is left behind."""
    cache = tmp_path / "embeddings"
    first = score_cohort(demo_checkpoint, cohort, tmp_path / "a.parquet", batch_size=3, workers=2, device="cpu",
                         progress=False, cache_dir=cache)
    assert first.cache_misses > 0
    assert not list(cache.rglob(".tmp-*"))
    second = score_cohort(demo_checkpoint, cohort, tmp_path / "b.parquet", batch_size=4, workers=0, device="cpu",
                          progress=False, cache_dir=cache)
    assert second.cache_misses == 0 and second.cache_hit_rate == 1.0
    a = pq.read_table(tmp_path / "a.parquet").to_pandas().set_index("bundle").sort_index()
    b = pq.read_table(tmp_path / "b.parquet").to_pandas().set_index("bundle").sort_index()
    # batches of 3 and of 4 pad differently, so float32 sums round differently (logits agree to ~1e-6); the
    # isotonic calibration of some labels is steep between close knots (COPD: 2.2143 and 2.2096 in logit),
    # which turns that rounding into up to ~2e-6 of probability: the logits are compared tightly, the
    # probabilities at what the steepest calibration segment allows
    logits = [c for c in a.columns if c.endswith("_logit")]
    np.testing.assert_allclose(a[logits].to_numpy(float), b[logits].to_numpy(float), atol=2e-6)
    probs = [c for c in a.columns if c.endswith("_prob")]
    np.testing.assert_allclose(a[probs].to_numpy(float), b[probs].to_numpy(float), atol=1e-5)


def test_cli_scores_and_reports_failures(demo_checkpoint, cohort, tmp_path, capsys) -> None:
    out = tmp_path / "cli.parquet"
    code = main(["score", "--checkpoint", str(demo_checkpoint), "--data", str(cohort), "--out", str(out),
                 "--batch-size", "8", "--device", "cpu", "--quiet"])
    captured = capsys.readouterr()
    assert code == 1  # one bundle could not be scored
    assert "12 patient(s) scored, 0 with no data, 1 failed" in captured.out
    assert "P_BROKEN" in captured.err
    assert pq.read_table(out).num_rows == 13
    assert main(["score", "--checkpoint", str(tmp_path), "--data", str(cohort), "--out", str(out)]) == 2


def test_a_patient_with_no_usable_data_gets_no_number(demo_checkpoint, tiny_cohort: Path, tmp_path) -> None:
    """As Predictor.predict: a bundle with only patient.json is reported as no data, never scored."""
    cohort = tmp_path / "cohort"
    shutil.copytree(tiny_cohort, cohort)
    empty = cohort / "P_EMPTY"
    empty.mkdir()
    (empty / "patient.json").write_text('{"patient_id": "P_EMPTY"}', encoding="utf-8")
    summary = score_cohort(demo_checkpoint, cohort, tmp_path / "preds.parquet", batch_size=4, device="cpu",
                           progress=False)
    [(folder, message)] = summary.no_data
    assert Path(folder).name == "P_EMPTY" and "no data" in message
    assert summary.failed == []  # nothing to score is an outcome, not a failure
    table = pq.read_table(tmp_path / "preds.parquet").to_pandas()
    row = table[table["patient_id"] == "P_EMPTY"].iloc[0]
    assert all(row[c] is None or np.isnan(row[c]) for c in table.columns if c.endswith(("_prob", "_logit")))
    assert table["error"].isna().sum() == len(table) - 1
    # the command says so on stderr and still exits 0 (a real failure exits 1, see the test above)
    code = main(["score", "--checkpoint", str(demo_checkpoint), "--data", str(cohort), "--out",
                 str(tmp_path / "cli.parquet"), "--device", "cpu", "--quiet"])
    assert code == 0


def test_a_patient_whose_every_modality_is_out_of_domain_is_not_counted_as_scored(demo_checkpoint, tiny_cohort: Path,
                                                                               tmp_path) -> None:
    """Issue 17: the summary counts only patients given a prediction; one whose every modality was left out
    (out of domain) is listed with the patients without data, with the reason, and its row has no number."""
    from medfuse_core.runtime import checkpoint as ckpt
    from medfuse_core.runtime.domain import Domain, ModalityDomain
    from medfuse_core.train.domain_fit import encoder_outputs

    folder = tmp_path / "checkpoint"
    shutil.copytree(demo_checkpoint, folder)
    predictor = Predictor.load(folder, device="cpu")
    records = [read_bundle(f) for f in find_bundles(tiny_cohort)]
    features, _ = predictor.featurize(records)
    outputs, _ = encoder_outputs(predictor.model, features)
    # every modality's distance (>= 0) is beyond a threshold of -1: everything is out of domain
    nothing_fits = Domain({m: ModalityDomain(np.zeros(v.shape[1]), np.eye(v.shape[1]), -1.0) for m, v in outputs.items()},
                          0.05)
    config = ckpt.read_config(folder)
    config.pop("format_version", None)
    config["domain"] = nothing_fits.save(folder)
    ckpt.save_config(folder, config)
    summary = score_cohort(folder, tiny_cohort, tmp_path / "preds.parquet", batch_size=5, device="cpu", progress=False)
    with_data = [r for r in records if r.present_modalities]
    assert with_data and summary.scored == 0
    assert sorted(Path(f).name for f, _ in summary.no_data) == sorted(Path(f).name for f in find_bundles(tiny_cohort))
    reasons = [m for _, m in summary.no_data]
    assert sum("did not look like the data the model was trained on" in m for m in reasons) == len(with_data)
    assert summary.describe().startswith(f"0 patient(s) scored, {len(records)} with no data")
    table = pq.read_table(tmp_path / "preds.parquet").to_pandas()
    assert set(table["status"]) == {"insufficient data"}
    assert all(row[c] is None or np.isnan(row[c]) for _, row in table.iterrows() for c in table.columns
               if c.endswith("_prob"))
