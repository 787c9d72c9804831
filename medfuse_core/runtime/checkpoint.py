"""Checkpoints as safetensors + JSON, never pickle.

A run folder holds:
    config.json              model config, feature spec, calibration, training summary
    model.safetensors        the model's weights (best validation epoch)
    trainer_state.json       resume point: epoch, early-stopping state, RNG states
    trainer_state.safetensors  optimizer tensors and torch RNG state, for resuming

`check_checkpoint_files` / `install_checkpoint` check a checkpoint uploaded to the dashboard (below).
`upgrade_config` reads an older config.json in today's layout (both the reader and the upload check use it).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from medfuse_core import bounded_json
from medfuse_core.problems import DataError, Problem, Severity, error

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TRAINER_JSON = "trainer_state.json"
TRAINER_TENSORS = "trainer_state.safetensors"
FORMAT_VERSION = 1

logger = logging.getLogger(__name__)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save_weights(model: torch.nn.Module, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = folder / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, folder / WEIGHTS_FILE)


def save_config(folder: Path, config: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(folder / CONFIG_FILE, json.dumps({"format_version": FORMAT_VERSION, **config}, indent=1) + "\n")


def read_config(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise DataError(str(path), "", "expected a checkpoint folder with config.json and model.safetensors")
    try:
        config = bounded_json.read(path, max_bytes=MAX_CONFIG_BYTES)
    except bounded_json.JsonLimitError as exc:
        raise DataError(str(path), exc.field, exc.message) from None
    if not isinstance(config, dict):
        raise DataError(str(path), "", f"expected a JSON object, found {type(config).__name__}")
    if config.get("format_version") != FORMAT_VERSION:
        raise DataError(str(path), "format_version", f"expected {FORMAT_VERSION}, found {config.get('format_version')!r}")
    return upgrade_config(config, str(path))


def upgrade_config(config: dict[str, Any], where: str) -> dict[str, Any]:
    """`config` with the sections older checkpoints wrote into `model` that belong elsewhere moved to their owner
    (`models.config.MOVED_SECTIONS`: `model.loss`, the objective's weights, is training provenance and goes to
    `train.loss`), logged; nothing is dropped. A new dict: the file and the caller's dict are left as they are.
    Both places holding different values is an error naming the field (which one the run used is unknown)."""
    from medfuse_core.models.config import MOVED_SECTIONS

    model, train = config.get("model"), config.get("train")
    if not isinstance(model, dict) or not any(name in model for name in MOVED_SECTIONS):
        return config
    if train is not None and not isinstance(train, dict):
        return config  # check_config names a malformed train section
    upgraded = {**config, "model": {k: v for k, v in model.items() if k not in MOVED_SECTIONS}, "train": dict(train or {})}
    for name, owner in MOVED_SECTIONS.items():
        if name not in model:
            continue
        if name in upgraded["train"] and upgraded["train"][name] != model[name]:
            raise DataError(where, f"model.{name}", f"expected this section only in train.{name} (its owner now); "
                                                   f"found both, with different values")
        upgraded["train"][name] = model[name]
        logger.info("%s: model.%s is read as train.%s: %s", where, name, name, owner)
    return upgraded


def load_weights(model: torch.nn.Module, folder: str | Path, device: str | torch.device = "cpu") -> None:
    path = Path(folder) / WEIGHTS_FILE
    state = read_weights(folder, device)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise DataError(str(path), "weights", f"expected weights matching config.json; missing {missing[:5]}, unexpected {unexpected[:5]}")


def read_weights(folder: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The checkpoint's tensors by name, the safetensors header checked first (size, depth, offsets)."""
    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise DataError(str(path), "", "expected the model weights file next to config.json")
    with open(path, "rb") as fh:  # the header is checked first, as for an upload (size, depth, offsets)
        head = fh.read(8)
        size = int.from_bytes(head, "little") if len(head) == 8 else -1
        header_problems: list[Problem] = []
        if 0 <= size <= MAX_HEADER_BYTES:
            check_safetensors_header(head + fh.read(size), path.stat().st_size, header_problems)
        else:
            header_problems.append(error(WEIGHTS_FILE, "header", f"expected a safetensors file: its header length "
                                                               f"{size} does not fit the file"))
    if header_problems:
        raise DataError(str(path), header_problems[0].field, header_problems[0].message)
    try:
        state = load_file(str(path), device=str(device))
    except Exception as exc:  # safetensors' own SafetensorError (a Rust error) for anything else malformed
        raise DataError(str(path), "", f"expected a readable safetensors file ({type(exc).__name__}: {exc})") from None
    return state


