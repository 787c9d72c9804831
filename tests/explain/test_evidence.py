"""Evidence maps: IG completeness checked against the model's own logits at input and baseline, a toy
model whose lab attributions are known analytically, token offsets into the notes, the Grad-CAM
overlay on the film's pixel grid, and empty evidence for absent modalities."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from medfuse_core.explain.evidence import EvidenceExplainer, vitals_channel_index, vitals_spans
from medfuse_core.features.batch import Batch, collate
from medfuse_core.models.model import MedFuseLens
from medfuse_core.record import ChestImage, Labs
from medfuse_core.sources.vital_channels import CHANNEL_NAMES
from tests.model_fixtures import tiny_config

# Completeness tolerance for IG with 64 Gauss-Legendre steps, in logit units: the functions are smooth
# (GELU, LayerNorm away from 0, softmax, LSTM gates), so the quadrature error is a small fraction of
# the logit change; measured <= 1% of |change| + 4e-4 on the tiny model, allowed 2% + 2e-3.
REL_TOL, ABS_TOL = 0.02, 2e-3


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(small_cohort):
    featurizer, features, records, evidence = small_cohort
    torch.manual_seed(0)
    model = MedFuseLens(tiny_config(featurizer)).eval()
    full = next(i for i, f in enumerate(features) if f.present.all())
    return featurizer, features, records, evidence, model, full


def _explainer(tiny, i=None) -> EvidenceExplainer:
    featurizer, features, records, evidence, model, full = tiny
    i = full if i is None else i
    return EvidenceExplainer(model, features[i], evidence[i], records[i], featurizer.backbone, featurizer.vocabulary)


def _logit(model, batch: Batch, k: int, **replace) -> float:
    """The model's own logit (plain forward, no explainer path) with some inputs replaced."""
    b = copy.copy(batch)
    for name, value in replace.items():
        setattr(b, name, value)
    with torch.no_grad():
        return float(model(b).logits[0, k])


def _close(total: float, change: float) -> bool:
    return abs(total - change) <= ABS_TOL + REL_TOL * abs(change)


# ------------------------------------------------------------------------------------------ labs


@pytest.mark.parametrize("method", ["embedding", "values"])
def test_lab_attributions_add_up_to_the_logit_change(tiny, method) -> None:
    model = tiny[4]
    ex = _explainer(tiny)
    batch = collate([tiny[1][tiny[5]]])
    for k in range(3):
        labs, delta = ex.labs(k, n_steps=64, method=method)
        total = sum(e.attribution for e in labs)
        change = _logit(model, batch, k) - _logit(model, batch, k, lab_values=torch.zeros_like(batch.lab_values))
        assert _close(total, change), (k, total, change)
        # Captum's delta is exactly our independent gap: the explainer computes the model's function
        assert abs(abs(total - change) - delta) < 1e-5
    assert [e.key for e in labs] == sorted((e.key for e in labs), key=lambda key: -abs(next(x.attribution for x in labs if x.key == key)))
    assert {e.key for e in labs} == set(tiny[3][tiny[5]].lab_keys)
    named = [e for e in labs if e.value is not None]
    assert named and all(e.name and e.value_text for e in named)  # raw values found in the record


class _ToyLabEncoder(nn.Module):
    """summary = sum over tokens of gate[item] * value_embedding(values), value_embedding = 'last'."""

    def __init__(self, vocab: int, strong: int):
        super().__init__()
        self.value_embedding = nn.Linear(4, 1, bias=False)
        with torch.no_grad():
            self.value_embedding.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
        gate = torch.full((vocab,), 0.1)
        gate[strong] = 5.0
        self.register_buffer("gate", gate)

    def forward(self, items, values, mask=None, value_embeddings=None):
        emb = self.value_embedding(values)[..., 0] * (items > 0)
        return (emb * self.gate[items]).sum(1, keepdim=True), None


@dataclass
class _Out:
    logits: torch.Tensor


