"""Faithfulness benchmark: the route pair on hand-made contributions, the localisation scores against
hand-made truth, deletion through the model's real input (checked against re-featurized records) with a
toy model whose driving lab item is known, and an end-to-end run of benchmarks/faithfulness.py on the
tiny cohort."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from medfuse_core.explain.evidence import EvidenceExplainer
from medfuse_core.benchmarking.faithfulness import (
    SyntheticCase,
    _blank_vitals_row,
    delete_units,
    deletion_drops,
    deletion_units,
    lab_hit,
    note_hit,
    pointing_hit,
    spans_overlap,
    summarise_curve,
    top_unit,
    vitals_hit,
)
from medfuse_core.benchmarking.routes import route_accuracy
from medfuse_core.features.batch import PatientFeatures
from medfuse_core.models.fusion import SHARED_TOKEN
from medfuse_core.models.model import MedFuseLens
from medfuse_core.record import Labs, PatientRecord, Vitals
from medfuse_core.sources.synth import LABEL_NAMES
from medfuse_core.sources.vital_channels import CHANNEL_NAMES
from medfuse_core.runtime import checkpoint as ckpt
from medfuse_core.train.loop import TrainConfig
from tests.model_fixtures import tiny_config


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------ route accuracy

RENAL, COPD, CHF, HTN = (LABEL_NAMES.index(n) for n in (
    "Acute and unspecified renal failure", "Chronic obstructive pulmonary disease and bronchiectasis",
    "Congestive heart failure; nonhypertensive", "Essential hypertension"))
LABS, NOTES, VITALS, IMAGE = range(4)


def test_route_pair_on_hand_made_contributions() -> None:
    b, k = 6, len(LABEL_NAMES)
    values = np.zeros((b, k, 5))
    labels = np.zeros((b, k))
    positive = np.zeros((b, k), dtype=bool)
    present = np.ones((b, 4), dtype=bool)
    # single route (renal -> labs): patients 0, 1 true positives; 0 right, 1 wrong (notes biggest)
    labels[[0, 1, 2, 3], RENAL] = 1
    positive[[0, 1, 3], RENAL] = True
    values[0, RENAL] = [2.0, 0.5, 0.1, 0.0, 1.0]
    values[1, RENAL] = [0.3, 0.9, 0.1, 0.0, 0.2]
    values[2, RENAL] = [0.0, 5.0, 0.0, 0.0, 0.0]  # missed by the model: not a true positive, excluded
    values[3, RENAL] = [0.0, 5.0, 0.0, 0.0, 0.0]
    present[3, LABS] = False  # route modality absent: excluded
    positive[4, RENAL] = True  # false positive: excluded
    values[4, RENAL] = [0.0, 5.0, 0.0, 0.0, 0.0]
    # COPD (notes): one true positive, right
    labels[5, COPD], positive[5, COPD] = 1, True
    values[5, COPD] = [0.1, 3.0, 0.0, 0.0, 2.0]
    # shared route (CHF: labs, notes, image): shared >= half of the total |contribution|
    labels[[0, 1, 2, 3], CHF] = 1
    positive[[0, 1, 2, 3], CHF] = True
    values[0, CHF] = [1.0, -1.0, 0.0, 0.0, 2.0]  # |shared| 2 of 4: exactly half counts
    values[1, CHF] = [1.0, 1.0, 0.0, 0.0, 1.9]  # 1.9 of 3.9: not
    values[2, CHF] = [0.0, 0.0, 0.0, 0.0, -3.0]  # a negative shared value counts by magnitude
    values[3, CHF] = [0.0, 0.0, 0.0, 0.0, 9.0]
    present[3, [NOTES, IMAGE]] = False  # only labs of CHF's three route modalities: excluded
    r = route_accuracy(values, labels, positive, present, list(LABEL_NAMES))
    assert (r.n_single, r.n_shared) == (3, 3)
    assert r.single == pytest.approx(2 / 3) and r.shared == pytest.approx(2 / 3)
    assert r.per_disease[LABEL_NAMES[RENAL]] == {"route": "labs", "accuracy": 0.5, "n": 2}
    assert r.per_disease[LABEL_NAMES[COPD]]["accuracy"] == 1.0
    assert math.isnan(r.per_disease[LABEL_NAMES[HTN]]["accuracy"])
    assert SHARED_TOKEN == 4


# ----------------------------------------------------------------------------- localisation


def test_localisation_scores_on_hand_made_truth() -> None:
    planted = [{"itemid": 50963, "item": "NTproBNP"}, {"itemid": None, "item": "Lactate"}]
    assert lab_hit("itemid:50963", "NT-proBNP", planted)
    assert lab_hit("name:lactate", "Lactate", planted)
    assert lab_hit("itemid:99999", "lactate", planted)  # same display name
    assert not lab_hit("itemid:50912", "Creatinine", planted)

    assert spans_overlap(0, 10, 9, 20) and not spans_overlap(0, 10, 10, 20)
    spans = [(0, 97, 111), (2, 5, 9)]
    assert note_hit((0, 90, 100), spans)
    assert not note_hit((1, 90, 100), spans)  # same characters, another note
    assert not note_hit((0, 111, 140), spans)  # touches the span's end only
    assert note_hit((2, 0, 6), spans)

    assert vitals_hit("Heart Rate", ["Heart Rate", "Temperature"]) and not vitals_hit("Glucose", ["Heart Rate"])

    heat = np.zeros((6, 8))
    mask = np.zeros((6, 8), dtype=bool)
    mask[1:3, 2:5] = True
    heat[2, 4] = 1.0
    assert pointing_hit(heat, mask) is True
    heat[5, 7] = 2.0
    assert pointing_hit(heat, mask) is False
    assert pointing_hit(np.zeros((6, 8)), mask) is None  # flat map: nothing to point with
    with pytest.raises(ValueError):
        pointing_hit(np.zeros((3, 3)), mask)

    assert top_unit([0.5, -2.0, 1.0]) == 2 and top_unit([0.5, -2.0, 1.0], "abs") == 1 and top_unit([]) is None


def test_region_reads_the_mask_png_and_falls_back_to_the_box(tmp_path) -> None:
    (tmp_path / "truth").mkdir()
    m = np.zeros((8, 10), dtype=np.uint8)
    m[2:4, 3:6] = 255
    Image.fromarray(m).save(tmp_path / "truth" / "image_00_effusion.png")
    case = SyntheticCase(PatientRecord("p"), folder=tmp_path)
    entry = {"box": [0, 0, 1, 1], "mask": "truth/image_00_effusion.png"}
    assert np.array_equal(case.region(entry, (8, 10)), m > 0)
    big = case.region(entry, (16, 20))  # film stored at twice the size
    assert big.sum() == 4 * (m > 0).sum() and big[5, 7] and not big[0, 0]
    box = case.region({"box": [1, 2, 3, 5], "mask": "truth/missing.png"}, (8, 10))
    assert box.sum() == 6 and box[1:3, 2:5].all()
    in_memory = SyntheticCase(PatientRecord("p"), masks={"truth/x.png": m > 0})
    assert np.array_equal(in_memory.region({"box": [0, 0, 1, 1], "mask": "truth/x.png"}, (8, 10)), m > 0)


# ---------------------------------------------------------------------- deletion: the real input


def _with_labs(record: PatientRecord, table) -> PatientRecord:
    return PatientRecord(record.patient_id, record.age, record.sex, record.index_time, Labs(table), record.vitals,
                         record.notes, record.images, record.labels)


def test_deleting_a_lab_item_or_vitals_channel_equals_featurizing_the_record_without_it(small_cohort) -> None:
    featurizer, features, records, evidence = small_cohort
    i = next(j for j, f in enumerate(features) if len(f.lab_items) >= 3 and f.present[2])
    f, record = features[i], records[i]

    table = record.labs.table
    ids = featurizer.vocabulary.ids_of(table["itemid"], table["item"])
    item_id = int(f.lab_items[1])
    fewer, _ = featurizer.featurize(_with_labs(record, table[ids != item_id].reset_index(drop=True)))
    deleted = delete_units(f, "labs", [1])
    rows = lambda x: sorted(zip(x.lab_items.tolist(), map(tuple, x.lab_values.tolist())))  # noqa: E731
    assert rows(deleted) == rows(fewer) and len(deleted.lab_items) == len(f.lab_items) - 1

    blank = _blank_vitals_row(featurizer)
    channels = deletion_units(f, "vitals")
    assert channels and set(channels) <= set(range(len(CHANNEL_NAMES)))
    c = channels[0]
    vt = record.vitals.table
    without = PatientRecord(record.patient_id, record.age, record.sex, record.index_time, record.labs,
                            Vitals(vt[vt["channel"] != CHANNEL_NAMES[c]].reset_index(drop=True)), record.notes,
                            record.images, record.labels)
    refeat, _ = featurizer.featurize(without)
    np.testing.assert_allclose(delete_units(f, "vitals", [c], blank_vitals=blank).vitals, refeat.vitals, atol=1e-6)
    assert c not in deletion_units(refeat, "vitals")

    gone = delete_units(f, "labs", list(range(len(f.lab_items))))
    assert not gone.present[0] and len(gone.lab_items) == 0  # as the featurizer marks a patient without labs
    assert not delete_units(f, "vitals", channels, blank_vitals=blank).present[2]


def test_image_units_are_patches_inside_the_film_and_deletion_sets_the_film_mean(small_cohort) -> None:
    featurizer, features, records, evidence = small_cohort
    i = next(j for j, f in enumerate(features) if f.present[3])
    f, ix = features[i], evidence[i]
    g = ix.image_geometry
    patches = deletion_units(f, "image", ix, patch=4)
    covered = np.zeros(f.image.shape[1:], dtype=int)
    for r0, c0, r1, c1 in patches:
        covered[r0:r1, c0:c1] += 1
    film = np.zeros_like(covered)
    film[g.top : g.top + g.height, g.left : g.left + g.width] = 1
    assert np.array_equal(covered, film)  # a partition of the film, no letterbox
    out = delete_units(f, "image", patches[:2])
    r0, c0, r1, c1 = patches[1]
    assert (out.image[0, r0:r1, c0:c1] == 0).all() and out.image.sum() != f.image.sum()
    assert np.array_equal(out.image[0, patches[2][0] : patches[2][2], patches[2][1] : patches[2][3]],
                          f.image[0, patches[2][0] : patches[2][2], patches[2][1] : patches[2][3]])


# ------------------------------------------------------------------ deletion: a toy whose truth is known


class _ToyLabEncoder(nn.Module):
    """summary = sum over tokens of weight[item] * last value: item contributions known exactly."""

    def __init__(self, weights: torch.Tensor):
        super().__init__()
        self.value_embedding = nn.Linear(4, 1, bias=False)
        with torch.no_grad():
            self.value_embedding.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
        self.register_buffer("weights", weights)

    def forward(self, items, values, mask=None):
        return ((self.value_embedding(values)[..., 0] * self.weights[items]) * (items > 0)).sum(1, keepdim=True), None


@dataclass
class _Out:
    logits: torch.Tensor


class _ToyModel(nn.Module):
    labels = ["driven"]

    def __init__(self, weights):
        super().__init__()
        self.lab_encoder = _ToyLabEncoder(weights)

    def modality_features(self, batch, present):
        return {"labs": self.lab_encoder(batch.lab_items, batch.lab_values)[0]}

    def forward_features(self, features, present, token_keep=None):
        return _Out(features["labs"])

    def forward(self, batch, present=None, token_keep=None):
        return self.forward_features(self.modality_features(batch, batch.present), batch.present)


def _toy_patient(n: int = 8) -> tuple[PatientFeatures, np.ndarray]:
    values = np.zeros((n, 4), dtype=np.float32)
    values[:, 0] = 1.0
    f = PatientFeatures("toy", np.array([True, False, False, False]), np.arange(1, n + 1), values,
                        np.zeros((0, 8), np.float32), np.zeros((48, 76), np.float32), np.zeros((1, 8, 8), np.float32),
                        np.array([1.0], np.float32))
    weights = np.array([0.0, 4.0, 0.1, 0.2, 2.5, -0.3, 0.05, 1.5, 0.0], dtype=np.float32)[: n + 1]
    return f, weights


def test_deletion_of_the_driving_items_beats_random_and_a_bad_ranking_does_not() -> None:
    f, weights = _toy_patient()
    model = _ToyModel(torch.from_numpy(weights)).eval()
    truth = weights[1:].astype(np.float64)  # each item's exact contribution (value 1 x weight)
    counts = [1, 2, 3]
    top, rnd = deletion_drops(model, f, "labs", truth, 0, counts, np.random.default_rng(0), draws=20)
    np.testing.assert_allclose(top, [4.0, 6.5, 8.0], atol=1e-5)  # the top-k contributions, exactly
    assert np.all(top > rnd)
    # attributions from the explainer (IG is exact on a linear model) give the same ranking
    from medfuse_core.benchmarking.faithfulness import _scores

    explainer = EvidenceExplainer(model, f, type("Ix", (), {"lab_keys": [f"k{i}" for i in range(8)],
                                                           "lab_names": [f"n{i}" for i in range(8)]})())
    scores, labs = _scores(explainer, "labs", 0, 16, "gradcam", f, explainer.index, 8)
    np.testing.assert_allclose(scores, truth, atol=1e-4)

    curve = summarise_curve("labs", counts, top[None], rnd[None])
    assert curve.top_beats_random and curve.area_top == pytest.approx(np.mean([4.0, 6.5, 8.0]), abs=1e-5)
    bad_top, bad_rnd = deletion_drops(model, f, "labs", -truth, 0, counts, np.random.default_rng(0), draws=20)
    bad = summarise_curve("labs", counts, bad_top[None], bad_rnd[None])
    assert not bad.top_beats_random and bad.area_top < bad.area_random

    # more units asked than the patient has: NaN at that step, and the mean skips the case there
    t2, r2 = deletion_drops(model, f, "labs", truth, 0, [1, 9], np.random.default_rng(1), draws=2)
    assert not math.isnan(t2[0]) and math.isnan(t2[1]) and math.isnan(r2[1])
    mixed = summarise_curve("labs", [1, 9], np.stack([t2, t2]), np.stack([r2, r2]))
    assert mixed.n == [2, 0] and mixed.top_beats_random and mixed.area_top == pytest.approx(t2[0])


# --------------------------------------------------------------------- end to end on the tiny cohort


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, small_cohort):
    featurizer = small_cohort[0]
    torch.manual_seed(3)
    model = MedFuseLens(tiny_config(featurizer)).eval()
    folder = tmp_path_factory.mktemp("faith_run")
    ckpt.save_weights(model, folder)
    thresholds = {name: 0.0 for name in model.labels}  # everyone positive: every planted case is scored
    ckpt.save_config(folder, {"model": model.config.to_dict(), "features": featurizer.spec.to_dict(),
                              "train": asdict(TrainConfig()),  # the training record: its loss weights are reported
                              "calibration": {"temperature": 1.0, "thresholds": thresholds}})
    return folder


def test_benchmark_script_on_the_tiny_cohort(run_dir, tiny_cohort, tmp_path) -> None:
    from benchmarks.faithfulness import main

    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps([{"checkpoint": str(run_dir), "name": "point"}]))
    out = tmp_path / "f.json"
    rc = main(["--checkpoint", str(run_dir), "--name", "ours", "--data", str(tiny_cohort), "--max-patients", "6",
               "--n-steps", "4", "--draws", "2", "--sweep-json", str(sweep), "--out", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["n_patients"] == 6 and len(r["checkpoints"]) == 1
    c = r["checkpoints"][0]
    routes = c["route_accuracy"]
    assert routes["n_single"] + routes["n_shared"] > 0
    for kind in ("single_route", "shared_route"):
        assert routes[kind] is None or 0.0 <= routes[kind] <= 1.0
    assert c["loss"]["vclub_weight"] == pytest.approx(0.1) and c["variant"] == "medfuse_lens"
    scored = 0
    for m, x in c["localisation"].items():
        assert 0 <= x["hits"] <= x["n"] and 0 <= x["hits_abs"] <= x["n"] and x["not_visible"] >= 0
        assert (x["hit_rate"] is None) == (x["n"] == 0)
        assert sum(d["n"] for d in x["per_disease"].values()) == x["n"]
        scored += x["n"]
    assert scored > 0
    ran = 0
    for m, d in c["deletion"].items():
        assert len(d["k"]) == len(d["n"]) == len(d["top"]) == len(d["random"]) == 5
        assert isinstance(d["top_beats_random"], bool)
        if d["n_cases"]:
            ran += 1
            assert all(v is not None and math.isfinite(v) for v in d["top"] + d["random"] + [d["area_top"], d["area_random"]]
                       if v is not None) and d["area_top"] is not None
    assert ran >= 3  # labs, notes, vitals at least
    assert [s["name"] for s in r["sweep"]] == ["ours", "point"]
    assert r["sweep"][1]["single_route"] == routes["single_route"]  # same checkpoint, same pair
    md = out.with_suffix(".md").read_text()
    assert "Route accuracy" in md and "| ours |" in md and "Disentanglement sweep" in md
