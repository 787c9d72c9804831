"""Evidence maps: which lab items, note sentences and tokens, vitals hours and image regions drove one
label's logit, with Captum, mapped back to what a clinician sees (PatientEvidenceIndex).

Per modality (one patient, one label at a time; `evidence_maps` loops over labels):

* labs: Captum LayerIntegratedGradients on ``lab_encoder.value_embedding`` (IG on the value
  embeddings), baseline = the embedding of all-zero value features, i.e. every item at its training
  median with no spread and no trend ("normal"). One attribution per lab token (summed over the
  embedding), named by item key / display name and given the raw last value from the record.
  ``lab_method="values"`` runs plain IntegratedGradients on the 4 value features instead (same
  baseline), with the per-feature split (last, min, max, trend).
* notes: two levels, because IG through MiniLM for every sentence costs seconds on a CPU.
  Sentence level: IntegratedGradients on the cached sentence embeddings -> one value per sentence;
  exact and cheap (the adapter and the rest of the model only). Baseline: every sentence replaced
  by the text model's vector of an empty sentence (see `empty_sentence`: not 0). Token level:
  LayerIntegratedGradients on the text backbone's input-embedding layer for the ``top_sentences``
  sentences of largest |attribution| only: that sentence goes through the backbone (the others keep
  their cached vectors), baseline = its tokens replaced by [PAD] with [CLS]/[SEP] kept. Token
  attributions of a sentence sum to logit(sentence) - logit(sentence of pads) up to the reported
  convergence delta. Sentences carry (note index, start, end) character offsets, tokens too.
* vitals: IntegratedGradients on the (hours x 76) discretized input (baseline 0: the training mean
  of every numeric column, nothing observed), summed over each clinical channel's value and mask
  columns -> (hours, 17), plus a ranked list of (channel, contiguous hour range) spans. Only cells
  holding the patient's own value (observed or carried from an observation) are evidence; the cells
  of imputed normal values (a channel never measured) are zeroed, their total kept apart
  (``imputed_attribution``).
* image, ``image_method="gradcam_ig"`` (the default): LayerGradCam on a late stage of the image
  encoder (``GRADCAM_IG_STAGE``, the one before the last: 8 x 8 at 128 px; ReLU, bilinearly
  upsampled) times IntegratedGradients on the pixels from the film blurred with a Gaussian of sigma =
  ``IMAGE_BLUR_BASELINE`` x the input side (positive part, smoothed with sigma =
  ``GRADCAM_IG_SMOOTHING`` x the side), each scaled to maximum 1. Why: Grad-CAM says which region
  holds the label's evidence but is coarse; pixel IG says which structure but also credits strong
  edges anywhere on the film; their product keeps the structure inside the region (Guided Grad-CAM's
  product, Selvaraju et al. 2017, with IG in place of guided backpropagation). The stage and the
  smoothing were chosen on a validation cohort (synth seed 3000, benchmarks/results/image_maps.md),
  where this product points into the planted region more often than any single map and than the
  products on the other stages. At most ``IMAGE_MAX_STEPS`` IG steps.
  ``"smoothed_ig"``: IG from two baselines, the black film (0 = the film mean, also the padding
  value) and the blurred film; the mean of the two, its positive part, smoothed with sigma =
  ``IMAGE_SMOOTHING`` x the side (a black baseline credits everything bright, a blurred one fine
  structure).
  ``"gradcam"``: LayerGradCam on ``image_encoder.last_stage`` (ReLU, the standard Grad-CAM),
  bilinearly upsampled to the model input (4 x 4 at 128 px: coarse). ``"ig"``: plain IG from the
  black film. Every map goes through ``ImageGeometry.to_original`` (crop the letterbox, undo the
  resize) onto the film's own pixel grid.

Speed: the other modalities' encoder outputs are computed once per patient, so IG's many steps run
only the encoder being explained (``encode_modality``) and everything after the encoders
(``model.forward_features``): the same function of the attributed input as ``model(batch)``, without
re-running, say, the ResNet 64 times for a lab attribution. Absent modalities give empty evidence.

Concurrency: the dashboard explains with one shared model from several sessions' threads at once. The
layer methods' hooks go on through ``thread_scoped`` (they act only in the thread that attached them;
without it another thread's forward pass through the hooked module would get this explanation's
tensors), and the switch to eval mode is reference-counted (``eval_mode``); see concurrency.py. The
weights are only read.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from medfuse_core.explain.concurrency import eval_mode, thread_scoped
from medfuse_core.explain.encoding import Encoding, encode
from medfuse_core.features.batch import Batch, PatientFeatures, collate
from medfuse_core.features.featurize import PatientEvidenceIndex
from medfuse_core.features.labs import FEATURE_NAMES, LabVocabulary
from medfuse_core.features.vitals import feature_names as vitals_feature_names
from medfuse_core.models.model import encode_modality
from medfuse_core.modalities import REGISTRY
from medfuse_core.record import MODALITIES, PatientRecord
from medfuse_core.sources.vital_channels import CHANNEL_NAMES

__all__ = [
    "ImageEvidence",
    "LabEvidence",
    "LabelEvidence",
    "SentenceEvidence",
    "TokenEvidence",
    "VitalsEvidence",
    "VitalsSpan",
    "EvidenceExplainer",
    "evidence_maps",
    "vitals_channel_index",
]

IMAGE_METHODS = ("gradcam_ig", "smoothed_ig", "gradcam", "ig")
DEFAULT_IMAGE_METHOD = "gradcam_ig"
IMAGE_BLUR_BASELINE = 0.05  # sigma of the blurred-film baseline, as a fraction of the input side
IMAGE_SMOOTHING = 0.12  # sigma of the smoothing of the smoothed_ig map, as a fraction of the input side
GRADCAM_IG_STAGE = -2  # gradcam_ig's Grad-CAM layer: the image encoder's stage before the last (8 x 8 at 128 px)
GRADCAM_IG_SMOOTHING = 0.04  # sigma of the smoothing of gradcam_ig's IG factor, as a fraction of the input side
IMAGE_MAX_STEPS = 32  # IG steps per baseline at most for the smoothed maps (smoothing makes more steps moot)
LAB_METHODS = ("embedding", "values")


# ------------------------------------------------------------------------------------ results


@dataclass
class LabEvidence:
    """One lab item's attribution; value/value_text/unit/time: its last raw result in the window."""

    key: str
    name: str
    attribution: float
    value: float | None = None
    value_text: str = ""
    unit: str = ""
    time: str | None = None
    features: dict[str, float] = field(default_factory=dict)  # normalised z: last, min, max, trend
    feature_attributions: dict[str, float] = field(default_factory=dict)  # lab_method="values" only