def save_trainer_state(folder: Path, optimizers: dict[str, torch.optim.Optimizer], scalars: dict[str, Any]) -> None:
    """Optimizer state and RNG state, flattened into tensors + JSON (no pickle)."""
    tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
    groups: dict[str, Any] = {}
    for name, optimizer in optimizers.items():
        state = optimizer.state_dict()
        groups[name] = state["param_groups"]
        for index, param_state in state["state"].items():
            for key, value in param_state.items():
                tensors[f"{name}.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    save_file(tensors, str(folder / (TRAINER_TENSORS + ".tmp")))
    os.replace(folder / (TRAINER_TENSORS + ".tmp"), folder / TRAINER_TENSORS)
    _atomic_write_text(folder / TRAINER_JSON, json.dumps({"param_groups": groups, **scalars}, indent=1))


def load_trainer_state(folder: Path, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, Any] | None:
    """Restore optimizers and the torch RNG; returns the saved scalars, or None if there is no resume point."""
    if not (folder / TRAINER_JSON).is_file() or not (folder / TRAINER_TENSORS).is_file():
        return None
    try:
        scalars = bounded_json.read(folder / TRAINER_JSON)
    except bounded_json.JsonLimitError as exc:
        raise DataError(str(folder / TRAINER_JSON), exc.field, exc.message) from None
    tensors = load_file(str(folder / TRAINER_TENSORS))
    torch.set_rng_state(tensors.pop("rng.torch"))
    for name, optimizer in optimizers.items():
        per_param: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            owner, index, field = key.split(".", 2)
            if owner == name:
                per_param.setdefault(int(index), {})[field] = value
        optimizer.load_state_dict({"state": per_param, "param_groups": scalars["param_groups"][name]})
    return scalars


# ------------------------------------------------------------------------------ uploaded checkpoints
#
# A researcher may upload a checkpoint to the dashboard. Only the two files of a run folder are taken:
# config.json, checked field by field against what `read_config`, `ModelConfig.from_dict` and
# `FeatureSpec.from_dict` need, and model.safetensors, whose header (tensor names, dtypes, shapes and
# offsets) must match the model that config.json builds. Nothing is unpickled or imported: pickle-based
# files (torch.save's .pt/.pth/.bin/.ckpt, .pkl) can run code when loaded and are refused by name and by
# content. The weights are not loaded here; the caller loads them with `load_weights` (safetensors).

UPLOAD_FILES = (CONFIG_FILE, WEIGHTS_FILE)
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".joblib")
MAX_CONFIG_BYTES = 16 * 1024**2
MAX_HEADER_BYTES = 100 * 1024**2  # the safetensors library's own limit
SAFETENSORS_MAX_DEPTH = 4  # {name: {"shape": [..]}, "__metadata__": {..}}: 3 levels; serde_json's own limit is 128
SAFETENSORS_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                      "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_PICKLE_REFUSAL = ("refused: a pickle file (torch.save .pt/.pth/.bin/.ckpt, .pkl) can run code when it is loaded; "
                   "expected model.safetensors and config.json (save the state dict with safetensors)")


@dataclass
class CheckpointCheck:
    """What checking an uploaded checkpoint found: the config when it is usable, and every problem."""

    config: dict[str, Any] | None = None
    tensors: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)  # name -> (dtype, shape)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.config is not None and not any(p.severity is Severity.ERROR for p in self.problems)


def looks_like_pickle(data: bytes) -> bool:
    """A pickle stream (protocol 2-5 starts with 0x80 and the protocol) or torch.save's zip (a pickle inside)."""
    return (len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5) or data[:4] == b"PK\x03\x04"


