"""The upload page's checkpoint section (AppTest): a valid config.json + model.safetensors is kept in the
session's temporary folder and, on request, becomes the session's checkpoint; pickle files are refused."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as load_safetensors
from streamlit.testing.v1 import AppTest

from app.bundle_zip import SESSION_PREFIX

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")


@pytest.fixture()
def with_model(demo_checkpoint: Path, monkeypatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("MEDFUSE_LENS_CHECKPOINT", str(demo_checkpoint))
    monkeypatch.delenv("MEDFUSE_LENS_SOURCE", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the session folder lands here, where the test can see it
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return demo_checkpoint


def page() -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=300)
    at.switch_page("views/upload.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def send(at: AppTest, files: list[tuple[str, bytes]]) -> AppTest:
    at.file_uploader(key="upload_checkpoint").set_value([(n, d, "application/octet-stream") for n, d in files]).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_valid_checkpoint_is_offered_and_used_for_the_session(with_model: Path, tmp_path: Path) -> None:
    at = send(page(), [(n, (with_model / n).read_bytes()) for n in ("config.json", "model.safetensors")])
    assert "passed the checks" in " ".join(s.value for s in at.success)
    # issue 17: its domain file never comes with an upload; the page says there is no check (not "in domain")
    warning = " ".join(w.value for w in at.warning)
    assert "No applicability-domain check: this checkpoint has no domain file" in warning
    assert "Nor are uncertainty intervals shown with it" in warning
    sessions = list(tmp_path.glob(SESSION_PREFIX + "*"))
    assert len(sessions) == 1
    installed = next(sessions[0].glob("checkpoint-*"))
    assert sorted(p.name for p in installed.iterdir()) == ["config.json", "model.safetensors"]
    assert at.session_state["checkpoint_dir"] == str(with_model)

    at.button(key="use_uploaded_checkpoint").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["checkpoint_dir"] == str(installed)
    assert at.sidebar.text_input(key="checkpoint_dir").value == str(installed)
    assert "in use for this session" in " ".join(i.value for i in at.info)
    assert not [b for b in at.button if b.key == "use_uploaded_checkpoint"]


def test_pickle_and_mismatched_checkpoints_are_refused_on_the_page(with_model: Path, tmp_path: Path) -> None:
    state = load_safetensors((with_model / "model.safetensors").read_bytes())
    buffer = io.BytesIO()
    torch.save(state, buffer)
    at = send(page(), [("config.json", (with_model / "config.json").read_bytes()), ("model.pt", buffer.getvalue())])
    assert "The checkpoint was refused" in " ".join(e.value for e in at.error)
    rows = next(d.value for d in at.dataframe if "message" in d.value.columns)
    assert list(rows["file"]) == ["model.pt", "model.safetensors"]
    assert "refused: a pickle file" in rows["message"].iloc[0]
    assert not list(tmp_path.glob(SESSION_PREFIX + "*/checkpoint-*"))  # nothing was kept
    assert not [b for b in at.button if b.key == "use_uploaded_checkpoint"]

    config = json.loads((with_model / "config.json").read_text())
    config["model"]["fusion"]["d_model"] *= 2
    at = send(page(), [("config.json", json.dumps(config).encode()),
                       ("model.safetensors", (with_model / "model.safetensors").read_bytes())])
    rows = next(d.value for d in at.dataframe if "message" in d.value.columns)
    assert (rows["file"] == "model.safetensors").all() and rows["message"].str.contains("expected shape").any()


def test_a_new_checkpoint_upload_replaces_the_unused_one(with_model: Path, tmp_path: Path) -> None:
    weights = (with_model / "model.safetensors").read_bytes()
    config = json.loads((with_model / "config.json").read_text())
    at = send(page(), [("config.json", json.dumps(config).encode()), ("model.safetensors", weights)])
    first = list(tmp_path.glob(SESSION_PREFIX + "*/checkpoint-*"))
    config["calibration"]["temperature"] = 2.0
    send(at, [("config.json", json.dumps(config).encode()), ("model.safetensors", weights)])
    second = list(tmp_path.glob(SESSION_PREFIX + "*/checkpoint-*"))
    assert len(first) == len(second) == 1 and first != second  # the first, never used, is gone
    assert json.loads((second[0] / "config.json").read_text())["calibration"]["temperature"] == 2.0
