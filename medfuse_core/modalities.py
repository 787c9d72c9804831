"""The modality registry: the one place where a modality declares what it is and who handles it.

Every layer iterates over the registry instead of naming modalities: the record's `present_modalities`,
the feature and model code (by key and order), the fusion tokens, the explainer's evidence methods,
the JSON schema of an explanation, the validator's bundle files, the score output's columns and every
name table of the dashboard. Adding a modality (see docs/ARCHITECTURE.md, "Add a modality") means
writing its loader, featuriser, encoder and panel and adding one `ModalitySpec` here (or calling
`register` from a plugin or a test).

Why strings for the handlers: this module sits at the bottom of the import layers (record.py imports
it), and the handlers live in the layers above (sources/, features/, models/, explain/, app/). A
"module:attribute" path is resolved only when a consumer asks for it (`ModalitySpec.resolve`), so the
registry imports nothing and no layer is pulled below another (the import contracts in pyproject.toml
check the real imports).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Iterator


@dataclass(frozen=True)
class ModalitySpec:
    """One modality.

    key            the name in code, configs, JSON and Parquet columns ("labs")
    display_name   short clinician-facing name ("Labs"), in the fusion-token names "Labs (specific)"
    long_name      in running text ("lab results": "no lab results in the first 48 h")
    code           the worklist's modality badge ("LAB")
    panel_title    the review page's section heading ("Chest X-ray")
    evidence_unit  what one evidence entry is, plural ("note sentences")
    colour         the modality's colour in the researcher charts (colour-blind safe palette)
    bundle_files   file names or glob patterns in a patient bundle folder (README, "Bundle format")
    record_field   the PatientRecord attribute that holds it ("images" for the image)
    present        "module:function" (record) -> bool: the record has something of this modality
    loader         "module:function" reading the modality's bundle files
    featurizer     "module:attribute" turning the record's modality into model inputs
    encoder_config the ModelConfig section of a built-in encoder ("labs"); another modality's encoder
                   config is ModelConfig.extra[key]
    config_class   "module:Class": the dataclass of its encoder's config
    encoder_class  "module:Class" of its encoder: built from its config; a non-built-in one maps a
                   batch input (B, ...) to (B, output_dim) and has an `output_dim` attribute
    encoder_attr   the model attribute holding the encoder ("lab_encoder": checkpoint tensor names)
    evidence       "module:function" giving its evidence maps (Captum) for one label
    panel          "module:function" drawing its dashboard panel
    """

    key: str
    display_name: str
    long_name: str
    code: str
    panel_title: str
    evidence_unit: str
    colour: str
    bundle_files: tuple[str, ...] = ()
    record_field: str = ""
    present: str = ""
    loader: str = ""
    featurizer: str = ""
    encoder_config: str = ""
    config_class: str = ""
    encoder_class: str = ""
    encoder_attr: str = ""
    evidence: str = ""
    panel: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def token_name(self) -> str:
        """Its specific fusion token's name (models/fusion.py TOKEN_NAMES)."""
        return f"specific:{self.key}"

    @property
    def token_label(self) -> str:
        """Its specific fusion token's clinician-facing name."""
        return f"{self.display_name} (specific)"

    def resolve(self, what: str) -> Any:
        """The object a handler field ("loader", "encoder_class", ...) names, imported now."""
        path = getattr(self, what)
        if not path:
            raise LookupError(f"modality {self.key!r} declares no {what}")
        module, _, attribute = path.partition(":")
        target: Any = importlib.import_module(module)
        for part in attribute.split(".") if attribute else ():
            target = getattr(target, part)
        return target


SHARED_TOKEN = "shared"
SHARED_TOKEN_LABEL = "Shared across modalities"
SHARED_COLOUR = "#7f7f7f"

