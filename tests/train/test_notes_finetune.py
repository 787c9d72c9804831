"""Stage 1 fine-tunes the notes language model (LoRA, full), stage 2 trains on its vectors, the Predictor
loads it from the run folder, explain attributes note tokens through it and the dashboard's note
panel draws them. Tiny random BERT and Llama written in the test; seconds on a CPU, no download.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from streamlit.testing.v1 import AppTest

from medfuse_core.explain.api import explain
from medfuse_core.features.text_backbone import TextBackbone, file_sha256, weights_sha256
from medfuse_core.predictor import Predictor
from medfuse_core.problems import DataError
from medfuse_core.sources.bundle import find_bundles, read_bundle
from medfuse_core.sources.synth import generate_cohort
from medfuse_core.train.run import run_training
from tests.conftest import TINY_RUN_CONFIG
from tests.tiny_text_models import save_tiny_bert, save_tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")
MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")
LLAMA_PROMPT = 'Clinical note: "{text}" In one word:'


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("notes_cohort")
    generate_cohort(24, seed=11, out_dir=out, image_size=32)
    return out


@pytest.fixture(scope="module")
def records(cohort):
    return [read_bundle(f) for f in find_bundles(cohort)]


@pytest.fixture(scope="module")
def corpus(records) -> list[str]:
    return [n.text for r in records for n in r.notes]


def _config(tmp_path: Path, text_model: Path, finetune: str, decoder: bool) -> Path:
    run = json.loads(json.dumps(TINY_RUN_CONFIG))
    run["text_model"] = str(text_model)
    run["model"]["notes"] = {"pooling": "last" if decoder else "cls", "max_tokens": 48,
                             **({"prompt_template": LLAMA_PROMPT} if decoder else {})}
    run["image_size"] = 32
    run["train"].update(encoder_epochs=2, encoder_patience=2, freeze_encoders=True, batch_size=8,
                        notes={"finetune": finetune, "lora_rank": 4, "lora_alpha": 8, "lr": 0.02, "batch_size": 8})
    path = tmp_path / f"run_{finetune}.json"
    path.write_text(json.dumps(run))
    return path


@pytest.fixture(scope="module")
def llama_lora_run(cohort, corpus, tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("llama_lora")
    base = save_tiny_llama(tmp / "llama", corpus)
    run_training(cohort, tmp / "run", _config(tmp, base, "lora", decoder=True))
    return tmp / "run", base


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_stage1_fine_tunes_a_bert_and_the_predictor_loads_it(finetune, cohort, records, corpus, tmp_path) -> None:
    base = save_tiny_bert(tmp_path / "bert", corpus)
    run_dir = tmp_path / "run"
    run_training(cohort, run_dir, _config(tmp_path, base, finetune, decoder=False))
    _check_run(run_dir, base, finetune, records)


def test_stage1_lora_on_a_decoder_llm_stage2_and_predictor(llama_lora_run, records) -> None:
    run_dir, base = llama_lora_run
    _check_run(run_dir, base, "lora", records)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"]["notes"]["pooling"] == "last" and config["model"]["notes"]["prompt_template"] == LLAMA_PROMPT
    assert config["train"]["notes"]["lora_rank"] == 4


def _check_run(run_dir: Path, base: Path, finetune: str, records) -> None:
    config = json.loads((run_dir / "config.json").read_text())
    spec = config["features"]
    weights = run_dir / "notes_backbone" / ("adapter_model.safetensors" if finetune == "lora" else "model.safetensors")
    assert spec["notes_finetune"] == finetune and spec["notes_adaptation_sha256"] == file_sha256(weights)
    assert spec["text_model_sha256"] == weights_sha256(base)
    assert not (run_dir / "notes_backbone" / "README.md").exists()
    if finetune == "lora":
        adapter = json.loads((run_dir / "notes_backbone" / "adapter_config.json").read_text())
        assert adapter["r"] == 4 and not Path(adapter["base_model_name_or_path"]).is_absolute()
        assert any("lora_B" in k for k in load_file(str(weights)))
    for history_file in (run_dir / "notes_backbone" / "history.json", run_dir / "encoders" / "notes.json"):
        history = json.loads(history_file.read_text())  # the language model's epochs, then the adapter's on its vectors
        assert [h["epoch"] for h in history] == [0, 1] and all(np.isfinite(h["val_macro_auprc"]) for h in history)
    assert config["summary"]["epochs_run"] >= 1  # stage 2 ran on the fine-tuned vectors

    predictor = Predictor.load(run_dir, device="cpu")
    tuned = predictor.featurizer.backbone
    assert tuned.adaptation == f"{finetune}:{spec['notes_adaptation_sha256']}"
    frozen = TextBackbone.from_pretrained(base, pooling=tuned.pooling, max_tokens=tuned.max_tokens,
                                          prompt_template=tuned.prompt_template)
    patient = next(r for r in records if r.notes)
    features, index = predictor.featurize([patient])
    texts = [s.text for s in index[0].sentences]
    # the checkpoint's vectors are the fine-tuned model's (through the shared cache), not the frozen model's
    assert abs(features[0].note_embeddings - tuned.embed(texts).numpy()).max() < 1e-4
    assert abs(features[0].note_embeddings - frozen.embed(texts).numpy()).max() > 1e-4
    prediction = predictor.predict([patient])[0]
    assert np.isfinite(prediction.probabilities).all()


def test_explain_attributes_note_tokens_through_the_fine_tuned_decoder(llama_lora_run, records) -> None:
    run_dir, _ = llama_lora_run
    predictor = Predictor.load(run_dir, device="cpu")
    patient = next(r for r in records if r.notes)
    label = predictor.labels[0]
    ex = explain(patient, predictor, [label], top_sentences=1, token_steps=8)
    tokens = ex.per_label[label].evidence.note_tokens
    assert tokens and all(np.isfinite(t.attribution) for t in tokens)
    assert any(t.attribution != 0 for t in tokens)
    sentences = {(s.note_index, s.start, s.end) for s in predictor.featurize([patient])[1][0].sentences}
    for t in tokens:  # every token points into its own sentence of its note's text (never into the prompt)
        assert patient.notes[t.note_index].text[t.start:t.end].lower() == t.token
        assert any(n == t.note_index and a <= t.start and t.end <= b for n, a, b in sentences)


def test_dashboard_note_panel_with_a_fine_tuned_decoder(llama_lora_run, cohort, records, monkeypatch) -> None:
    run_dir, _ = llama_lora_run
    monkeypatch.setenv("MEDFUSE_LENS_CHECKPOINT", str(run_dir))
    monkeypatch.setenv("MEDFUSE_LENS_SOURCE", str(cohort))
    patient = next(r for r in records if r.notes)
    at = AppTest.from_file(MAIN, default_timeout=300)
    at.query_params["patient"] = patient.patient_id
    at = at.switch_page("views/patient.py").run()
    assert not at.exception, [e.value for e in at.exception]
    next(b for b in at.button_group if b.key == "notes_level").set_value("Words").run()
    assert not at.exception, [e.value for e in at.exception]
    notes = "".join(h.value for h in at.html if "mf-note" in h.value)
    assert notes.count("<mark") > 3  # word-level highlights from the fine-tuned decoder's attributions


def test_fine_tuning_needs_stage_1(cohort, corpus, tmp_path) -> None:
    base = save_tiny_bert(tmp_path / "bert", corpus)
    path = _config(tmp_path, base, "lora", decoder=False)
    run = json.loads(path.read_text())
    run["train"]["encoder_epochs"] = 0
    path.write_text(json.dumps(run))
    with pytest.raises(DataError) as err:
        run_training(cohort, tmp_path / "run", path)
    assert err.value.problem.field == "train.notes.finetune"
    run["train"].update(encoder_epochs=1, notes={"finetune": "qlora"})
    path.write_text(json.dumps(run))
    with pytest.raises(ValueError, match="train.notes.finetune 'qlora'"):
        run_training(cohort, tmp_path / "run", path)
