"""Any local transformers model as the notes backbone: the run config's pooling / max_tokens / prompt are
read, a checkpoint pins its model's weights, and a fine-tuned model never reads stale cached vectors.

Tiny random models (2-layer BERT and Llama, tokenizers trained in the test) written to tmp_path:
no download, seconds on a CPU.
"""

from __future__ import annotations

import json

import pytest
import torch

from medfuse_core.features.embedding_cache import EmbeddingCache
from medfuse_core.features.featurize import FeatureSpec, Featurizer
from medfuse_core.features.text_backbone import TextBackbone, WeightsHashMismatch, weights_sha256
from medfuse_core.features.text_finetune import add_lora, load_adaptation, merge_lora, save_adaptation
from medfuse_core.problems import DataError
from medfuse_core.sources.synth import LABEL_NAMES, generate_patient
from medfuse_core.train.run import RunConfig, notes_settings
from tests.tiny_text_models import save_tiny_bert, save_tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")

SENTENCES = [
    "Patient with productive cough and fever overnight.",
    "Known COPD on home oxygen, wheezing today.",
    "Denies chest pain.",
    "Started on insulin for diabetes; metformin held.",
]


@pytest.fixture(scope="module")
def records():
    return [generate_patient(5, i, image_size=32) for i in range(6)]


@pytest.fixture(scope="module")
def corpus(records) -> list[str]:
    return [n.text for r in records for n in r.notes] + SENTENCES


@pytest.fixture(scope="module")
def bert(tmp_path_factory, corpus):
    return save_tiny_bert(tmp_path_factory.mktemp("bert"), corpus)


@pytest.fixture(scope="module")
def llama(tmp_path_factory, corpus):
    return save_tiny_llama(tmp_path_factory.mktemp("llama"), corpus)


def _fit(records, folder, tmp_path, **notes) -> Featurizer:
    run = RunConfig(text_model=str(folder), model={"notes": notes})
    n = notes_settings(run)
    return Featurizer.fit(records, LABEL_NAMES, image_size=32, text_model=n.text_model, pooling=n.pooling,
                          max_tokens=n.max_tokens, prompt_template=n.prompt_template, cache_dir=tmp_path / "cache")


# ------------------------------------------------------------------------------ the run config is read


def test_pooling_and_max_tokens_of_the_run_config_reach_the_backbone(records, bert, tmp_path) -> None:
    cls = _fit(records, bert, tmp_path, pooling="cls", max_tokens=6)
    mean = _fit(records, bert, tmp_path, pooling="mean", max_tokens=64)
    assert (cls.spec.pooling, cls.spec.max_tokens) == ("cls", 6)
    assert (cls.backbone.pooling, cls.backbone.max_tokens) == ("cls", 6)
    assert (mean.backbone.pooling, mean.backbone.max_tokens) == ("mean", 64)
    assert cls.backbone.tokenize(SENTENCES)["input_ids"].shape[1] == 6  # truncated at max_tokens
    assert mean.backbone.tokenize(SENTENCES)["input_ids"].shape[1] > 6
    a, b = cls.embed_sentences(SENTENCES), mean.embed_sentences(SENTENCES)
    assert a.shape == b.shape == (4, 32) and not torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-3)
    # CLS pooling is the first hidden state, whatever the model computes after it
    bb = cls.backbone
    enc = bb.tokenize(SENTENCES)
    with torch.no_grad():
        first = bb.model(**enc).last_hidden_state[:, 0]
    assert torch.allclose(torch.tensor(a), first, atol=1e-5)


@pytest.mark.parametrize("notes, field", [
    ({"pooling": "max"}, "model.notes.pooling"),
    ({"max_tokens": 0}, "model.notes.max_tokens"),
    ({"prompt_template": "no placeholder"}, "model.notes.prompt_template"),
    ({"poolng": "mean"}, "model.notes"),
])
def test_bad_notes_settings_are_named(notes, field) -> None:
    with pytest.raises(DataError) as err:
        notes_settings(RunConfig(model={"notes": notes}))
    assert err.value.problem.field == field


# ------------------------------------------------------------------------------ decoder LLMs


def test_decoder_reads_the_prompt_left_padded_and_pools_the_last_token(records, llama, tmp_path) -> None:
    prompt = 'Clinical note: "{text}" In one word:'
    f = _fit(records, llama, tmp_path, pooling="last", prompt_template=prompt, max_tokens=64)
    bb = f.backbone
    assert bb.tokenizer.padding_side == "left" and bb.prompt("x") == 'Clinical note: "x" In one word:'
    enc = bb.tokenize(SENTENCES)
    assert bool(enc["attention_mask"][:, -1].all())  # the last position is real in every row
    batch = f.embed_sentences(SENTENCES)
    one_by_one = torch.cat([bb.embed([s]) for s in SENTENCES]).numpy()
    assert abs(batch - one_by_one).max() < 1e-4  # padding changes nothing
    plain = _fit(records, llama, tmp_path, pooling="last", max_tokens=64)
    assert abs(plain.embed_sentences(SENTENCES) - batch).max() > 1e-3  # the prompt is really read
    assert json.loads(bb.identity)["prompt_template"] == prompt  # and keys the cache


