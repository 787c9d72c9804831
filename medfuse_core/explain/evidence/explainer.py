"""EvidenceExplainer: one patient's evidence maps for any label, built once per patient from its
encoding; the plumbing every algorithm shares (eval mode with gradients, the forward function of one
input with the rest of the patient fixed); the algorithms themselves are one per file."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from medfuse_core.explain.concurrency import eval_mode
from medfuse_core.explain.encoding import Encoding, encode
from medfuse_core.explain.evidence.image import DEFAULT_IMAGE_METHOD, IMAGE_IG_BATCH, image_map
from medfuse_core.explain.evidence.inputs import with_input
from medfuse_core.explain.evidence.labs import LAB_IG_STEPS, lab_attributions
from medfuse_core.explain.evidence.notes import (
    SENTENCE_IG_STEPS,
    empty_sentence,
    sentence_attributions,
    sentences_token_attributions,
    token_attributions,
)
from medfuse_core.explain.evidence.results import (
    ImageEvidence,
    LabelEvidence,
    LabEvidence,
    SentenceEvidence,
    TokenEvidence,
    VitalsEvidence,
)
from medfuse_core.explain.evidence.vitals import vitals_attributions
from medfuse_core.features.batch import Batch, PatientFeatures, collate
from medfuse_core.features.featurize import PatientEvidenceIndex
from medfuse_core.features.labs import LabVocabulary
from medfuse_core.features import window
from medfuse_core.modalities import REGISTRY
from medfuse_core.models.model import encode_modality
from medfuse_core.record import MODALITIES, PatientRecord


class EvidenceExplainer:
    """Evidence maps of one patient for any label of `model`; built once per patient.

    model: a MedFuseLens (or a baseline with the same encoders); features/index: from the
    checkpoint's Featurizer; record: the patient (for raw lab values; optional); backbone: the text
    model (TextBackbone) for token-level note attributions (optional: sentences only without it).
    """

    def __init__(self, model: nn.Module, features: PatientFeatures, index: PatientEvidenceIndex,
                 record: PatientRecord | None = None, backbone: Any = None, vocabulary: LabVocabulary | None = None,
                 hours: float = window.HOURS, encoding: Encoding | None = None):
        self.model, self.features, self.index, self.record = model, features, index, record
        self.backbone, self.vocabulary, self.hours = backbone, vocabulary, hours
        self.labels = list(model.labels)
        self.modalities = tuple(getattr(model, "modalities", MODALITIES))
        self.present = {m: bool(features.present[i]) for i, m in enumerate(self.modalities)}
        self.cache: dict[str, Any] = {}  # per patient, e.g. the empty-sentence baseline (notes.py)
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

    logits_of = _logits

    def _forward(self, name: str, modality: str) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda x: self._logits(modality, with_input(self.batch, name, x))

    def label_index(self, label: str | int) -> int:
        if isinstance(label, int):
            return label
        if label not in self.labels:
            raise ValueError(f"label {label!r}: the model's labels are {self.labels}")
        return self.labels.index(label)

    # -- one algorithm per file (labs.py, notes.py, vitals.py, image.py) --------------------------

    def labs(self, label: str | int, n_steps: int = 64, method: str = "embedding") -> tuple[list[LabEvidence], float]:
        """Per lab item attributions, ranked by |attribution|; and |convergence delta| (labs.py)."""
        return lab_attributions(self, label, n_steps, method)

    def note_sentences(self, label: str | int, n_steps: int = 64) -> tuple[list[SentenceEvidence], float]:
        """One attribution per note sentence, ranked (notes.py)."""
        return sentence_attributions(self, label, n_steps)

    def empty_sentence(self) -> torch.Tensor:
        """The sentence-level baseline (notes.py)."""
        return empty_sentence(self)

    def note_tokens(self, label: str | int, sentence: int, n_steps: int = 16) -> tuple[list[TokenEvidence], float]:
        """Word-piece attributions of one sentence (notes.py)."""
        return token_attributions(self, label, sentence, n_steps)

    def note_tokens_batch(self, label: str | int, sentences: Sequence[int], n_steps: int = 16) -> tuple[list[TokenEvidence], float]:
        """Word-piece attributions of several sentences in one batch (notes.py)."""
        return sentences_token_attributions(self, label, list(sentences), n_steps)

    def vitals(self, label: str | int, n_steps: int = 64, top: int = 5) -> VitalsEvidence | None:
        """Hour x channel attributions and the top spans (vitals.py)."""
        return vitals_attributions(self, label, n_steps, top)

    def image(self, label: str | int, method: str = DEFAULT_IMAGE_METHOD, n_steps: int = 32,
              internal_batch_size: int | None = IMAGE_IG_BATCH) -> ImageEvidence | None:
        """The film's evidence map (image.py)."""
        return image_map(self, label, method, n_steps, internal_batch_size)

    def label_evidence(self, label: str | int, *, image_method: str = DEFAULT_IMAGE_METHOD, lab_method: str = "embedding",
                       top_sentences: int = 3, n_steps: int = 64, token_steps: int = 16) -> LabelEvidence:
        """All four modalities' evidence for one label (absent modalities: empty). `n_steps`: IG steps of the
        vitals map and of every other registered modality's; the maps that converge sooner take fewer, at most
        LAB_IG_STEPS (labs, the default method), SENTENCE_IG_STEPS (note sentences) and GRADCAM_IG_STEPS (the
        film); the word attributions take `token_steps`. Each map's convergence delta is reported."""
        k = self.label_index(label)
        lab_steps = min(n_steps, LAB_IG_STEPS) if lab_method == "embedding" else n_steps
        labs, d_labs = self.labs(k, lab_steps, lab_method)
        sentences, d_sent = self.note_sentences(k, min(n_steps, SENTENCE_IG_STEPS))
        explained = [e.sentence for e in sentences[: max(0, top_sentences)]] if self.backbone is not None else []
        tokens, d_tok = self.note_tokens_batch(k, sorted(explained), token_steps)
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
        scope = (f"IntegratedGradients on the text model's word-piece embeddings for the top {len(explained)} "
                 f"sentence(s) by |attribution| ({token_steps} steps)" if explained else
                 ("none (no text model given)" if sentences else "none (no notes)"))
        return LabelEvidence(self.labels[k], labs, sentences, tokens, vitals, image, deltas, scope, extra)


def evidence_maps(model: nn.Module, features: PatientFeatures, index: PatientEvidenceIndex, *,
                  record: PatientRecord | None = None, labels: Sequence[str] | None = None, backbone: Any = None,
                  vocabulary: LabVocabulary | None = None, **options) -> dict[str, LabelEvidence]:
    """{label: LabelEvidence} for `labels` (all of the model's by default); options as `label_evidence`."""
    explainer = EvidenceExplainer(model, features, index, record, backbone, vocabulary)
    return {name: explainer.label_evidence(name, **options) for name in (labels or explainer.labels)}
