"""Uploaded checkpoints (medfuse_core/runtime/checkpoint.py): only config.json + model.safetensors, the config
checked key by key, the weights' header against the model the config builds; pickle refused."""

from __future__ import annotations

import copy
import io
import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from medfuse_core.predictor import Predictor
from medfuse_core.runtime.checkpoint import (CONFIG_FILE, WEIGHTS_FILE, check_checkpoint_files, check_config,
                                           install_checkpoint)


@pytest.fixture(scope="module")
def files(demo_checkpoint: Path) -> dict[str, bytes]:
    return {name: (demo_checkpoint / name).read_bytes() for name in (CONFIG_FILE, WEIGHTS_FILE)}


@pytest.fixture(scope="module")
def config(files: dict[str, bytes]) -> dict:
    return json.loads(files[CONFIG_FILE])


def problems_of(check) -> list[tuple[str, str, str]]:
    return [(p.file, p.field, p.message) for p in check.problems]


def test_a_trained_checkpoint_passes_and_installs_loadable(files: dict[str, bytes], demo_checkpoint: Path,
                                                           tmp_path: Path) -> None:
    check = install_checkpoint(files, tmp_path / "ckpt")
    assert check.ok and check.problems == [] and check.config["model"]["labels"]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    installed = Predictor.load(tmp_path / "ckpt", device="cpu")
    original = Predictor.load(demo_checkpoint, device="cpu")
    for (name, a), (_, b) in zip(installed.model.state_dict().items(), original.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_pickle_files_are_refused_by_name_and_by_content(files: dict[str, bytes], tmp_path: Path) -> None:
    state = load_safetensors(files[WEIGHTS_FILE])
    buffer = io.BytesIO()
    torch.save(state, buffer)
    for name, data in [("model.pt", buffer.getvalue()), ("pytorch_model.bin", buffer.getvalue()),
                       ("weights.pkl", pickle.dumps({"a": 1})), ("innocent.dat", pickle.dumps([1, 2]))]:
        check = install_checkpoint({**files, name: data}, tmp_path / "out")
        assert not check.ok and not (tmp_path / "out").exists()
        assert problems_of(check)[0][:2] == (name, "")
        assert "refused: a pickle file" in problems_of(check)[0][2] and "can run code" in problems_of(check)[0][2]
    disguised = install_checkpoint({CONFIG_FILE: files[CONFIG_FILE], WEIGHTS_FILE: buffer.getvalue()}, tmp_path / "o")
    assert not disguised.ok and "refused: a pickle file" in disguised.problems[0].message
    alone = check_checkpoint_files({"model.pt": buffer.getvalue()})
    assert [(p.file, "pickle" in p.message or "expected" in p.message) for p in alone.problems] == [
        ("model.pt", True), (CONFIG_FILE, True), (WEIGHTS_FILE, True)]


def test_other_files_and_missing_files(files: dict[str, bytes]) -> None:
    check = check_checkpoint_files({**files, "README.md": b"hi"})
    assert problems_of(check) == [("README.md", "", "refused: expected only config.json and model.safetensors")]
    check = check_checkpoint_files({CONFIG_FILE: files[CONFIG_FILE]})
    assert problems_of(check) == [(WEIGHTS_FILE, "", "expected model.safetensors: a checkpoint is config.json + "
                                                     "model.safetensors")]
    check = check_checkpoint_files({"sub/config.json": files[CONFIG_FILE], WEIGHTS_FILE: files[WEIGHTS_FILE]})
    assert not check.ok and check.problems[0].file == "sub/config.json"


def _edit(config: dict, path: str, value) -> dict:
    out = copy.deepcopy(config)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return out


_DELETE = object()
MALFORMED = [
    ("format_version", 2, "format_version", "expected 1, found 2"),
    ("model", _DELETE, "model", "expected an object (the model's sections), found nothing"),
    ("features", [], "features", "expected an object (the feature spec), found list"),
    ("model.labels", [], "model.labels", "expected a non-empty list of label names"),
    ("model.labels", ["A", "A"], "model.labels", "expected each label name once; repeated: ['A']"),
    ("model.fusion.d_model", "64", "model.fusion.d_model", "expected int, found \"64\""),
    ("model.fusion.dropout", True, "model.fusion.dropout", "expected float, found true"),
    ("model.image.depths", [1, "2"], "model.image.depths", "expected list[int]"),
    ("model.fusion.width", 3, "model.fusion.width", "unknown key; expected one of d_model, layers, heads, dropout"),
    ("model.decoder", {}, "model.decoder", "unknown section; expected one of"),
    ("model.variant", "resnet", "model.variant", "expected one of medfuse_lens, no_mi"),
    ("model.image.pretrained_path", "/srv/weights", "model.image.pretrained_path", "expected null"),
    ("features.labels", ["other"], "features.labels", "expected the same label names, in the same order, as model.labels"),
    ("features.lab_vocabulary", _DELETE, "features.lab_vocabulary", "expected this key"),
    ("features.vitals_normalizer", "x", "features.vitals_normalizer", "expected dict[str, Any], found \"x\""),
    ("features.text_model", "/etc", "features.text_model", "expected a packaged text model"),
    ("features.text_dim", 768, "features.text_dim", "expected the same value as model.notes.embedding_dim (384)"),
    ("features.pooling", "cls", "features.pooling", "expected the same value as model.notes.pooling ('mean')"),
    ("features.max_tokens", 16, "features.max_tokens", "expected the same value as model.notes.max_tokens (128)"),
    ("features.notes_finetune", "lora", "features.notes_finetune", "expected 'none': an uploaded checkpoint"),
    ("features.text_model_sha256", 5, "features.text_model_sha256", "expected str or None, found 5"),
    ("calibration.temperature", -1, "calibration.temperature", "expected a positive number, found -1"),
    ("calibration.thresholds", [0.5], "calibration.thresholds", "expected an object of label -> threshold"),
]


@pytest.mark.parametrize(("path", "value", "field", "contains"), MALFORMED, ids=[f"{m[0]}={m[1]!r}"[:40] for m in MALFORMED])
def test_malformed_config_names_the_field(config: dict, files: dict[str, bytes], path: str, value, field: str,
                                          contains: str) -> None:
    bad = _edit(config, path, value)
    check = check_checkpoint_files({CONFIG_FILE: json.dumps(bad).encode(), WEIGHTS_FILE: files[WEIGHTS_FILE]})
    assert not check.ok
    hits = [p for p in check.problems if p.file == CONFIG_FILE and p.field == field and contains in p.message]
    assert hits, problems_of(check)


def test_threshold_checks(config: dict) -> None:
    label = config["model"]["labels"][0]
    bad = _edit(config, "calibration.thresholds", {label: 1.5, "Not a label": 0.5})
    found = {(p.field, p.message) for p in check_config(bad)}
    assert (f"calibration.thresholds.{label}", "expected a number from 0 to 1, found 1.5") in found
    assert ("calibration.thresholds.Not a label", "expected a label name of model.labels") in found


def test_config_that_is_not_json(files: dict[str, bytes]) -> None:
    for data, field, contains in [(b'{"format_version": 1,', "line 1 column 22", "expected valid JSON"),
                                  (b"\xff\xfe{}", "", "expected UTF-8 text"), (b"[1, 2]", "", "expected a JSON object")]:
        check = check_checkpoint_files({CONFIG_FILE: data, WEIGHTS_FILE: files[WEIGHTS_FILE]})
        assert [(p.field, contains in p.message) for p in check.problems] == [(field, True)], problems_of(check)


def test_tensors_must_match_the_model_the_config_builds(config: dict, files: dict[str, bytes]) -> None:
    state = load_safetensors(files[WEIGHTS_FILE])
    name = next(n for n, t in state.items() if t.ndim == 2)
    wider = dict(state)
    wider[name] = torch.zeros(state[name].shape[0] + 1, state[name].shape[1])
    check = check_checkpoint_files({CONFIG_FILE: files[CONFIG_FILE], WEIGHTS_FILE: save_safetensors(wider)})
    assert problems_of(check) == [(WEIGHTS_FILE, name, f"expected shape {list(state[name].shape)} (from config.json); "
                                                       f"found {[state[name].shape[0] + 1, state[name].shape[1]]}")]

    fewer = {n: t for n, t in state.items() if n != name} | {"extra.weight": torch.zeros(2)}
    check = check_checkpoint_files({CONFIG_FILE: files[CONFIG_FILE], WEIGHTS_FILE: save_safetensors(fewer)})
    messages = [p.message for p in check.problems]
    assert any(f"1 missing, e.g. {name}" in m for m in messages) and any("1 unknown, e.g. extra.weight" in m for m in messages)

    bigger_model = _edit(config, "model.fusion.d_model", config["model"]["fusion"]["d_model"] * 2)
    check = check_checkpoint_files({CONFIG_FILE: json.dumps(bigger_model).encode(), WEIGHTS_FILE: files[WEIGHTS_FILE]})
    assert not check.ok and all(p.file == WEIGHTS_FILE for p in check.problems)
    assert any("expected shape" in p.message for p in check.problems)


def test_malformed_safetensors_files(files: dict[str, bytes]) -> None:
    weights = files[WEIGHTS_FILE]
    header_size = int.from_bytes(weights[:8], "little")
    cases = [
        (b"", "header", "expected a safetensors file"),
        ((10**12).to_bytes(8, "little") + b"{}", "header", "does not fit the file"),
        (weights[:8] + b"\x00" * header_size + weights[8 + header_size:], "header", "expected a JSON header"),
        (weights[: len(weights) - 10], None, "expected"),  # the last tensor's data is cut short
        ((2).to_bytes(8, "little") + b"{}", "header", "expected at least one tensor"),
    ]
    for data, field, contains in cases:
        check = check_checkpoint_files({CONFIG_FILE: files[CONFIG_FILE], WEIGHTS_FILE: data})
        assert not check.ok
        problem = check.problems[0]
        assert problem.file == WEIGHTS_FILE and contains in problem.message, problems_of(check)
        if field is not None:
            assert problem.field == field


# ------------------------------------------------------------------------------ issue 19: bounded input


def test_huge_sizes_are_refused_before_building(config: dict, files: dict[str, bytes]) -> None:
    """200,000 fusion layers used to cost minutes of CPU (the model was built to compare tensors) before the refusal."""
    import time

    bad = _edit(_edit(config, "model.fusion.layers", 200_000), "model.image.hidden_sizes", [64] * 100)
    start = time.perf_counter()
    check = check_checkpoint_files({CONFIG_FILE: json.dumps(bad).encode(), WEIGHTS_FILE: files[WEIGHTS_FILE]})
    assert time.perf_counter() - start < 5
    assert ("config.json", "model.fusion.layers", "expected a size from 0 to 48, found 200,000") in problems_of(check)
    assert ("config.json", "model.image.hidden_sizes", "expected at most 16 entries, found 100") in problems_of(check)
    assert not any(p.file == WEIGHTS_FILE for p in check.problems)  # nothing was built to compare


def test_deeply_nested_config_and_header_are_refused_before_parsing(files: dict[str, bytes], tmp_path: Path) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    check = check_checkpoint_files({CONFIG_FILE: deep, WEIGHTS_FILE: files[WEIGHTS_FILE]})
    assert problems_of(check) == [(CONFIG_FILE, "", "expected JSON nested at most 64 levels deep; it nests deeper "
                                                    "(refused before parsing)")]
    weights = files[WEIGHTS_FILE]
    size = int.from_bytes(weights[:8], "little")
    header = b'{"x":' + deep + b"," + weights[9:8 + size]
    hostile = len(header).to_bytes(8, "little") + header + weights[8 + size:]
    check = check_checkpoint_files({CONFIG_FILE: files[CONFIG_FILE], WEIGHTS_FILE: hostile})
    assert problems_of(check) == [(WEIGHTS_FILE, "header", "expected a JSON header in the safetensors file: expected "
                                                           "JSON nested at most 4 levels deep; it nests deeper "
                                                           "(refused before parsing)")]
    # a run folder on the server is checked the same way before safetensors reads it
    from medfuse_core.problems import DataError
    from medfuse_core.runtime.checkpoint import load_weights, read_config

    (tmp_path / CONFIG_FILE).write_bytes(deep)
    (tmp_path / WEIGHTS_FILE).write_bytes(hostile)
    with pytest.raises(DataError, match="nested at most 64 levels"):
        read_config(tmp_path)
    with pytest.raises(DataError, match="nested at most 4 levels"):
        load_weights(torch.nn.Linear(1, 1), tmp_path)
