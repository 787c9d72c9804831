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
  IntegratedGradients on the text backbone's input (word-piece) embeddings for the ``top_sentences``
  sentences of largest |attribution| only, in one Captum call (example i of the batch: sentence i through
  the backbone, the others keep their cached vectors; shorter sentences padded with masked [PAD]),
  baseline = its tokens replaced by [PAD] with [CLS]/[SEP] kept. Token
  attributions of a sentence sum to logit(sentence) - logit(sentence of pads) up to the reported
  convergence delta. Sentences carry (note index, start, end) character offsets, tokens too.
* vitals: IntegratedGradients on the (hours x 76) discretized input (baseline 0: the training mean
  of every numeric column, nothing observed), summed over each clinical channel's value and mask
  columns -> (hours, 17), plus a ranked list of (channel, contiguous hour range) spans. Only cells
  holding the patient's own value (observed or carried from an observation) are evidence; cells of
  imputed normal values are zeroed, their total kept apart (``imputed_attribution``).
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
  products on the other stages. At most ``GRADCAM_IG_STEPS`` IG steps (16: the same pointing game as 32
  on that cohort, at half the cost of the map that dominates a review's time).
  ``"smoothed_ig"`` (at most ``IMAGE_MAX_STEPS`` steps per baseline): IG from two baselines, the black film (0 = the film mean, also the padding
  value) and the blurred film; the mean of the two, its positive part, smoothed with sigma =
  ``IMAGE_SMOOTHING`` x the side (a black baseline credits everything bright, a blurred one fine
  structure).
  ``"gradcam"``: LayerGradCam on ``image_encoder.last_stage`` (ReLU, the standard Grad-CAM),
  bilinearly upsampled to the model input (4 x 4 at 128 px: coarse). ``"ig"``: plain IG from the
  black film. Every map goes through ``ImageGeometry.to_original`` (crop the letterbox, undo the
  resize) onto the film's own pixel grid.

Steps: a review (``label_evidence``) runs the vitals map at ``n_steps`` (the CLI: 64; the LSTM's integral
converges slowly) and the maps that converge sooner at fewer: labs at most ``LAB_IG_STEPS`` and sentences at
most ``SENTENCE_IG_STEPS`` (32: convergence deltas at float noise, the same ranking as a 128-step reference),
the film at most ``GRADCAM_IG_STEPS`` (its steps in one batch, ``IMAGE_IG_BATCH``), words at ``token_steps``;
benchmarks/results/review_evidence.md and evidence_steps.md hold the measurements.

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

from medfuse_core.explain.evidence.explainer import EvidenceExplainer, evidence_maps
from medfuse_core.explain.evidence.image import (
    DEFAULT_IMAGE_METHOD,
    GRADCAM_IG_SMOOTHING,
    GRADCAM_IG_STAGE,
    GRADCAM_IG_STEPS,
    IMAGE_BLUR_BASELINE,
    IMAGE_IG_BATCH,
    IMAGE_MAX_STEPS,
    IMAGE_METHODS,
    IMAGE_SMOOTHING,
    blurred,
    gradcam_ig_product,
    unit_max,
)
from medfuse_core.explain.evidence.labs import LAB_IG_STEPS, LAB_METHODS
from medfuse_core.explain.evidence.notes import SENTENCE_IG_STEPS
from medfuse_core.explain.evidence.results import (
    ImageEvidence,
    LabelEvidence,
    LabEvidence,
    SentenceEvidence,
    TokenEvidence,
    VitalsEvidence,
    VitalsSpan,
)
from medfuse_core.explain.evidence.vitals import vitals_channel_index, vitals_spans

__all__ = [
    "DEFAULT_IMAGE_METHOD",
    "GRADCAM_IG_SMOOTHING",
    "GRADCAM_IG_STAGE",
    "GRADCAM_IG_STEPS",
    "IMAGE_BLUR_BASELINE",
    "IMAGE_IG_BATCH",
    "IMAGE_MAX_STEPS",
    "IMAGE_METHODS",
    "IMAGE_SMOOTHING",
    "LAB_IG_STEPS",
    "LAB_METHODS",
    "SENTENCE_IG_STEPS",
    "EvidenceExplainer",
    "ImageEvidence",
    "LabEvidence",
    "LabelEvidence",
    "SentenceEvidence",
    "TokenEvidence",
    "VitalsEvidence",
    "VitalsSpan",
    "blurred",
    "evidence_maps",
    "gradcam_ig_product",
    "unit_max",
    "vitals_channel_index",
    "vitals_spans",
]