BUILTIN: tuple[ModalitySpec, ...] = (
    ModalitySpec(
        key="labs", display_name="Labs", long_name="lab results", code="LAB", panel_title="Labs",
        evidence_unit="labs", colour="#0072B2", bundle_files=("labs.csv",), record_field="labs",
        loader="medfuse_core.sources.labs:labs_from_table", featurizer="medfuse_core.features.labs:lab_features",
        encoder_config="labs", config_class="medfuse_core.models.config:LabEncoderConfig", encoder_class="medfuse_core.models.lab_encoder:LabEncoder", encoder_attr="lab_encoder",
        evidence="medfuse_core.explain.evidence:EvidenceExplainer.labs", panel="app.components.labs:style_labs",
    ),
    ModalitySpec(
        key="notes", display_name="Notes", long_name="clinical notes", code="NOTE", panel_title="Notes",
        evidence_unit="note sentences", colour="#E69F00", bundle_files=("notes/",), record_field="notes",
        loader="medfuse_core.sources.bundle:read_note_text", featurizer="medfuse_core.features.notes:note_sentences",
        encoder_config="notes", config_class="medfuse_core.models.config:NoteEncoderConfig", encoder_class="medfuse_core.models.note_encoder:NoteEncoder", encoder_attr="note_encoder",
        evidence="medfuse_core.explain.evidence:EvidenceExplainer.note_sentences", panel="app.components.notes:note_html",
    ),
    ModalitySpec(
        key="vitals", display_name="Vitals", long_name="vital signs", code="VIT", panel_title="Vital signs",
        evidence_unit="vital-sign hours", colour="#009E73", bundle_files=("vitals.csv",), record_field="vitals",
        loader="medfuse_core.sources.vitals:vitals_from_table", featurizer="medfuse_core.features.vitals:discretize_record",
        encoder_config="vitals", config_class="medfuse_core.models.config:VitalsEncoderConfig", encoder_class="medfuse_core.models.vitals_encoder:VitalsEncoder", encoder_attr="vitals_encoder",
        evidence="medfuse_core.explain.evidence:EvidenceExplainer.vitals", panel="app.components.vitals:vitals_svg",
    ),
    ModalitySpec(
        key="image", display_name="X-ray", long_name="chest X-ray", code="CXR", panel_title="Chest X-ray",
        evidence_unit="X-ray", colour="#CC79A7", bundle_files=("images/",), record_field="images",
        loader="medfuse_core.sources.images:load_image", featurizer="medfuse_core.features.images:prepare_pixels",
        encoder_config="image", config_class="medfuse_core.models.config:ImageEncoderConfig", encoder_class="medfuse_core.models.image_encoder:ImageEncoder", encoder_attr="image_encoder",
        evidence="medfuse_core.explain.evidence:EvidenceExplainer.image", panel="app.components.xray:xray_figure",
    ),
)


class ModalityRegistry:
    """The registered modalities, in registration order (the order of tokens, columns and panels)."""

    def __init__(self, specs: tuple[ModalitySpec, ...] = ()):
        self._specs: dict[str, ModalitySpec] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: ModalitySpec) -> ModalitySpec:
        if spec.key in self._specs:
            raise ValueError(f"modality {spec.key!r} is already registered")
        if not spec.key.isidentifier():
            raise ValueError(f"modality key {spec.key!r}: expected a Python identifier (it names columns and tensors)")
        self._specs[spec.key] = spec
        return spec

    def unregister(self, key: str) -> None:
        """Remove a modality (tests that register a toy one clean up with this)."""
        if key in {s.key for s in BUILTIN}:
            raise ValueError(f"modality {key!r} is built in")
        self._specs.pop(key, None)

    def __getitem__(self, key: str) -> ModalitySpec:
        try:
            return self._specs[key]
        except KeyError:
            raise KeyError(f"unknown modality {key!r}; expected one of {', '.join(self._specs)}") from None

    def __contains__(self, key: object) -> bool:
        return key in self._specs

    def __iter__(self) -> Iterator[ModalitySpec]:
        return iter(tuple(self._specs.values()))

    def __len__(self) -> int:
        return len(self._specs)

    def keys(self) -> tuple[str, ...]:
        return tuple(self._specs)

    def display_names(self) -> dict[str, str]:
        """{key: display name}."""
        return {s.key: s.display_name for s in self}


REGISTRY = ModalityRegistry(BUILTIN)


def modality(key: str) -> ModalitySpec:
    """The registered modality `key` (KeyError naming the known ones otherwise)."""
    return REGISTRY[key]


def token_labels(keys: tuple[str, ...] | None = None) -> dict[str, str]:
    """{fusion token name: clinician-facing name} for `keys` (default: the built-in modalities), shared last."""
    specs = [REGISTRY[k] for k in (keys if keys is not None else tuple(s.key for s in BUILTIN))]
    return {**{s.token_name: s.token_label for s in specs}, SHARED_TOKEN: SHARED_TOKEN_LABEL}
