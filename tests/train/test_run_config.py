"""One owner per setting: a run config key the run would not read is an error naming the key, never
silently ignored; the shipped demo checkpoint's retired keys still load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medfuse_core.models.config import ModelConfig
from medfuse_core.problems import DataError
from medfuse_core.train.loop import TrainConfig
from medfuse_core.train.run import RunConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("config, field, words", [
    ({"train": {"epoch": 3}}, "train.epoch", "unknown setting"),
    ({"split": {"seeds": 1}}, "split.seeds", "unknown setting"),
    ({"model": {"lab": {}}}, "model.lab", "unknown section"),
    ({"model": {"labs": {"depth": 2}}}, "model.labs.depth", "unknown setting"),
    ({"model": {"image": {"image_size": 256}}}, "model.image.image_size", "top-level image_size"),
    ({"model": {"vitals": {"hours": 24}}}, "model.vitals.hours", "observation window"),
    ({"model": {"notes": {"text_model": "x"}}}, "model.notes.text_model", "top-level text_model"),
    ({"model": {"labels": ["a"]}}, "model.labels", "cohort's labels"),
    ({"imagesize": 64}, "imagesize", "unknown key"),
])
def test_an_unread_run_config_key_is_an_error_naming_it(tmp_path: Path, config: dict, field: str, words: str) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps(config))
    with pytest.raises(DataError) as caught:
        RunConfig.from_file(path)
    assert caught.value.problem.file == str(path) and caught.value.problem.field == field
    assert words in caught.value.problem.message


def test_the_shipped_run_configs_are_read_whole() -> None:
    for name in ("demo_run.json", "mimic3_demo_run.json"):
        assert RunConfig.from_file(ROOT / "assets" / name).unread_setting() is None


def test_train_config_refuses_unknown_keys() -> None:
    with pytest.raises(ValueError, match="train.epoch"):
        TrainConfig.from_dict({"epoch": 3})
    assert TrainConfig.from_dict({"epochs": 3}).epochs == 3


def test_the_demo_checkpoint_config_still_reads_with_its_retired_keys() -> None:
    model = json.loads((ROOT / "assets" / "demo_model" / "config.json").read_text())["model"]
    assert "image_size" in model["image"] and "hours" in model["vitals"]  # written by the older code
    config = ModelConfig.from_dict(model)
    assert not hasattr(config.image, "image_size") and not hasattr(config.vitals, "hours")
    assert config.modalities == ["labs", "notes", "vitals", "image"] and config.extra == {}