@dataclass
class SentenceEvidence:
    """A note sentence: ``record.notes[note_index].text[start:end] == text``."""

    sentence: int  # index into the patient's sentences (PatientEvidenceIndex.sentences)
    note_index: int
    start: int
    end: int
    text: str
    attribution: float


@dataclass
class TokenEvidence:
    """A word piece of an explained sentence, with character offsets into its note."""

    sentence: int
    note_index: int
    start: int
    end: int
    token: str
    attribution: float


@dataclass
class VitalsSpan:
    """A channel's contiguous hour range [start_hour, end_hour) holding most of its attribution."""

    channel: str
    start_hour: int
    end_hour: int
    attribution: float  # summed over the range
    channel_total: float  # summed over all hours


@dataclass
class VitalsEvidence:
    matrix: np.ndarray  # float32 (hours, 17), CHANNEL_NAMES order; 0 where the cell holds no patient value
    channels: list[str]
    top: list[VitalsSpan]
    convergence_delta: float
    imputed_attribution: float = 0.0  # IG's total on cells of imputed normal values: left out, not evidence


@dataclass
class ImageEvidence:
    method: str  # "gradcam" | "ig"
    heatmap: np.ndarray  # float32 (rows, cols) on the original film's pixel grid
    model_map: np.ndarray  # float32 (size, size) at model-input resolution
    image_index: int | None  # which of the record's images (record.images[i])
    convergence_delta: float | None = None  # ig only


