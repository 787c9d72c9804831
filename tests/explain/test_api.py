"""explain(record, predictor) -> Explanation: calibrated numbers, exact group contributions, evidence,
the JSON schema and its round trip, and the `explain` CLI on a checkpoint folder and a bundle."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from medfuse_core.cli import main
from medfuse_core.explain import Explanation, explain
from medfuse_core.explain.api import JSON_HEATMAP_MAX, compact_map
from medfuse_core.models.fusion import TOKEN_NAMES
from medfuse_core.models.model import MedFuseLens
from medfuse_core.predictor import Predictor
from medfuse_core.record import Labs
from medfuse_core.sources.bundle import find_bundles
from medfuse_core.runtime import checkpoint as ckpt
from tests.model_fixtures import tiny_config

EVIDENCE_KEYS = {"labs", "note_sentences", "note_tokens", "vitals", "image"}
FAST = {"n_steps": 8, "token_steps": 4, "top_sentences": 1}  # the numbers are checked in test_evidence.py


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def predictor(small_cohort):
    featurizer = small_cohort[0]
    torch.manual_seed(1)
    model = MedFuseLens(tiny_config(featurizer)).eval()
    thresholds = {name: 0.3 for name in model.labels}
    return Predictor(model, featurizer, {"calibration": {"temperature": 1.7, "thresholds": thresholds}})


@pytest.fixture(scope="module")
def record(small_cohort):
    features, records = small_cohort[1], small_cohort[2]
    return records[next(i for i, f in enumerate(features) if f.present.all())]


def test_one_label_has_calibrated_numbers_exact_groups_and_evidence(predictor, record) -> None:
    label = predictor.labels[2]
    e = explain(record, predictor, labels=[label], **FAST)
    assert isinstance(e, Explanation) and e.labels == [label] and list(e.per_label) == [label]
    x = e.per_label[label]
    with torch.no_grad():
        from medfuse_core.features.batch import collate

        logit = float(predictor.model(collate(predictor.featurize([record])[0])).logits[0, 2])
    assert x.logit == pytest.approx(logit, abs=1e-5)
    assert x.probability == pytest.approx(1.0 / (1.0 + math.exp(-x.logit / 1.7)), abs=1e-9)  # calibrated by T
    assert x.threshold == 0.3
    assert tuple(x.groups) == TOKEN_NAMES
    assert sum(x.groups.values()) == pytest.approx(x.logit - x.empty_logit, abs=1e-5)  # completeness
    ev = x.evidence
    assert ev.labs and ev.note_sentences and ev.note_tokens and ev.vitals is not None and ev.image is not None
    film = record.images[ev.image.image_index].pixels
    assert ev.image.heatmap.shape == film.shape  # the dataclass keeps the film's resolution


def test_json_round_trips_with_the_documented_keys(predictor, record) -> None:
    e = explain(record, predictor, labels=predictor.labels[:2], **FAST)
    data = json.loads(e.to_json())
    assert data == e.to_dict()
    assert {"patient_id", "labels", "per_label"} <= set(data)
    assert data["patient_id"] == record.patient_id and data["labels"] == predictor.labels[:2]
    assert set(data["per_label"]) == set(data["labels"])
    for entry in data["per_label"].values():
        assert {"probability", "logit", "empty_logit", "groups"} <= set(entry)
        assert EVIDENCE_KEYS <= set(entry)
        assert set(entry["groups"]) == {"specific:labs", "specific:notes", "specific:vitals", "specific:image", "shared"}
        image = entry["image"]
        assert max(image["shape"]) <= JSON_HEATMAP_MAX and np.array(image["heatmap"]).shape == tuple(image["shape"])
        assert image["film_shape"] == list(record.images[image["image_index"]].pixels.shape)
        assert np.array(entry["vitals_matrix"]["values"]).shape == (48, 17)
        assert entry["labs"][0].keys() >= {"key", "name", "attribution", "value"}
        assert entry["note_sentences"][0].keys() >= {"note_index", "start", "end", "text", "attribution"}
    json.loads(e.to_json(), parse_constant=lambda c: pytest.fail(f"non-finite JSON value {c}"))


def test_absent_modalities_get_zero_groups_and_no_evidence(predictor, record) -> None:
    r = copy.deepcopy(record)
    r.labs = Labs()
    r.images = []
    e = explain(r, predictor, labels=[predictor.labels[0]], **FAST)
    x = e.per_label[predictor.labels[0]]
    assert e.present == {"labs": False, "notes": True, "vitals": True, "image": False}
    assert x.groups["specific:labs"] == 0.0 and x.groups["specific:image"] == 0.0
    assert x.groups["specific:notes"] != 0.0
    d = e.to_dict()["per_label"][predictor.labels[0]]
    assert d["labs"] == [] and d["image"] is None and d["note_sentences"]


def test_without_evidence_and_with_a_bad_label(predictor, record) -> None:
    e = explain(record, predictor, evidence=False)
    assert e.labels == predictor.labels and not e.evidence
    d = e.to_dict()["per_label"][predictor.labels[-1]]
    assert all(d[k] in ([], None) for k in EVIDENCE_KEYS)
    with pytest.raises(ValueError, match="unknown label"):
        explain(record, predictor, labels=["not a label"])


def test_compact_map_block_averages_to_at_most_64() -> None:
    m = np.arange(300 * 120, dtype=np.float32).reshape(300, 120)
    small = compact_map(m)
    assert small.shape == (64, 26)
    assert small.mean() == pytest.approx(m.mean(), rel=1e-3)
    assert compact_map(m[:10, :10]).shape == (10, 10)


# ------------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, predictor):
    folder = tmp_path_factory.mktemp("run")
    ckpt.save_weights(predictor.model, folder)
    ckpt.save_config(folder, {"model": predictor.model.config.to_dict(), "features": predictor.featurizer.spec.to_dict(),
                              "calibration": predictor.config["calibration"]})
    return folder


def test_cli_writes_the_explanation(run_dir, tiny_cohort, tmp_path, capsys) -> None:
    bundle = find_bundles(tiny_cohort)[0]
    out = tmp_path / "sub" / "x.json"
    label = "In-hospital mortality"
    rc = main(["explain", "--checkpoint", str(run_dir), "--patient", str(bundle), "--out", str(out), "--label", label])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["labels"] == [label] and set(data["per_label"]) == {label}
    assert set(data["per_label"][label]["groups"]) == set(TOKEN_NAMES)
    assert str(out) in capsys.readouterr().out


def test_cli_writes_the_insufficient_data_state_for_a_patient_without_data(run_dir, tiny_cohort, tmp_path, capsys):
    """No usable modality is an outcome (issue 17): the JSON says the state, the reason and what was read, so a
    script explaining a worklist gets one file per patient; the exit status 1 still tells a shell."""
    import shutil

    bundle = tmp_path / "EMPTY"
    shutil.copytree(find_bundles(tiny_cohort)[0], bundle)
    for child in bundle.iterdir():  # only patient.json is left: no labs, notes, vitals or film
        if child.name != "patient.json":
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    out = tmp_path / "empty.json"
    rc = main(["explain", "--checkpoint", str(run_dir), "--patient", str(bundle), "--out", str(out)])
    assert rc == 1
    data = json.loads(out.read_text())
    assert data["state"] == "insufficient data" and data["no_data"].startswith("no data: nothing the model can use")
    assert "labels" not in data and "probability" not in out.read_text()
    assert not any(m["read"] for m in data["coverage"]["modalities"].values())
    assert str(out) in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--patient", "--checkpoint"])
def test_cli_reports_a_missing_folder_in_one_line(run_dir, tiny_cohort, tmp_path, capsys, flag) -> None:
    args = {"--checkpoint": str(run_dir), "--patient": str(find_bundles(tiny_cohort)[0])}
    args[flag] = str(tmp_path / "missing")
    rc = main(["explain", *[a for kv in args.items() for a in kv], "--out", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert rc == 2 and not (tmp_path / "x.json").exists()
    assert err.strip().count("\n") == 0 and flag in err and "missing" in err and "Traceback" not in err


def test_cli_rejects_an_unknown_label(run_dir, tiny_cohort, tmp_path, capsys) -> None:
    rc = main(["explain", "--checkpoint", str(run_dir), "--patient", str(find_bundles(tiny_cohort)[0]),
               "--out", str(tmp_path / "x.json"), "--label", "nope"])
    assert rc == 2 and "--label 'nope'" in capsys.readouterr().err


def test_cli_image_methods_are_the_explainers() -> None:
    """The CLI lists the image methods by name (its parser is built without torch); they must stay equal."""
    from medfuse_core.cli import build_parser
    from medfuse_core.explain.evidence import DEFAULT_IMAGE_METHOD, IMAGE_METHODS

    parser = build_parser()
    explain_parser = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith("explain"))
    option = next(a for a in explain_parser._actions if "--image-method" in a.option_strings)
    assert tuple(option.choices) == IMAGE_METHODS and option.default == DEFAULT_IMAGE_METHOD
