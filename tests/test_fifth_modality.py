"""The registry's proof: a fifth modality (a short numeric waveform) declared here, in the tests only,
goes through featurise -> train one epoch -> exact group contributions -> explain JSON -> validate, and
its checkpoint reloads, without any library file knowing about it.

Everything the waveform needs is in this file: a loader, a featuriser, an encoder (config + class) and
one registry entry; its evidence uses the library's generic input attribution.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medfuse_core.explain import explain, group_contributions
from medfuse_core.features.batch import collate
from medfuse_core.features.featurize import Featurizer
from medfuse_core.modalities import REGISTRY, ModalitySpec
from medfuse_core.models.model import MedFuseLens
from medfuse_core.predictor import Predictor
from medfuse_core.problems import Problem, warning
from medfuse_core.runtime import checkpoint as ckpt
from medfuse_core.sources.bundle import find_bundles, read_bundle
from medfuse_core.sources.synth import LABEL_NAMES, generate_cohort
from medfuse_core.sources.validate import validate_bundle
from medfuse_core.train.loop import TrainConfig, train
from tests.model_fixtures import tiny_config

KEY = "waveform"
LENGTH = 16
FILE = "waveform.csv"


# ------------------------------------------------------------------- the modality, tests only


def load_waveform(folder: Path, problems: list[Problem]) -> np.ndarray | None:
    """waveform.csv: one number per line; unreadable lines are skipped with a warning naming the line."""
    path = Path(folder) / FILE
    if not path.is_file():
        return None
    values = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            values.append(float(line))
        except ValueError:
            problems.append(warning(str(path), f"line {number}", f"expected a number, found {line!r}"))
    return np.asarray(values, dtype=np.float32)


def featurize_waveform(record, spec) -> tuple[np.ndarray, bool]:
    """The first LENGTH samples (zero-padded), and whether the patient has a waveform."""
    data = record.extra.get(KEY)
    out = np.zeros(LENGTH, dtype=np.float32)
    if data is None or not len(data):
        return out, False
    out[: min(LENGTH, len(data))] = data[:LENGTH]
    return out, True


@dataclass
class WaveformEncoderConfig:
    length: int = LENGTH
    output_dim: int = 8


class WaveformEncoder(nn.Module):
    def __init__(self, config: WaveformEncoderConfig):
        super().__init__()
        self.output_dim = config.output_dim
        self.net = nn.Sequential(nn.Linear(config.length, 16), nn.GELU(), nn.Linear(16, config.output_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


SPEC = ModalitySpec(
    key=KEY, display_name="Waveform", long_name="waveform", code="WAVE", panel_title="Waveform",
    evidence_unit="samples", colour="#000000", bundle_files=(FILE,),
    loader=f"{__name__}:load_waveform", featurizer=f"{__name__}:featurize_waveform",
    config_class=f"{__name__}:WaveformEncoderConfig", encoder_class=f"{__name__}:WaveformEncoder",
    evidence="medfuse_core.explain.input_attribution:input_attribution",
)


@pytest.fixture(scope="module")
def registered():
    REGISTRY.register(SPEC)
    yield SPEC
    REGISTRY.unregister(KEY)


@pytest.fixture(scope="module")
def cohort(registered, tmp_path_factory) -> Path:
    """A synthetic cohort where most patients also have a waveform whose level follows label 0."""
    out = tmp_path_factory.mktemp("five_modalities")
    generate_cohort(16, seed=5, out_dir=out, image_size=64)
    rng = np.random.default_rng(0)
    for i, folder in enumerate(find_bundles(out)):
        if i % 4 == 3:
            continue  # some patients have no waveform
        labels = json.loads((folder / "patient.json").read_text()).get("labels") or {}
        level = 2.0 * float(labels.get(LABEL_NAMES[0], 0)) - 1.0
        wave = level + 0.1 * rng.standard_normal(LENGTH + 4)
        (folder / FILE).write_text("\n".join(f"{v:.4f}" for v in wave) + "\n")
    bad = find_bundles(out)[1]
    (bad / FILE).write_text((bad / FILE).read_text() + "not-a-number\n")
    return out


def test_fifth_modality_end_to_end(cohort: Path, tmp_path: Path) -> None:
    folders = find_bundles(cohort)
    records = [read_bundle(f) for f in folders]
    assert sum(r.has(KEY) for r in records) == 12 and KEY in records[0].present_modalities

    # featurise: the registered modality follows the built-in four
    featurizer = Featurizer.fit(records, LABEL_NAMES, image_size=32, cache_dir=tmp_path / "embeddings")
    assert featurizer.spec.modalities == ["labs", "notes", "vitals", "image", KEY]
    features, _ = featurizer.featurize_many(records, progress=False)
    assert all(f.present.shape == (5,) and f.extra[KEY].shape == (LENGTH,) for f in features)
    assert [bool(f.present[4]) for f in features] == [r.has(KEY) for r in records]

    # train one epoch: a model config naming the modality gets its encoder from the registry
    config = tiny_config(featurizer)
    config.modalities = list(featurizer.spec.modalities)
    config.extra = {KEY: {"output_dim": 8}}
    torch.manual_seed(0)
    model = MedFuseLens(config)
    assert isinstance(model.encoders()[KEY], WaveformEncoder)
    assert model.token_names == ("specific:labs", "specific:notes", "specific:vitals", "specific:image",
                                 f"specific:{KEY}", "shared")
    before = [p.detach().clone() for p in model.encoders()[KEY].parameters()]
    result = train(model, features[:12], features[12:], TrainConfig(epochs=1, batch_size=4, progress=False, device="cpu"),
                   tmp_path / "run")
    assert len(result.history) == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, model.encoders()[KEY].parameters()))  # it learned

    # exact group contributions over the six tokens
    model.eval()
    batch = collate(features)
    groups = group_contributions(model, batch)
    assert groups.token_names == model.token_names and groups.values.shape == (16, len(LABEL_NAMES), 6)
    assert float(groups.completeness_gap().abs().max()) < 1e-5
    without = ~batch.present[:, 4]
    assert without.any() and float(groups.values[without][..., 4].abs().max()) == 0.0  # absent: exactly 0

    # explain JSON: the modality's presence, token and evidence are in it
    predictor = Predictor(model, featurizer, {"calibration": {"temperature": 1.0, "thresholds": {}}})
    record = next(r for r in records if all(r.has(m) for m in featurizer.spec.modalities))
    label = LABEL_NAMES[0]
    data = json.loads(explain(record, predictor, labels=[label], n_steps=4, top_sentences=0).to_json())
    assert data["present"][KEY] is True
    entry = data["per_label"][label]
    assert set(entry["groups"]) == set(model.token_names)
    assert sum(entry["groups"].values()) == pytest.approx(entry["logit"] - entry["empty_logit"], abs=1e-5)
    assert len(entry[KEY]["attribution"]) == LENGTH and KEY in entry["convergence_delta"]
    assert entry[KEY]["total"] == pytest.approx(sum(entry[KEY]["attribution"]), abs=1e-9)

    # the checkpoint (config.json + safetensors) reloads with the modality and gives the same logits
    run = tmp_path / "checkpoint"
    ckpt.save_weights(model, run)
    ckpt.save_config(run, {"model": config.to_dict(), "features": featurizer.spec.to_dict(),
                           "calibration": {"temperature": 1.0, "thresholds": {}}})
    reloaded = Predictor.load(run, device="cpu", cache_dir=tmp_path / "embeddings")
    with torch.no_grad():
        np.testing.assert_allclose(reloaded.predict_features(features), model(batch).logits.numpy(), atol=1e-6)

    # validate: the waveform file is a known bundle entry; its bad line is a warning, the patient is kept
    report, kept = validate_bundle(folders[1])
    assert kept is not None and kept.has(KEY) and KEY in report.modalities
    assert any(p.file.endswith(FILE) and "not-a-number" in p.message for p in report.problems)
    assert not any("unexpected entry" in p.message for p in report.problems)