@dataclass
class LabelEvidence:
    label: str
    labs: list[LabEvidence] = field(default_factory=list)  # ranked by |attribution|
    note_sentences: list[SentenceEvidence] = field(default_factory=list)  # ranked by |attribution|
    note_tokens: list[TokenEvidence] = field(default_factory=list)  # in text order, explained sentences only
    vitals: VitalsEvidence | None = None
    image: ImageEvidence | None = None
    convergence_delta: dict[str, float] = field(default_factory=dict)  # per method, |delta| in logit units
    notes_token_level: str = ""  # what the token level covered, in words
    extra: dict[str, Any] = field(default_factory=dict)  # other registered modalities: their evidence method's JSON


# ------------------------------------------------------------------------------ helpers


def vitals_channel_index() -> np.ndarray:
    """int (76,): the clinical channel (CHANNEL_NAMES index) of each discretized column."""
    position = {name: i for i, name in enumerate(CHANNEL_NAMES)}
    out = []
    for name in vitals_feature_names():
        base = name[len("mask->"):] if name.startswith("mask->") else name.split("->")[0]
        out.append(position[base])
    return np.asarray(out, dtype=np.int64)


def _best_range(values: np.ndarray, sign: float) -> tuple[int, int, float]:
    """Contiguous [start, end) of maximal sign * sum (Kadane); the range's signed sum."""
    best, best_range, run, start = -np.inf, (0, 1), 0.0, 0
    for i, v in enumerate(sign * values):
        if run <= 0:
            run, start = float(v), i
        else:
            run += float(v)
        if run > best:
            best, best_range = run, (start, i + 1)
    a, b = best_range
    return a, b, float(values[a:b].sum())


def vitals_spans(matrix: np.ndarray, top: int = 5) -> list[VitalsSpan]:
    """Channels ranked by |total attribution|, each with the hour range that holds most of it."""
    totals = matrix.sum(axis=0)
    spans = []
    for c in np.argsort(-np.abs(totals), kind="stable")[:top]:
        if totals[c] == 0:
            continue
        a, b, value = _best_range(matrix[:, c], 1.0 if totals[c] > 0 else -1.0)
        spans.append(VitalsSpan(CHANNEL_NAMES[c], int(a), int(b), value, float(totals[c])))
    return spans


def _with(batch: Batch, name: str, value: torch.Tensor) -> Batch:
    """`batch` (one patient) with input `name` (a Batch field or an extra modality's key) replaced by
    `value` (n rows), the rest repeated to n rows."""
    n = int(value.shape[0])
    out = batch.map(lambda v: v.expand(n, *v.shape[1:]))
    if name in out.extra:
        return replace(out, extra={**out.extra, name: value})
    return replace(out, **{name: value})


# ------------------------------------------------------------------------------ the explainer


