"""One owner per setting: a run config key the run would not read is an error naming the key, never
silently ignored; the shipped demo checkpoint's retired keys still load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medfuse_core.models.config import ModelConfig
from medfuse_core.problems import DataError
from medfuse_core.runtime import checkpoint as ckpt
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
    ({"model": {"loss": {"vclub_weight": 0.1}}}, "model.loss", "move it to train.loss"),
    ({"train": {"loss": {"vclub": 0.1}}}, "train.loss.vclub", "unknown setting"),
    ({"train": {"notes": {"rank": 4}}}, "train.notes.rank", "unknown setting"),
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


def test_a_checkpoint_config_with_the_retired_keys_still_reads() -> None:
    """Checkpoints written before image_size and hours left the model config (the clean demo of round 6
    had both) still load: the retired keys are read and dropped."""
    model = json.loads((ROOT / "assets" / "demo_model" / "config.json").read_text())["model"]
    model["image"]["image_size"], model["vitals"]["hours"] = 128, 48.0  # as the older code wrote them
    config = ModelConfig.from_dict(model)
    assert not hasattr(config.image, "image_size") and not hasattr(config.vitals, "hours")
    assert config.modalities == ["labs", "notes", "vitals", "image"] and config.extra == {}


def _old_layout(tmp_path: Path) -> tuple[Path, dict]:
    """The demo checkpoint's config.json as checkpoints before the move wrote it: the objective's weights in model.loss."""
    config = json.loads((ROOT / "assets" / "demo_model" / "config.json").read_text())
    config["model"]["loss"] = config["train"].pop("loss")
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder, config


def test_an_older_checkpoints_loss_section_is_read_as_its_training_record(tmp_path: Path, caplog) -> None:
    folder, old = _old_layout(tmp_path)
    with pytest.raises(ValueError, match="model.loss: not a model setting; it belongs in train.loss"):
        ModelConfig.from_dict(old["model"])  # never silently dropped
    with caplog.at_level("INFO", logger="medfuse_core.runtime.checkpoint"):
        config = ckpt.read_config(folder)
    assert "model.loss is read as train.loss" in caplog.text
    assert "loss" not in config["model"] and config["train"]["loss"] == old["model"]["loss"]
    assert TrainConfig.from_dict(config["train"]).loss.consensus_weight == 5.0
    shipped = ckpt.read_config(ROOT / "assets" / "demo_model")  # the shipped demo, migrated: the same model config
    assert config == shipped and ModelConfig.from_dict(config["model"]) == ModelConfig.from_dict(shipped["model"])
    assert json.loads((folder / "config.json").read_text()) == old  # the user's file is left as it was
    # an uploaded checkpoint of the older layout passes the upload check and installs as it is
    assert ckpt.check_config(old) == []
    # both places, different values: which one the run used is unknown, so it is refused, naming the field
    both = json.loads(json.dumps(old))
    both["train"]["loss"] = {**both["model"]["loss"], "vclub_weight": 0.0}
    (folder / "config.json").write_text(json.dumps(both))
    with pytest.raises(DataError) as caught:
        ckpt.read_config(folder)
    assert caught.value.problem.field == "model.loss" and "train.loss" in caught.value.problem.message
    assert [p.field for p in ckpt.check_config(both)] == ["model.loss"]