class _ToyLabModel(nn.Module):
    """The explainer's public interface around the toy lab encoder: logit 0 = summary, logit 1 = -summary."""

    labels = ["driven", "opposite"]

    def __init__(self, vocab: int, strong: int):
        super().__init__()
        self.lab_encoder = _ToyLabEncoder(vocab, strong)

    def modality_features(self, batch, present):
        return {"labs": self.lab_encoder(batch.lab_items, batch.lab_values)[0]}

    def forward_features(self, features, present, token_keep=None):
        z = features["labs"]
        return _Out(torch.cat([z, -z], dim=1))

    def forward(self, batch, present=None, token_keep=None):
        return self.forward_features(self.modality_features(batch, batch.present), batch.present)


@pytest.mark.parametrize("method", ["embedding", "values"])
def test_the_lab_that_drives_the_logit_ranks_first(tiny, method) -> None:
    featurizer, features, records, evidence = tiny[:4]
    i = next(j for j, f in enumerate(features) if len(f.lab_items) >= 3)
    f = copy.deepcopy(features[i])
    strong = int(f.lab_items[1])
    f.lab_values[:] = 3.0  # every lab far from normal ...
    f.lab_values[1, 0] = 1.0  # ... the driving one less so: its gate, not its value, makes it first
    model = _ToyLabModel(featurizer.vocabulary.size + 1, strong)
    ex = EvidenceExplainer(model, f, evidence[i], records[i], None, featurizer.vocabulary)
    labs, delta = ex.labs("driven", n_steps=8, method=method)
    assert labs[0].key == evidence[i].lab_keys[1]
    # linear model: IG is exact, gate * last value per item
    assert labs[0].attribution == pytest.approx(5.0, abs=1e-5)
    assert all(e.attribution == pytest.approx(0.3, abs=1e-5) for e in labs[1:])
    assert delta < 1e-5
    if method == "values":
        assert labs[0].feature_attributions == pytest.approx({"last": 5.0, "min": 0.0, "max": 0.0, "trend": 0.0}, abs=1e-6)
    opposite, _ = ex.labs("opposite", n_steps=8, method=method)
    assert opposite[0].key == labs[0].key and opposite[0].attribution == pytest.approx(-5.0, abs=1e-5)


# ----------------------------------------------------------------------------------------- notes


def test_note_sentences_add_up_and_point_into_the_notes(tiny) -> None:
    model, i = tiny[4], tiny[5]
    record = tiny[2][i]
    ex = _explainer(tiny)
    batch = collate([tiny[1][i]])
    baseline = ex.empty_sentence().expand_as(batch.note_embeddings)
    for k in range(3):
        sentences, delta = ex.note_sentences(k, n_steps=64)
        total = sum(e.attribution for e in sentences)
        change = _logit(model, batch, k) - _logit(model, batch, k, note_embeddings=baseline)
        assert _close(total, change), (k, total, change)
    assert len(sentences) == len(tiny[3][i].sentences)
    for e in sentences:
        assert record.notes[e.note_index].text[e.start:e.end] == e.text


def test_token_layer_ig_converges_and_offsets_match_the_note_text(tiny) -> None:
    i = tiny[5]
    record = tiny[2][i]
    ex = _explainer(tiny)
    sentences, _ = ex.note_sentences(0)
    top = sentences[0]
    tokens, delta = ex.note_tokens(0, top.sentence, n_steps=24)
    assert tokens and delta < 2e-3  # measured <= 6e-4 at 24 steps
    for t in tokens:
        assert t.sentence == top.sentence and top.start <= t.start < t.end <= top.end
        piece = t.token.removeprefix("##")
        if piece != "[UNK]":
            assert record.notes[t.note_index].text[t.start:t.end].lower() == piece
    evidence = ex.label_evidence(0, top_sentences=2, token_steps=8)
    assert {t.sentence for t in evidence.note_tokens} == {s.sentence for s in evidence.note_sentences[:2]}
    assert "top 2 sentence" in evidence.notes_token_level