def check_checkpoint_files(files: Mapping[str, bytes]) -> CheckpointCheck:
    """Check uploaded files {file name: bytes}: exactly config.json and model.safetensors, the config
    valid, the weights' header matching the model the config builds. Never raises on content."""
    out = CheckpointCheck()
    for name, data in files.items():
        base = Path(str(name).replace("\\", "/")).name
        if base in UPLOAD_FILES and base == name:
            continue
        if base.lower().endswith(PICKLE_SUFFIXES) or looks_like_pickle(data):
            out.problems.append(error(name, "", _PICKLE_REFUSAL))
        else:
            out.problems.append(error(name, "", f"refused: expected only {CONFIG_FILE} and {WEIGHTS_FILE}"))
    for required in UPLOAD_FILES:
        if required not in files:
            out.problems.append(error(required, "", f"expected {required}: a checkpoint is {CONFIG_FILE} + {WEIGHTS_FILE}"))
    if CONFIG_FILE in files:
        out.config = _parsed_config(files[CONFIG_FILE], out.problems)
    if WEIGHTS_FILE in files:
        out.tensors = safetensors_header(files[WEIGHTS_FILE], out.problems)
    if out.config is not None and out.tensors and not out.problems:
        out.problems += _weights_match_config(out.config, out.tensors)
    if any(p.severity is Severity.ERROR for p in out.problems):
        out.config = None
    return out


def install_checkpoint(files: Mapping[str, bytes], folder: str | Path) -> CheckpointCheck:
    """`check_checkpoint_files`, then (only when it is ok) write the two files into `folder` (created)."""
    check = check_checkpoint_files(files)
    if check.ok:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in UPLOAD_FILES:
            (folder / name).write_bytes(files[name])
    return check


# ---- config.json


def _parsed_config(data: bytes, problems: list[Problem]) -> dict[str, Any] | None:
    try:
        config = bounded_json.loads(data, max_bytes=MAX_CONFIG_BYTES)
    except bounded_json.JsonLimitError as exc:
        problems.append(error(CONFIG_FILE, exc.field, exc.message))
        return None
    found = check_config(config)
    problems += found
    return None if found else upgrade_config(config, CONFIG_FILE)


