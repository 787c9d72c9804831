"""Checkpoints as safetensors + JSON, never pickle.

A run folder holds:
    config.json              model config, feature spec, calibration, training summary
    model.safetensors        the model's weights (best validation epoch)
    trainer_state.json       resume point: epoch, early-stopping state, RNG states
    trainer_state.safetensors  optimizer tensors and torch RNG state, for resuming
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from medfuse_core.problems import DataError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TRAINER_JSON = "trainer_state.json"
TRAINER_TENSORS = "trainer_state.safetensors"
FORMAT_VERSION = 1


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
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(str(path), f"line {exc.lineno}", f"expected valid JSON: {exc.msg}") from None
    if config.get("format_version") != FORMAT_VERSION:
        raise DataError(str(path), "format_version", f"expected {FORMAT_VERSION}, found {config.get('format_version')!r}")
    return config


def load_weights(model: torch.nn.Module, folder: str | Path, device: str | torch.device = "cpu") -> None:
    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise DataError(str(path), "", "expected the model weights file next to config.json")
    state = load_file(str(path), device=str(device))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise DataError(str(path), "weights", f"expected weights matching config.json; missing {missing[:5]}, unexpected {unexpected[:5]}")


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
    scalars = json.loads((folder / TRAINER_JSON).read_text())
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