def test_the_top_sentences_in_one_batch_get_each_sentences_own_attributions(tiny) -> None:
    """The review attributes its top sentences' words in one Captum call: example i of the batch replaces
    sentence i only, shorter sentences padded. Each must get what a call for it alone gives."""
    ex = _explainer(tiny)
    sentences, _ = ex.note_sentences(0)
    length = {s.sentence: ex.backbone.tokenize_for_attribution(s.text)["input_ids"].shape[1] for s in sentences}
    # the top sentence, then sentences of other lengths: the shorter ones are padded in the batch
    chosen = [sentences[0].sentence]
    for s in sentences[1:]:
        if len(chosen) < 3 and length[s.sentence] not in {length[i] for i in chosen}:
            chosen.append(s.sentence)
    assert len(chosen) >= 2
    batched, batched_delta = ex.note_tokens_batch(0, chosen, n_steps=8)
    alone = [ex.note_tokens(0, i, n_steps=8) for i in chosen]
    singles = [t for tokens, _ in alone for t in tokens]
    assert [(t.sentence, t.note_index, t.start, t.end, t.token) for t in batched] == \
        [(t.sentence, t.note_index, t.start, t.end, t.token) for t in singles]
    np.testing.assert_allclose([t.attribution for t in batched], [t.attribution for t in singles], rtol=1e-4, atol=1e-7)
    assert batched_delta == pytest.approx(max(d for _, d in alone), abs=1e-6)
    assert ex.note_tokens_batch(0, [], n_steps=8) == ([], 0.0)


def test_a_review_runs_the_lab_and_sentence_maps_at_their_step_caps(tiny) -> None:
    from medfuse_core.explain.evidence.labs import LAB_IG_STEPS
    from medfuse_core.explain.evidence.notes import SENTENCE_IG_STEPS

    ex = _explainer(tiny)
    evidence = ex.label_evidence(0, top_sentences=0, n_steps=2 * LAB_IG_STEPS)
    labs, lab_delta = ex.labs(0, LAB_IG_STEPS)
    sentences, sentence_delta = ex.note_sentences(0, SENTENCE_IG_STEPS)
    assert [(e.key, e.attribution) for e in evidence.labs] == [(e.key, e.attribution) for e in labs]
    assert [(e.sentence, e.attribution) for e in evidence.note_sentences] == [(e.sentence, e.attribution) for e in sentences]
    assert evidence.convergence_delta["labs"] == lab_delta and evidence.convergence_delta["note_sentences"] == sentence_delta
    fewer = ex.label_evidence(0, top_sentences=0, n_steps=8)  # fewer steps than the caps are taken as asked
    assert [e.attribution for e in fewer.labs] == [e.attribution for e in ex.labs(0, 8)[0]]


# ---------------------------------------------------------------------------------------- vitals


def test_vitals_matrix_keeps_the_total_and_names_channels(tiny) -> None:
    model, i = tiny[4], tiny[5]
    ex = _explainer(tiny)
    batch = collate([tiny[1][i]])
    v = ex.vitals(1, n_steps=64)
    assert v.matrix.shape == (48, 17) and v.channels == list(CHANNEL_NAMES)
    change = _logit(model, batch, 1) - _logit(model, batch, 1, vitals=torch.zeros_like(batch.vitals))
    # completeness: the cells with the patient's values plus the imputed cells kept apart (not evidence)
    assert _close(float(v.matrix.astype(np.float64).sum()) + v.imputed_attribution, change)
    totals = v.matrix.sum(0)
    assert [s.channel for s in v.top] == [CHANNEL_NAMES[c] for c in np.argsort(-np.abs(totals), kind="stable")[: len(v.top)]]
    for s in v.top:
        assert 0 <= s.start_hour < s.end_hour <= 48


def test_channel_index_covers_76_columns_and_spans_find_the_hot_hours() -> None:
    index = vitals_channel_index()
    assert index.shape == (76,) and set(index.tolist()) == set(range(17))
    assert np.bincount(index).min() == 2  # every channel: at least a value column and its mask
    m = np.zeros((48, 17))
    m[10:14, 3] = 1.0
    m[20, 3] = -0.5
    m[30:32, 5] = -2.0
    spans = vitals_spans(m, top=2)
    assert [(s.channel, s.start_hour, s.end_hour) for s in spans] == [(CHANNEL_NAMES[5], 30, 32), (CHANNEL_NAMES[3], 10, 14)]
    assert spans[1].channel_total == pytest.approx(3.5)