def check_config(config: Any) -> list[Problem]:
    """Every problem of a checkpoint's config.json as uploaded: required keys, types, label names,
    agreement between the model and feature sections, and no path on this machine to follow."""
    from dataclasses import fields as dataclass_fields

    from medfuse_core.features.featurize import FeatureSpec
    from medfuse_core.models.baselines import VARIANTS
    from medfuse_core.models.config import RETIRED_FIELDS, SECTION_TYPES, ModelConfig
    from medfuse_core.features.text_backbone import PACKAGED_MODELS

    problems: list[Problem] = []

    def bad(where: str, message: str) -> None:
        problems.append(error(CONFIG_FILE, where, message))

    if not isinstance(config, dict):
        bad("", f"expected a JSON object, found {type(config).__name__}")
        return problems
    if config.get("format_version") != FORMAT_VERSION:
        bad("format_version", f"expected {FORMAT_VERSION}, found {config.get('format_version')!r}")
    try:
        config = upgrade_config(config, CONFIG_FILE)
    except DataError as exc:
        problems.append(exc.problem)
        return problems
    model, features = config.get("model"), config.get("features")
    if not isinstance(model, dict):
        bad("model", f"expected an object (the model's sections), found {_kind(model)}")
    if not isinstance(features, dict):
        bad("features", f"expected an object (the feature spec), found {_kind(features)}")
    if problems:
        return problems

    labels = model.get("labels")
    if not (isinstance(labels, list) and labels and all(isinstance(x, str) and x.strip() for x in labels)):
        bad("model.labels", f"expected a non-empty list of label names, found {_short_json(labels)}")
    elif len(set(labels)) != len(labels):
        bad("model.labels", "expected each label name once; "
                            f"repeated: {sorted({x for x in labels if labels.count(x) > 1})}")
    sections = {f.name for f in dataclass_fields(ModelConfig)}
    for name, value in model.items():
        if name not in sections:
            bad(f"model.{name}", f"unknown section; expected one of {', '.join(sorted(sections))}")
        elif name in SECTION_TYPES:
            retired = RETIRED_FIELDS.get(name, {})
            current = {k: v for k, v in value.items() if k not in retired} if isinstance(value, dict) else value
            _check_fields(current, SECTION_TYPES[name], f"model.{name}", bad)
    if isinstance(labels, list) and len(labels) > MAX_LABELS:
        bad("model.labels", f"expected at most {MAX_LABELS:,} labels, found {len(labels):,}")
    for section_name, section in model.items():
        if isinstance(section, dict):
            _check_sizes(section, f"model.{section_name}", bad)
    if problems:  # sizes are checked before anything is built: 200,000 layers would take minutes to refuse
        return problems
    if "variant" in model and model["variant"] not in VARIANTS:
        bad("model.variant", f"expected one of {', '.join(VARIANTS)}, found {model['variant']!r}")
    image = model.get("image")
    if isinstance(image, dict) and image.get("pretrained_path") is not None:
        bad("model.image.pretrained_path", "expected null: an uploaded checkpoint carries all its weights in "
                                           "model.safetensors; a path on this server is not followed")

    spec_fields = {f.name: f for f in dataclass_fields(FeatureSpec)}
    required = [n for n, f in spec_fields.items() if f.default is MISSING and f.default_factory is MISSING]
    for name in required:
        if name not in features:
            bad(f"features.{name}", "expected this key (required by the feature spec)")
    _check_fields(features, FeatureSpec, "features", bad)
    for name in ("lab_vocabulary", "vitals_normalizer"):
        if name in features and not isinstance(features[name], dict):
            bad(f"features.{name}", f"expected an object, found {_kind(features[name])}")
    if isinstance(labels, list) and "labels" in features and features["labels"] != labels:
        bad("features.labels", "expected the same label names, in the same order, as model.labels")
    text_model = features.get("text_model", "all-MiniLM-L6-v2")
    if isinstance(text_model, str) and text_model not in PACKAGED_MODELS:
        bad("features.text_model", f"expected a packaged text model ({', '.join(sorted(PACKAGED_MODELS))}); found "
                                   f"{text_model!r} (an uploaded checkpoint cannot name a folder on this server)")
    if features.get("notes_finetune", "none") != "none":
        bad("features.notes_finetune", "expected 'none': an uploaded checkpoint is config.json + model.safetensors, and a "
                                       f"fine-tuned notes model ({features['notes_finetune']!r}) needs its run folder's "
                                       "notes_backbone/ weights")
    notes = model.get("notes") if isinstance(model.get("notes"), dict) else {}
    for spec_key, model_key in (("text_dim", "embedding_dim"), ("text_model", "text_model"), ("pooling", "pooling"),
                                ("max_tokens", "max_tokens"), ("prompt_template", "prompt_template")):
        if spec_key in features and model_key in notes and features[spec_key] != notes[model_key]:
            bad(f"features.{spec_key}", f"expected the same value as model.notes.{model_key} "
                                        f"({notes[model_key]!r}), found {features[spec_key]!r}")

    calibration = config.get("calibration")
    if calibration is not None:
        if not isinstance(calibration, dict):
            bad("calibration", f"expected an object, found {_kind(calibration)}")
        else:
            t = calibration.get("temperature", 1.0)
            if not _number(t) or not t > 0:
                bad("calibration.temperature", f"expected a positive number, found {_short_json(t)}")
            from medfuse_core.runtime.calibration import LabelCalibration

            def threshold(value: Any) -> None:
                if not _number(value) or not 0 <= value <= 1:
                    raise ValueError(f"expected a number from 0 to 1, found {_short_json(value)}")

            def label_calibration(value: Any) -> None:
                if not isinstance(value, dict):
                    raise ValueError(f"expected an object, found {_kind(value)}")
                LabelCalibration.from_dict(value)

            for key, what, check in (("thresholds", "threshold", threshold),
                                     ("per_label", "calibration", label_calibration)):
                per_label = calibration.get(key) or {}
                if not isinstance(per_label, dict):
                    bad(f"calibration.{key}", f"expected an object of label -> {what}, found {_kind(per_label)}")
                    continue
                for name, value in per_label.items():
                    if isinstance(labels, list) and name not in labels:
                        bad(f"calibration.{key}.{name}", "expected a label name of model.labels")
                        continue
                    try:
                        check(value)
                    except (TypeError, ValueError) as exc:
                        bad(f"calibration.{key}.{name}", str(exc))
    uncertainty = config.get("uncertainty")
    if uncertainty is not None and isinstance(labels, list):
        from medfuse_core.runtime.uncertainty import check_section

        try:
            if not isinstance(uncertainty, dict):
                raise ValueError(f"expected an object, found {_kind(uncertainty)}")
            check_section(uncertainty, labels)
        except (TypeError, ValueError, AttributeError) as exc:
            bad("uncertainty", f"expected the conformal intervals' reach per label ({exc})")
    if not problems:
        try:
            ModelConfig.from_dict(model)
            FeatureSpec.from_dict(features)
        except (TypeError, ValueError) as exc:
            bad("model", f"expected a config the model can be built from ({exc})")
    return problems