class EvidenceExplainer:
    """Evidence maps of one patient for any label of `model`; built once per patient.

    model: a MedFuseLens (or a baseline with the same encoders); features/index: from the
    checkpoint's Featurizer; record: the patient (for raw lab values; optional); backbone: the text
    model (TextBackbone) for token-level note attributions (optional: sentences only without it).
    """

    def __init__(self, model: nn.Module, features: PatientFeatures, index: PatientEvidenceIndex,
                 record: PatientRecord | None = None, backbone: Any = None, vocabulary: LabVocabulary | None = None,
                 hours: float = 48.0, encoding: Encoding | None = None):
        self.model, self.features, self.index, self.record = model, features, index, record
        self.backbone, self.vocabulary, self.hours = backbone, vocabulary, hours
        self.labels = list(model.labels)
        self.modalities = tuple(getattr(model, "modalities", MODALITIES))
        self.present = {m: bool(features.present[i]) for i, m in enumerate(self.modalities)}
        self._empty: torch.Tensor | None = None
        # The encoders' outputs for this patient, computed once (or handed over by explain(), which
        # already has them): IG's steps then run only the encoder being explained, then
        # model.forward_features, the same function of the attributed input as model(batch).
        if encoding is None:
            encoding = encode(model, collate([features]).to(next(model.parameters()).device))
        self.batch = encoding.batch
        self._features = encoding.features
        self.logits = encoding.logits[0]

    # -- plumbing --------------------------------------------------------------------------------

    @contextmanager
    def _grad(self, enabled: bool = True) -> Iterator[None]:
        """Attributions are of the deterministic model: eval mode (restored after), grads on."""
        with eval_mode(self.model), torch.set_grad_enabled(enabled):
            yield

    def _has(self, modality: str) -> bool:
        """The patient has the modality and the model has an encoder for it."""
        return self.present.get(modality, False) and modality in self._features

    # the plumbing an evidence method of another registered modality uses (explain/input_attribution.py)
    has = _has

    def gradients(self):
        """Context for an attribution: eval mode, gradients on."""
        return self._grad()

    def forward_of(self, name: str, modality: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """Logits (n, K) as a function of input `name` (n rows) of `modality`, the rest of the patient fixed."""
        return self._forward(name, modality)

    def _logits(self, modality: str, batch: Batch) -> torch.Tensor:
        """Logits (n, K) of an n-row batch differing from the patient only in `modality`'s input."""
        n = batch.size
        features = {m: v.expand(n, *v.shape[1:]) for m, v in self._features.items()}
        features[modality] = encode_modality(self.model, modality, batch, batch.present[:, self.modalities.index(modality)])
        return self.model.forward_features(features, batch.present).logits.float()

    def _forward(self, name: str, modality: str) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda x: self._logits(modality, _with(self.batch, name, x))

    def label_index(self, label: str | int) -> int:
        if isinstance(label, int):
            return label
        if label not in self.labels:
            raise ValueError(f"label {label!r}: the model's labels are {self.labels}")
        return self.labels.index(label)

    # -- labs ------------------------------------------------------------------------------------

    def labs(self, label: str | int, n_steps: int = 64, method: str = "embedding") -> tuple[list[LabEvidence], float]:
        """Per lab item attributions, ranked by |attribution|; and |convergence delta|."""
        from captum.attr import IntegratedGradients, LayerIntegratedGradients

        if method not in LAB_METHODS:
            raise ValueError(f"lab method {method!r}: expected one of {LAB_METHODS}")
        if not self._has("labs") or not len(self.index.lab_keys):
            return [], 0.0
        k = self.label_index(label)
        x = self.batch.lab_values.float()
        with self._grad():
            if method == "embedding":
                algo = LayerIntegratedGradients(self._forward("lab_values", "labs"),
                                                thread_scoped(self.model.lab_encoder.value_embedding))
            else:
                algo = IntegratedGradients(self._forward("lab_values", "labs"))
            attr, delta = algo.attribute(x, baselines=torch.zeros_like(x), target=k, n_steps=n_steps,
                                         return_convergence_delta=True)
        attr = attr.detach()[0].double()  # (L, d) or (L, V)
        per_item = attr.sum(-1).cpu().numpy()
        raw = self._raw_lab_values()
        items = self.features.lab_items
        out = []
        for i, (key, name) in enumerate(zip(self.index.lab_keys, self.index.lab_names)):
            value, text, unit, time = raw.get(int(items[i]), (None, "", "", None))
            out.append(LabEvidence(
                key=key, name=str(name), attribution=float(per_item[i]), value=value, value_text=text, unit=unit, time=time,
                features={f: float(v) for f, v in zip(FEATURE_NAMES, self.features.lab_values[i])},
                feature_attributions=({f: float(v) for f, v in zip(FEATURE_NAMES, attr[i].tolist())} if method == "values" else {}),
            ))
        out.sort(key=lambda e: -abs(e.attribution))
        return out, float(delta.abs().max())

    def _raw_lab_values(self) -> dict[int, tuple[float | None, str, str, str | None]]:
        """item id -> (value, value text, unit, time) of its last numeric result in the window."""
        if self.record is None or self.vocabulary is None or not len(self.record.labs.table):
            return {}
        table = self.record.labs.table
        if self.record.index_time is not None and not pd.isna(self.record.index_time):
            start = pd.Timestamp(self.record.index_time)
            table = table[(table["time"] >= start) & (table["time"] <= start + pd.Timedelta(hours=float(self.hours)))]
        table = table[table["value"].notna()]
        if table.empty:
            return {}
        ids = self.vocabulary.ids_of(table["itemid"], table["item"])
        table = table.assign(_id=ids, _row=np.arange(len(table))).sort_values(["time", "_row"], na_position="first")
        out = {}
        for item_id, rows in table.groupby("_id", sort=False):
            row = rows.iloc[-1]
            time = None if pd.isna(row["time"]) else str(row["time"])
            out[int(item_id)] = (float(row["value"]), str(row["value_text"]), str(row["unit"]), time)
        return out

    # -- notes -----------------------------------------------------------------------------------

    def note_sentences(self, label: str | int, n_steps: int = 64) -> tuple[list[SentenceEvidence], float]:
        """IG on the cached sentence embeddings (baseline 0), one value per sentence, ranked."""
        from captum.attr import IntegratedGradients

        sentences = self.index.sentences
        if not self._has("notes") or not sentences:
            return [], 0.0
        k = self.label_index(label)
        x = self.batch.note_embeddings.float()
        with self._grad():
            attr, delta = IntegratedGradients(self._forward("note_embeddings", "notes")).attribute(
                x, baselines=self.empty_sentence().expand_as(x).contiguous(), target=k, n_steps=n_steps,
                return_convergence_delta=True)
        per = attr.detach()[0].double().sum(-1).cpu().numpy()
        out = [SentenceEvidence(i, s.note_index, s.start, s.end, s.text, float(per[i])) for i, s in enumerate(sentences)]
        out.sort(key=lambda e: -abs(e.attribution))
        return out, float(delta.abs().max())

    def empty_sentence(self) -> torch.Tensor:
        """The sentence-level baseline (D,): the text model's vector of an empty sentence ([CLS] [SEP]).

        Not the zero vector: the adapter starts with a LayerNorm, which is scale invariant, so on the
        path from 0 to a (unit-norm) sentence vector almost all change happens in the first few
        percent and IG's quadrature misses it (completeness gaps of 25% measured). The empty
        sentence is a unit vector too, "no content" as the token-level [PAD] baseline is. Without a
        text model: zeros.
        """
        if self._empty is None:
            d = self.batch.note_embeddings.shape[-1]
            if self.backbone is None:
                self._empty = torch.zeros(d, device=self.batch.note_embeddings.device)
            else:
                self._empty = self.backbone.embed([""])[0].to(self.batch.note_embeddings.device)
        return self._empty

    def note_tokens(self, label: str | int, sentence: int, n_steps: int = 16) -> tuple[list[TokenEvidence], float]:
        """LayerIG on the backbone's embedding layer for one sentence; baseline [PAD]s, specials kept."""
        from captum.attr import LayerIntegratedGradients

        if self.backbone is None or not self._has("notes"):
            return [], 0.0
        k = self.label_index(label)
        s = self.index.sentences[sentence]
        bb = self.backbone
        enc = bb.tokenizer([s.text if s.text.strip() else " "], truncation=True, max_length=bb.max_tokens,
                           return_offsets_mapping=True, return_special_tokens_mask=True, return_tensors="pt")
        device = bb.device
        ids = enc["input_ids"].to(device)
        attention = enc["attention_mask"].to(device)
        special = enc["special_tokens_mask"][0].bool()
        baseline = ids.clone()
        baseline[0, ~special.to(device)] = bb.tokenizer.pad_token_id
        base_notes = self.batch.note_embeddings.float()

        def forward(input_ids: torch.Tensor) -> torch.Tensor:
            n = input_ids.shape[0]
            vectors = bb(input_ids, attention.expand(n, -1)).float().to(base_notes.device)  # (n, D)
            notes = base_notes.expand(n, -1, -1).clone()
            notes[:, sentence] = vectors
            return self._logits("notes", _with(self.batch, "note_embeddings", notes))

        with self._grad():
            attr, delta = LayerIntegratedGradients(forward, thread_scoped(bb.embedding_layer)).attribute(
                ids, baselines=baseline, target=k, n_steps=n_steps, return_convergence_delta=True)
        per = attr.detach()[0].double().sum(-1).cpu().numpy()
        tokens = bb.tokenizer.convert_ids_to_tokens(enc["input_ids"][0].tolist())
        out = []
        for t, ((a, b), is_special) in enumerate(zip(enc["offset_mapping"][0].tolist(), special.tolist())):
            if is_special or b <= a:
                continue
            out.append(TokenEvidence(sentence, s.note_index, s.start + a, s.start + b, tokens[t], float(per[t])))
        return out, float(delta.abs().max())

    # -- vitals ----------------------------------------------------------------------------------

    def vitals(self, label: str | int, n_steps: int = 64, top: int = 5) -> VitalsEvidence | None:
        from captum.attr import IntegratedGradients

        if not self._has("vitals"):
            return None
        k = self.label_index(label)
        x = self.batch.vitals.float()
        with self._grad():
            attr, delta = IntegratedGradients(self._forward("vitals", "vitals")).attribute(
                x, baselines=torch.zeros_like(x), target=k, n_steps=n_steps, return_convergence_delta=True)
        cols = attr.detach()[0].double().cpu().numpy()  # (T, 76)
        channel = vitals_channel_index()
        matrix = np.zeros((cols.shape[0], len(CHANNEL_NAMES)), dtype=np.float64)
        np.add.at(matrix, (slice(None), channel), cols)
        # Evidence never credits data the patient does not have: cells holding a channel's imputed normal
        # value (a channel never measured, or hours before its first measurement) are IG's baseline
        # bookkeeping, not evidence; their total is kept apart for researchers.
        cells = getattr(self.index, "vitals_patient_cells", None)
        imputed = 0.0
        if cells is not None and cells.shape == matrix.shape:
            imputed = float(matrix[~cells].sum())
            matrix = np.where(cells, matrix, 0.0)
        return VitalsEvidence(matrix.astype(np.float32), list(CHANNEL_NAMES), vitals_spans(matrix, top),
                              float(delta.abs().max()), imputed)

    # -- image -----------------------------------------------------------------------------------

    def image(self, label: str | int, method: str = DEFAULT_IMAGE_METHOD, n_steps: int = 32,
              internal_batch_size: int | None = 8) -> ImageEvidence | None:
        from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam

        if method not in IMAGE_METHODS:
            raise ValueError(f"image method {method!r}: expected one of {IMAGE_METHODS}")
        geometry = self.index.image_geometry
        if not self._has("image") or geometry is None:
            return None
        k = self.label_index(label)
        x = self.batch.image.float()
        size = x.shape[-1]
        forward = self._forward("image", "image")
        steps = min(n_steps, IMAGE_MAX_STEPS)
        ig = IntegratedGradients(forward)

        def pixel_ig(baseline: torch.Tensor, n: int) -> tuple[torch.Tensor, float]:
            attr, d = ig.attribute(x, baselines=baseline, target=k, n_steps=n, internal_batch_size=internal_batch_size,
                                   return_convergence_delta=True)
            return attr.detach(), float(d.abs().max())

        def gradcam(stage: nn.Module) -> torch.Tensor:
            cam = LayerGradCam(forward, thread_scoped(stage)).attribute(x, target=k, relu_attributions=True)
            return LayerAttribution.interpolate(cam.detach(), (size, size), "bilinear")

        delta = None
        with self._grad():
            if method == "gradcam_ig":
                attr, delta = pixel_ig(_blurred(x, IMAGE_BLUR_BASELINE * size), steps)
                model_map = gradcam_ig_product(gradcam(self.model.image_encoder.stage(GRADCAM_IG_STAGE)), attr,
                                               GRADCAM_IG_SMOOTHING * size)
            elif method == "gradcam":
                model_map = gradcam(self.model.image_encoder.last_stage)
            elif method == "ig":
                model_map, delta = pixel_ig(torch.zeros_like(x), n_steps)
            else:
                (black, d0), (soft, d1) = (pixel_ig(torch.zeros_like(x), steps),
                                           pixel_ig(_blurred(x, IMAGE_BLUR_BASELINE * size), steps))
                model_map, delta = _blurred(((black + soft) / 2).clamp(min=0), IMAGE_SMOOTHING * size), max(d0, d1)
        model_map = model_map[0, 0].float().cpu().numpy()
        return ImageEvidence(method, geometry.to_original(model_map), model_map, self.index.image_index, delta)

    # -- everything for one label ----------------------------------------------------------------

    def label_evidence(self, label: str | int, *, image_method: str = DEFAULT_IMAGE_METHOD, lab_method: str = "embedding",
                       top_sentences: int = 3, n_steps: int = 64, token_steps: int = 16) -> LabelEvidence:
        """All four modalities' evidence for one label (absent modalities: empty)."""
        k = self.label_index(label)
        labs, d_labs = self.labs(k, n_steps, lab_method)
        sentences, d_sent = self.note_sentences(k, n_steps)
        tokens, d_tok = [], 0.0
        explained = [e.sentence for e in sentences[: max(0, top_sentences)]] if self.backbone is not None else []
        for i in sorted(explained):
            t, d = self.note_tokens(k, i, token_steps)
            tokens += t
            d_tok = max(d_tok, d)
        vitals = self.vitals(k, n_steps)
        image = self.image(k, image_method, n_steps)
        deltas = {"labs": d_labs, "note_sentences": d_sent, "note_tokens": d_tok,
                  "vitals": vitals.convergence_delta if vitals else 0.0,
                  "image": image.convergence_delta if image and image.convergence_delta is not None else 0.0}
        extra = {}
        for modality in self.modalities:  # other registered modalities, by their registry entry's method
            spec = REGISTRY[modality]
            if modality in MODALITIES or not spec.evidence:
                continue
            extra[modality], deltas[modality] = spec.resolve("evidence")(self, k, modality, n_steps)
        scope = (f"LayerIntegratedGradients on the text model's embedding layer for the top {len(explained)} "
                 f"sentence(s) by |attribution| ({token_steps} steps)" if explained else
                 ("none (no text model given)" if sentences else "none (no notes)"))
        return LabelEvidence(self.labels[k], labs, sentences, tokens, vitals, image, deltas, scope, extra)


def gradcam_ig_product(cam: torch.Tensor, attribution: torch.Tensor, smoothing: float) -> torch.Tensor:
    """The gradcam_ig map from its two factors at model resolution: an upsampled Grad-CAM map and a
    pixel IG attribution (positive part, smoothed with sigma = `smoothing` pixels), each scaled to max 1."""
    return _unit_max(cam) * _unit_max(_blurred(attribution.clamp(min=0), smoothing))


def _unit_max(attribution: torch.Tensor) -> torch.Tensor:
    """A non-negative map scaled to maximum 1 (all zeros stays all zeros)."""
    peak = attribution.max()
    return attribution / peak if float(peak) > 0 else torch.zeros_like(attribution)


def _blurred(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, C, H, W) images blurred with a Gaussian of `sigma` pixels (separable, reflect-padded)."""
    radius = max(1, int(round(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=images.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(images.dtype)
    channels = images.shape[1]
    out = torch.nn.functional.pad(images, (radius, radius, radius, radius), mode="reflect")
    out = torch.nn.functional.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return torch.nn.functional.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def evidence_maps(model: nn.Module, features: PatientFeatures, index: PatientEvidenceIndex, *,
                  record: PatientRecord | None = None, labels: Sequence[str] | None = None, backbone: Any = None,
                  vocabulary: LabVocabulary | None = None, **options) -> dict[str, LabelEvidence]:
    """{label: LabelEvidence} for `labels` (all of the model's by default); options as `label_evidence`."""
    explainer = EvidenceExplainer(model, features, index, record, backbone, vocabulary)
    return {name: explainer.label_evidence(name, **options) for name in (labels or explainer.labels)}