# ----------------------------------------------------------------------------------------- image


def _with_film(tiny, rows: int, cols: int):
    featurizer, features, records, *_ = tiny
    record = copy.deepcopy(records[tiny[5]])
    g = np.random.default_rng(0)
    record.images = [ChestImage(time=None, view="PA", pixels=g.random((rows, cols)).astype(np.float32))]
    f, ix = featurizer.featurize(record)
    return record, f, ix


def test_gradcam_overlay_lies_on_the_films_pixel_grid(tiny) -> None:
    record, f, ix = _with_film(tiny, 90, 50)  # portrait: letterboxed left and right
    ex = EvidenceExplainer(tiny[4], f, ix, record)
    im = ex.image(0, method="gradcam")
    assert im.method == "gradcam" and im.image_index == 0
    assert im.heatmap.shape == (90, 50) and im.model_map.shape == (32, 32)
    assert np.isfinite(im.heatmap).all() and (im.heatmap >= 0).all()  # ReLU Grad-CAM
    assert float(im.heatmap.max()) > 0
    g = ix.image_geometry
    assert g.left > 0  # there was padding, and it was cropped away
    np.testing.assert_allclose(im.heatmap, g.to_original(im.model_map))


def test_image_ig_option_adds_up(tiny) -> None:
    record, f, ix = _with_film(tiny, 40, 40)
    ex = EvidenceExplainer(tiny[4], f, ix, record)
    im = ex.image(0, method="ig", n_steps=32)
    assert im.method == "ig" and im.heatmap.shape == (40, 40) and np.isfinite(im.heatmap).all()
    batch = collate([f])
    change = _logit(tiny[4], batch, 0) - _logit(tiny[4], batch, 0, image=torch.zeros_like(batch.image))
    gap = abs(float(im.model_map.astype(np.float64).sum()) - change)
    assert abs(gap - im.convergence_delta) < 1e-4  # ReLU network: the gap itself is reported, not bounded
    with pytest.raises(ValueError, match="image method"):
        ex.image(0, method="saliency")


def test_blur_is_a_normalised_gaussian() -> None:
    from scipy.ndimage import gaussian_filter

    from medfuse_core.explain.evidence import blurred as _blurred

    image = torch.from_numpy(np.random.default_rng(1).random((1, 1, 40, 40)).astype(np.float32))
    ours = _blurred(image, 3.0)[0, 0].numpy()
    reference = gaussian_filter(image[0, 0].numpy().astype(np.float64), 3.0, mode="mirror", truncate=3.0)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    np.testing.assert_allclose(_blurred(torch.full((1, 1, 20, 20), 2.5), 4.0).numpy(), 2.5, rtol=1e-5)


def test_gradcam_ig_is_the_default_and_the_product_of_its_two_factors(tiny) -> None:
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam

    from medfuse_core.explain.evidence import GRADCAM_IG_SMOOTHING, GRADCAM_IG_STAGE, IMAGE_BLUR_BASELINE
    from medfuse_core.explain.evidence import blurred as _blurred

    record, f, ix = _with_film(tiny, 90, 50)
    ex = EvidenceExplainer(tiny[4], f, ix, record)
    x = ex.batch.image.float()

    def cam_of(k: int) -> np.ndarray:
        with ex._grad():
            cam = LayerGradCam(ex._forward("image", "image"), tiny[4].image_encoder.stage(GRADCAM_IG_STAGE)).attribute(
                x, target=k, relu_attributions=True)
        return LayerAttribution.interpolate(cam.detach(), (32, 32), "bilinear")[0, 0].numpy()

    k = next(k for k in range(len(ex.labels)) if float(cam_of(k).max()) > 0)
    im = ex.image(k, n_steps=16)
    assert im.method == "gradcam_ig" and im.heatmap.shape == (90, 50) and im.model_map.shape == (32, 32)
    assert np.isfinite(im.heatmap).all() and (im.model_map >= 0).all()
    assert float(im.model_map.max()) <= 1 + 1e-6 and float(im.model_map.max()) > 0
    assert im.convergence_delta is not None and np.isfinite(im.convergence_delta)
    # Grad-CAM (ReLU, scaled to max 1) times the positive part of IG from the blurred film, smoothed, scaled to max 1
    cam = cam_of(k)
    with ex._grad():
        attr = IntegratedGradients(ex._forward("image", "image")).attribute(
            x, baselines=_blurred(x, IMAGE_BLUR_BASELINE * 32), target=k, n_steps=16).detach()
    fine = _blurred(attr.clamp(min=0), GRADCAM_IG_SMOOTHING * 32)[0, 0].numpy()
    np.testing.assert_allclose(im.model_map, (cam / cam.max()) * (fine / fine.max()), atol=1e-5)
    assert (im.model_map[cam == 0] == 0).all()  # no credit outside the class region Grad-CAM marks
    np.testing.assert_allclose(im.heatmap, ix.image_geometry.to_original(im.model_map))