@pytest.mark.parametrize("model", ["bert", "llama"])
def test_attribution_tokens_map_back_to_the_sentence(model, request, records, tmp_path) -> None:
    folder = request.getfixturevalue(model)
    template = "Note: {text} end" if model == "llama" else "{text}"
    f = _fit(records, folder, tmp_path, pooling="last" if model == "llama" else "mean", prompt_template=template)
    text = SENTENCES[1]
    enc = f.backbone.tokenize_for_attribution(text)
    spans = enc["spans"]
    assert [text[a:b].lower() for _, a, b, _ in spans] == [t for _, _, _, t in spans]  # offsets into the sentence
    assert "note" not in [t for *_, t in spans] and "end" not in [t for *_, t in spans]  # template excluded
    own = [t for t, *_ in spans]
    base, ids = enc["baseline_ids"][0], enc["input_ids"][0]
    assert bool((base[own] == f.backbone.tokenizer.pad_token_id).all())
    kept = [i for i in range(len(ids)) if i not in own]
    assert kept and bool((base[kept] == ids[kept]).all())  # specials and prompt kept as context
    # the attribution's end point is the model's real input: the same vector the featurizer embeds
    with torch.no_grad():
        vector = f.backbone(enc["input_ids"], enc["attention_mask"])
    assert torch.allclose(vector, f.backbone.embed([text]), atol=1e-5)


# ------------------------------------------------------------------------------ identity


def test_checkpoint_refuses_a_backbone_with_other_weights(records, corpus, tmp_path) -> None:
    folder = save_tiny_bert(tmp_path / "model", corpus, seed=0)
    f = _fit(records, folder, tmp_path)
    trained = f.spec.text_model_sha256
    assert trained == weights_sha256(folder) and len(trained) == 64
    spec = FeatureSpec.from_dict(json.loads(json.dumps(f.spec.to_dict())))  # as read from config.json
    assert Featurizer(spec).backbone is not None  # same weights: loads
    save_tiny_bert(tmp_path / "model", corpus, seed=1)  # another model under the same folder name
    changed = weights_sha256(folder)
    with pytest.raises(WeightsHashMismatch) as err:
        Featurizer(spec).backbone
    assert trained in str(err.value) and changed in str(err.value)


def test_fine_tuned_backbone_never_reads_the_frozen_models_cached_vectors(bert, tmp_path) -> None:
    cache = EmbeddingCache(tmp_path / "cache")
    frozen = TextBackbone.from_pretrained(bert)
    before = cache.get_or_compute(SENTENCES, frozen)
    assert cache.misses == 4
    tuned = TextBackbone.from_pretrained(bert)
    add_lora(tuned, rank=4, alpha=8, dropout=0.0, target_modules=None)
    with torch.no_grad():  # what training does: the LoRA B matrices move away from zero
        for name, p in tuned.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    sha = save_adaptation(tuned, tmp_path / "adapter", "lora", str(bert))
    merge_lora(tuned).freeze()
    tuned.adaptation = f"lora:{sha}"
    assert tuned.identity != frozen.identity
    after = cache.get_or_compute(SENTENCES, tuned)
    assert cache.misses == 8  # recomputed, not served from the frozen model's rows
    assert abs(after - tuned.embed(SENTENCES).numpy()).max() < 1e-5
    assert abs(after - before).max() > 1e-3
    # the saved adapter, loaded as a checkpoint loads it, gives the same vectors under the same cache key
    loaded = load_adaptation(TextBackbone.from_pretrained(bert), tmp_path / "adapter", "lora", expected_sha256=sha)
    assert loaded.identity == tuned.identity
    assert abs(cache.get_or_compute(SENTENCES, loaded) - after).max() == 0 and cache.misses == 8
    assert abs(loaded.embed(SENTENCES).numpy() - after).max() < 1e-5
    with pytest.raises(WeightsHashMismatch, match="was changed or damaged"):
        load_adaptation(TextBackbone.from_pretrained(bert), tmp_path / "adapter", "lora", expected_sha256="0" * 64)


def test_device_map_placement_through_accelerate_gives_the_same_vectors(llama, monkeypatch) -> None:
    from transformers import AutoModel

    seen = []
    original = AutoModel.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs.get("device_map"))
        return original(*args, **kwargs)

    plain = TextBackbone.from_pretrained(llama, pooling="last")
    monkeypatch.setattr(AutoModel, "from_pretrained", spy)
    placed = TextBackbone.from_pretrained(llama, pooling="last", device_map="auto")  # accelerate places it (here: CPU)
    assert seen == ["auto"] and placed.device.type == "cpu"
    assert torch.allclose(plain.embed(SENTENCES), placed.embed(SENTENCES), atol=1e-5)