# Upper bounds for the integer sizes of an uploaded config: far above any model this dashboard runs (the demo:
# 2 layers, 4 heads, widths <= 512, 224-pixel films), low enough that building the model to check its
# tensors takes milliseconds.
MAX_LABELS = 1000
SIZE_LIMITS = (("layers", 48), ("depths", 64), ("heads", 64), ("vocab_size", 1_000_000), ("image_size", 2048),
               ("max_sentences", 4096), ("max_tokens", 8192))
MAX_WIDTH = 16_384  # any other integer size (d_model, hidden, *_dim, hidden_sizes, ...)
MAX_LIST = 16  # entries of a list of sizes (ResNet stages)


def _size_limit(key: str) -> int:
    return next((limit for name, limit in SIZE_LIMITS if key == name or key.endswith("_" + name)), MAX_WIDTH)


def _check_sizes(section: dict[str, Any], where: str, bad) -> None:
    """Every integer size of one model section within its bound (see SIZE_LIMITS)."""
    for key, value in section.items():
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and len(value) > MAX_LIST:
            bad(f"{where}.{key}", f"expected at most {MAX_LIST} entries, found {len(value):,}")
            continue
        limit = _size_limit(key)
        for v in values:
            if isinstance(v, int) and not isinstance(v, bool) and not 0 <= v <= limit:
                bad(f"{where}.{key}", f"expected a size from 0 to {limit:,}, found {v:,}")
                break


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _short_json(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _type_ok(value: Any, annotation: str) -> bool:
    """`value` (from JSON) against a dataclass field annotation such as 'int', 'float | None', 'list[int]'."""
    options = [a.strip() for a in str(annotation).split("|")]
    for option in options:
        if option == "None" and value is None:
            return True
        if option == "int" and isinstance(value, int) and not isinstance(value, bool):
            return True
        if option == "float" and _number(value):
            return True
        if option == "str" and isinstance(value, str):
            return True
        if option == "bool" and isinstance(value, bool):
            return True
        if option.startswith("list[") and isinstance(value, list):
            inner = option[5:-1]
            return all(_type_ok(v, inner) for v in value)
        if option.startswith("dict") and isinstance(value, dict):
            return True
    return False


def _check_fields(section: Any, cls: type, where: str, bad) -> None:
    """Unknown keys and values of the wrong JSON type in one dataclass-shaped section."""
    from dataclasses import fields as dataclass_fields

    if not isinstance(section, dict):
        bad(where, f"expected an object, found {_kind(section)}")
        return
    known = {f.name: f.type for f in dataclass_fields(cls)}
    for key, value in section.items():
        if key not in known:
            bad(f"{where}.{key}", f"unknown key; expected one of {', '.join(known)}")
        elif not _type_ok(value, known[key]):
            bad(f"{where}.{key}", f"expected {str(known[key]).replace('|', 'or')}, found {_short_json(value)}")


# ---- model.safetensors


def safetensors_header(data: bytes, problems: list[Problem]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{tensor name: (dtype, shape)} from a safetensors file's header, checked against the file's size;
    {} (with an error problem) when it is not a well-formed safetensors file."""
    def bad(field_: str, message: str) -> dict:
        problems.append(error(WEIGHTS_FILE, field_, message))
        return {}

    if looks_like_pickle(data):
        return bad("", _PICKLE_REFUSAL)
    if len(data) < 8:
        return bad("header", f"expected a safetensors file (8-byte header length, JSON header, data); found {len(data)} bytes")
    return check_safetensors_header(data, len(data), problems)


def check_safetensors_header(head: bytes, file_size: int, problems: list[Problem]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The checks of `safetensors_header` on the file's first bytes (`head`: the 8-byte length and the
    JSON header; the tensor data need not be there) and the file's size: the header's length is read and
    bounded first, then its nesting depth, and only then is it parsed."""
    def bad(field_: str, message: str) -> dict:
        problems.append(error(WEIGHTS_FILE, field_, message))
        return {}

    size = int.from_bytes(head[:8], "little")
    if size > MAX_HEADER_BYTES or size > file_size - 8 or len(head) < 8 + size:
        return bad("header", f"expected a safetensors file: its header length {size} does not fit the file "
                             f"({file_size} bytes)")
    try:
        header = bounded_json.loads(head[8:8 + size], max_bytes=MAX_HEADER_BYTES, max_depth=SAFETENSORS_MAX_DEPTH)
    except bounded_json.JsonLimitError as exc:
        return bad("header", f"expected a JSON header in the safetensors file: {exc.message}")
    if not isinstance(header, dict):
        return bad("header", "expected a JSON object as the safetensors header")
    body = file_size - 8 - size
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        ok = (isinstance(entry, dict) and entry.get("dtype") in SAFETENSORS_DTYPES
              and isinstance(entry.get("shape"), list) and all(isinstance(d, int) and d >= 0 for d in entry["shape"])
              and isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2
              and all(isinstance(o, int) for o in entry["data_offsets"]))
        if not ok:
            return bad(name, "expected dtype, shape and data_offsets for this tensor")
        start, end = entry["data_offsets"]
        n_bytes = math.prod(entry["shape"]) * SAFETENSORS_DTYPES[entry["dtype"]]
        if not 0 <= start <= end <= body or end - start != n_bytes:
            return bad(name, f"expected {n_bytes} bytes of data inside the file; the offsets say {start}..{end} "
                             f"of {body}")
        tensors[name] = (entry["dtype"], tuple(entry["shape"]))
    if not tensors:
        return bad("header", "expected at least one tensor")
    return tensors


def expected_tensors(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """{name: shape} of the state dict of the model `config` builds (on the meta device: no memory)."""
    from medfuse_core.models.baselines import build_model
    from medfuse_core.models.config import ModelConfig

    with torch.device("meta"):
        model = build_model(ModelConfig.from_dict(config["model"]))
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def _weights_match_config(config: dict[str, Any], tensors: dict[str, tuple[str, tuple[int, ...]]]) -> list[Problem]:
    try:
        expected = expected_tensors(config)
    except Exception as exc:  # a config that passes the checks above but still cannot build
        return [error(CONFIG_FILE, "model", f"expected a config the model can be built from "
                                            f"({type(exc).__name__}: {exc})")]
    problems = []
    missing = [n for n in expected if n not in tensors]
    unexpected = [n for n in tensors if n not in expected]
    wrong = [(n, expected[n], tensors[n][1]) for n in expected if n in tensors and tensors[n][1] != expected[n]]
    for name, want, got in wrong[:10]:
        problems.append(error(WEIGHTS_FILE, name, f"expected shape {list(want)} (from config.json); found {list(got)}"))
    if len(wrong) > 10:
        problems.append(error(WEIGHTS_FILE, "", f"{len(wrong) - 10} more tensors with the wrong shape"))
    if missing:
        problems.append(error(WEIGHTS_FILE, "", f"expected every tensor of the model config.json builds; "
                                                f"{len(missing)} missing, e.g. {', '.join(missing[:5])}"))
    if unexpected:
        problems.append(error(WEIGHTS_FILE, "", f"expected only tensors of the model config.json builds; "
                                                f"{len(unexpected)} unknown, e.g. {', '.join(unexpected[:5])}"))
    return problems


# ------------------------------------------------------------------------------- what a folder is


def is_checkpoint(folder: str | Path) -> bool:
    """The folder holds a checkpoint's two files (not checked further; see check_checkpoint_files)."""
    folder = Path(folder)
    return (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def is_synthetic_model(config: dict[str, Any], checkpoint: str | Path, demo_model: str | Path) -> bool:
    """True when the model was trained on synthetic patients: the bundled demo checkpoint, a
    `data.synthetic` flag, or a training folder that is (or was) a synthetic cohort."""
    if Path(checkpoint).resolve() == Path(demo_model).resolve():
        return True
    data = config.get("data") or {}
    if data.get("synthetic"):
        return True
    path = str(data.get("path") or "")
    if "demo-cohort" in path or "synth" in Path(path).name:
        return True
    cohort = Path(path) / "cohort.json" if path else None
    if cohort is not None and cohort.is_file():
        try:
            return str(json.loads(cohort.read_text()).get("generator_version", "")).startswith("synth")
        except (OSError, ValueError):
            return False
    return False