def test_unit_max_keeps_an_all_zero_map() -> None:
    from medfuse_core.explain.evidence import unit_max as _unit_max

    assert float(_unit_max(torch.zeros(1, 1, 4, 4)).abs().max()) == 0.0
    np.testing.assert_allclose(_unit_max(torch.tensor([[0.5, 2.0]])).numpy(), [[0.25, 1.0]])


def test_smoothed_ig_is_smooth_nonnegative_and_on_the_film(tiny) -> None:
    from medfuse_core.explain.evidence import IMAGE_SMOOTHING
    from medfuse_core.explain.evidence import blurred as _blurred

    record, f, ix = _with_film(tiny, 90, 50)
    ex = EvidenceExplainer(tiny[4], f, ix, record)
    im = ex.image(0, method="smoothed_ig", n_steps=16)
    assert im.method == "smoothed_ig" and im.heatmap.shape == (90, 50) and im.model_map.shape == (32, 32)
    assert np.isfinite(im.heatmap).all() and (im.model_map >= 0).all() and float(im.model_map.max()) > 0
    assert im.convergence_delta is not None and np.isfinite(im.convergence_delta)
    # the map is the mean of two IG maps (black and blurred baselines), positive part, smoothed
    zero = ex.image(0, method="ig", n_steps=16).model_map
    assert not np.allclose(im.model_map, _blurred(torch.from_numpy(np.clip(zero, 0, None))[None, None],
                                                   IMAGE_SMOOTHING * 32)[0, 0].numpy())  # the blurred baseline counts
    # smooth: neighbouring pixels differ far less than in the raw IG map
    assert np.abs(np.diff(im.model_map, axis=0)).mean() < 0.2 * np.abs(np.diff(zero, axis=0)).mean()
    np.testing.assert_allclose(im.heatmap, ix.image_geometry.to_original(im.model_map))


# ----------------------------------------------------------------------------------- all / absent


def test_fast_path_computes_the_models_own_logits(tiny) -> None:
    ex = _explainer(tiny)
    with torch.no_grad():
        for modality, name in [("labs", "lab_values"), ("notes", "note_embeddings"), ("vitals", "vitals"), ("image", "image")]:
            x = getattr(ex.batch, name)
            torch.testing.assert_close(ex._forward(name, modality)(x.expand(3, *x.shape[1:]))[1], ex.logits, atol=1e-5, rtol=0)


def test_absent_modalities_give_empty_evidence(tiny) -> None:
    featurizer, _, records, *_ = tiny
    record = copy.deepcopy(records[tiny[5]])
    record.labs = Labs()
    record.images = []
    f, ix = featurizer.featurize(record)
    assert not f.present[0] and not f.present[3]
    ex = EvidenceExplainer(tiny[4], f, ix, record, featurizer.backbone, featurizer.vocabulary)
    ev = ex.label_evidence(0, top_sentences=1, n_steps=8, token_steps=4)
    assert ev.labs == [] and ev.image is None
    assert ev.note_sentences and ev.vitals is not None
    assert ev.convergence_delta["labs"] == 0.0 and ev.convergence_delta["image"] == 0.0
    with pytest.raises(ValueError, match="labels"):
        ex.label_evidence("no such label")
