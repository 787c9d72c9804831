"""Shared fixtures: the real reference data beside the repo, and a tiny synthetic cohort."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights never come from a hub, in tests least of all
# no background explanations of every demo patient while the other tests run (2 cores in CI); the tests of
# the worker (tests/app/test_explanations.py) start it themselves
os.environ["MEDFUSE_LENS_PRECOMPUTE"] = "0"

REPO_ROOT = Path(__file__).resolve().parents[1]
# a git worktree beside the main checkout may point at the shared data with MEDFUSE_LENS_SHARED_DATA
SHARED_DATA = Path(os.environ.get("MEDFUSE_LENS_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data`: real MIMIC-III demo tables and mimic3-benchmarks resources."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{SHARED_DATA} is missing: CI must run with ../shared beside the repository")
        pytest.skip(f"{SHARED_DATA} not present beside the repository")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-patient synthetic cohort on disk (small images), shared by the tests of a session."""
    from medfuse_core.sources.synth import generate_cohort

    out = tmp_path_factory.mktemp("tiny_cohort")
    generate_cohort(12, seed=11, out_dir=out, image_size=128)
    return out


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the demo cohort the tests generate out of the user's ~/.cache."""
    os.environ["MEDFUSE_LENS_HOME"] = str(tmp_path_factory.mktemp("medfuse_home"))


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory: pytest.TempPathFactory):
    """32 synthetic patients (seed 21) featurized with the real text model; (featurizer, features, records)."""
    from medfuse_core.features.featurize import Featurizer
    from medfuse_core.sources.synth import LABEL_NAMES, generate_patient

    records = [generate_patient(21, i, image_size=64) for i in range(32)]
    cache = tmp_path_factory.mktemp("embeddings")
    featurizer = Featurizer.fit(records, LABEL_NAMES, image_size=32, cache_dir=Path(cache))
    features, evidence = featurizer.featurize_many(records, progress=False)
    return featurizer, features, records, evidence


TINY_RUN_CONFIG = {
    "model": {
        "labs": {"d_model": 16, "layers": 1, "heads": 2, "output_dim": 32},
        "vitals": {"hidden": 32, "layers": 1},
        "image": {"hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1], "embedding_size": 8},
        "fusion": {"d_model": 32, "layers": 1, "heads": 2},
    },
    "train": {"epochs": 2, "batch_size": 16, "seed": 0, "progress": False, "device": "cpu"},
    "split": {"val_fraction": 0.25, "test_fraction": 0.15, "seed": 0},
    "image_size": 64,
    "max_sentences": 16,
}


@pytest.fixture(scope="session")
def demo_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny checkpoint trained on the demo cohort (2 epochs, ~30 s on CPU) with its eval_report.json.

    $MEDFUSE_LENS_TEST_CHECKPOINT reuses an existing run folder instead (faster local iterations).
    The dashboard tests point MEDFUSE_LENS_CHECKPOINT at it, so they never depend on assets/demo_model.
    """
    import json

    reuse = os.environ.get("MEDFUSE_LENS_TEST_CHECKPOINT")
    if reuse:
        return Path(reuse)
    from medfuse_core.demo import demo_cohort_dir
    from medfuse_core.predictor import Predictor
    from medfuse_core.sources.bundle import find_bundles, read_bundle
    from medfuse_core.train.evaluate import evaluate
    from medfuse_core.train.run import run_training

    data = demo_cohort_dir()
    out = tmp_path_factory.mktemp("demo_checkpoint")
    config = out.parent / f"{out.name}_config.json"
    config.write_text(json.dumps(TINY_RUN_CONFIG))
    run_training(data, out, config)
    predictor = Predictor.load(out, device="cpu")
    features, _ = predictor.featurize([read_bundle(f) for f in find_bundles(data)])
    report = evaluate(predictor.model, features, predictor.config["calibration"], bootstrap=10)
    report["split"] = "all"
    (out / "eval_report.json").write_text(json.dumps(report))
    return out


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's tests: on the 2 shared cores one thread is ~20x faster than two
    under contention (measured); restored afterwards. Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def mimic3_bundles(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real MIMIC-III demo imported by the `import mimic3` command (129 admission bundles)."""
    from medfuse_core import cli

    out = tmp_path_factory.mktemp("mimic3_bundles")
    assert cli.main(["import", "mimic3", "--root", str(shared_data / "mimic-iii-demo"), "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="session")
def mimic3_checkpoint(mimic3_bundles: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained on the imported MIMIC-III demo by the `train` command (25 phenotypes + mortality)."""
    import json

    from medfuse_core import cli

    out = tmp_path_factory.mktemp("mimic3_checkpoint")
    config = out.parent / f"{out.name}_config.json"
    run = json.loads(json.dumps(TINY_RUN_CONFIG))
    run["train"].update(epochs=3, encoder_epochs=2, encoder_patience=2)
    run["split"] = {"val_fraction": 0.2, "test_fraction": 0.2, "seed": 0}
    config.write_text(json.dumps(run))
    assert cli.main(["train", "--data", str(mimic3_bundles), "--out", str(out), "--config", str(config), "--quiet"]) == 0
    return out
