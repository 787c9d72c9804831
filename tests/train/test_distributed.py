"""Data-parallel training: `torchrun --nproc_per_node=2 -m medfuse_core train` (gloo, CPU) follows
the same per-epoch loss trajectory as one process with the same global batch.

Exact equivalence needs every term of the loss to be a mean over patients, so the test configs turn
off the terms computed over a batch (InfoNCE, vCLUB, consensus, decorrelation: each rank would see
only its rows) and the dropout layers (masks drawn per rank). Modality and token dropout stay on:
they are drawn for the global batch alike on every rank. The end-to-end run uses a cohort without
images, as BatchNorm's statistics would be per rank; with frozen encoders (BatchNorm in eval mode)
the images stay. The train split has an even number of patients, so no rank pads its share.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from medfuse_core.features.batch import PatientFeatures, collate
from medfuse_core.train.distributed import World, epoch_order, shard_loader
from medfuse_core.train.loop import TrainConfig, _train_batches
from medfuse_core.train.run import SplitConfig, run_training, split_of

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]
SPLIT = {"val_fraction": 0.3, "test_fraction": 0.0, "seed": 2}
CONFIG = {
    "model": {
        "labs": {"d_model": 16, "layers": 1, "heads": 2, "output_dim": 16, "dropout": 0.0},
        "notes": {"dropout": 0.0},
        "vitals": {"hidden": 16, "layers": 1, "dropout": 0.0},
        "image": {"hidden_sizes": [8, 16], "depths": [1, 1], "embedding_size": 8},
        "fusion": {"d_model": 16, "layers": 1, "heads": 2, "dropout": 0.0},
    },
    "train": {"epochs": 3, "batch_size": 4, "seed": 0, "progress": False, "device": "cpu", "patience": 100,
              "loss": {"infonce_weight": 0.0, "vclub_weight": 0.0, "consensus_weight": 0.0, "decorrelation_weight": 0.0,
                       "shared_aux_weight": 0.5, "parsimony_weight": 0.1, "modality_dropout": 0.3,
                       "token_dropout": 0.15}},
    "split": SPLIT,
    "image_size": 32,
    "max_sentences": 8,
}


def _fake(n: int) -> list[PatientFeatures]:
    """Patients whose vitals hold their own index (to read the order back from batches)."""
    return [PatientFeatures(str(i), np.ones(4, bool), np.zeros(0, np.int64), np.zeros((0, 3), np.float32),
                            np.zeros((0, 2), np.float32), np.full((1, 1), i, np.float32), np.zeros((1, 2, 2), np.float32),
                            np.zeros(1, np.float32)) for i in range(n)]


def test_ranks_split_exactly_the_single_process_batches() -> None:
    features = _fake(11)
    config = TrainConfig(batch_size=4, seed=3, progress=False)
    cpu = torch.device("cpu")
    for epoch in range(2):
        single = [b.vitals[:, 0, 0].long().tolist() for b, *_ in _train_batches(features, None, config, epoch, cpu)]
        flat = [i for batch in single for i in batch]
        assert flat == epoch_order(11, 3 + epoch)
        shares = [[b.vitals[:, 0, 0].long().tolist() for b, *_ in _train_batches(features, None, config, epoch, cpu, World(r, 2))]
                  for r in range(2)]
        for i, batch in enumerate(single):  # step i of rank r holds rows r, r + 2, ... of global batch i
            padded = batch + flat[: (-len(batch)) % 2]  # the last batch is padded like DistributedSampler's
            assert shares[0][i] == padded[0::2] and shares[1][i] == padded[1::2]
    loader, order = shard_loader(features, 4, 3, 0, World(1, 2), collate)
    assert len(order) == 12 and sorted(order[:11]) == list(range(11))
    assert [b.size for b in loader] == [2, 2, 2]
    with pytest.raises(ValueError, match="divisible"):
        World(0, 3).local_batch_size(4)


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from medfuse_core.sources.synth import generate_cohort

    root = tmp_path_factory.mktemp("ddp")
    generate_cohort(20, seed=5, out_dir=root / "images", image_size=64)
    shutil.copytree(root / "images", root / "no_images")
    for folder in (root / "no_images").glob("*/images"):
        shutil.rmtree(folder)
    n_train = sum(split_of(p.name, SplitConfig(**SPLIT)) == "train" for p in (root / "images").glob("P*"))
    assert n_train % 2 == 0, n_train  # 14: no padding, so the two runs see exactly the same batches
    return {"images": root / "images", "no_images": root / "no_images"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(data: Path, out: Path, config: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
               "-m", "medfuse_core", "train", "--data", str(data), "--out", str(out), "--config", str(config), "--quiet"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("best epoch") == 1  # one summary line, from rank 0


@pytest.mark.parametrize("variant", ["end_to_end", "frozen_encoders"])
def test_two_processes_follow_the_single_process_trajectory(cohorts, tmp_path, variant) -> None:
    config = json.loads(json.dumps(CONFIG))
    config["train"]["freeze_encoders"] = variant == "frozen_encoders"
    data = cohorts["no_images" if variant == "end_to_end" else "images"]
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config))
    single = run_training(data, tmp_path / "one", config_file)
    _torchrun(data, tmp_path / "two", config_file)

    history = json.loads((tmp_path / "two" / "history.json").read_text())
    one = [h.train_loss for h in single.history]
    two = [h["train_loss"] for h in history]
    print(f"{variant}: 1 process {np.round(one, 6).tolist()}, 2 processes {np.round(two, 6).tolist()}")
    assert len(two) == len(one) == 3
    np.testing.assert_allclose(two, one, rtol=1e-3)
    assert one[-1] < one[0]  # it trained
    np.testing.assert_allclose([h["val_macro_auprc"] for h in history], [h.val_macro_auprc for h in single.history],
                               atol=1e-3)
    a, b = load_file(str(tmp_path / "one" / "model.safetensors")), load_file(str(tmp_path / "two" / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:  # not the vCLUB estimators: their loss is a mean per modality over the rank's rows
        if name.startswith("mi_estimators."):
            continue
        if name.endswith("self_attn.in_proj_bias"):
            # the key bias adds the same constant to every score of a query, which softmax ignores: its gradient is
            # 0 up to rounding, and Adam scales that rounding noise to lr-sized steps (seen: 1.2e-4 on one entry in
            # a full-suite run). Compare the query and value biases; the key third is not a trajectory.
            third = a[name].shape[0] // 3
            keep = torch.cat([torch.arange(third), torch.arange(2 * third, 3 * third)])
            torch.testing.assert_close(b[name][keep], a[name][keep], rtol=1e-3, atol=1e-4, msg=name)
            continue
        torch.testing.assert_close(b[name], a[name], rtol=1e-3, atol=1e-4, msg=name)
    summary = json.loads((tmp_path / "two" / "config.json").read_text())["summary"]
    assert summary["processes"] == 2 and summary["best_epoch"] == single.best_epoch


def test_two_processes_run_both_stages(cohorts, tmp_path) -> None:
    """Stage 1 (encoders alone) then stage 2 on frozen encoders, data-parallel: the run folder is
    complete and loads. (Not compared with one process: the stage-1 probe head has dropout.)"""
    from medfuse_core.predictor import Predictor
    from medfuse_core.sources.bundle import find_bundles, read_bundle

    config = json.loads(json.dumps(CONFIG))
    config["train"].update(epochs=1, encoder_epochs=1, freeze_encoders=True)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config))
    _torchrun(cohorts["images"], tmp_path / "run", config_file)
    for m in ("labs", "notes", "vitals", "image"):
        assert (tmp_path / "run" / "encoders" / f"{m}.safetensors").is_file()
        assert len(json.loads((tmp_path / "run" / "encoders" / f"{m}.json").read_text())) == 1
    predictor = Predictor.load(tmp_path / "run", device="cpu")
    [prediction] = predictor.predict([read_bundle(find_bundles(cohorts["images"])[0])])
    assert np.isfinite(prediction.probabilities).all()
