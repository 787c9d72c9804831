"""The modality registry is the one place a modality is named: its handlers resolve, the record, the
fusion tokens and every app name table follow it, and no hand-written modality-name table is left in app/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from medfuse_core.modalities import BUILTIN, REGISTRY, ModalitySpec, token_labels
from medfuse_core.models.fusion import TOKEN_NAMES
from medfuse_core.record import MODALITIES

ROOT = Path(__file__).resolve().parents[1]
HANDLERS = ("loader", "featurizer", "encoder_class", "evidence", "panel")


@pytest.mark.parametrize("spec", BUILTIN, ids=lambda s: s.key)
def test_every_handler_of_a_builtin_modality_resolves(spec: ModalitySpec) -> None:
    for what in HANDLERS:
        assert callable(spec.resolve(what)), (spec.key, what)


def test_record_tokens_and_app_tables_follow_the_registry() -> None:
    from app.components import lab, patient_header, worklist
    from app.components.wording import TOKEN_LABELS

    assert MODALITIES == REGISTRY.keys()[: len(BUILTIN)] == tuple(s.key for s in BUILTIN)
    assert TOKEN_NAMES == tuple(token_labels()) == tuple(TOKEN_LABELS)
    assert TOKEN_LABELS["specific:image"] == "X-ray (specific)" and TOKEN_LABELS["shared"] == "Shared across modalities"
    assert worklist.MODALITY_CODES == {"labs": "LAB", "notes": "NOTE", "vitals": "VIT", "image": "CXR"}
    assert patient_header.MODALITY_NAMES["vitals"] == "vital signs"
    assert lab.MODALITY_NAMES == {"labs": "Labs", "notes": "Notes", "vitals": "Vitals", "image": "X-ray"}


def test_register_and_unregister_a_modality() -> None:
    toy = ModalitySpec(key="toy_waveform", display_name="Waveform", long_name="waveform", code="WAV",
                       panel_title="Waveform", evidence_unit="samples", colour="#000000")
    REGISTRY.register(toy)
    try:
        assert REGISTRY["toy_waveform"] is toy and "toy_waveform" in REGISTRY.keys()
        with pytest.raises(ValueError, match="already registered"):
            REGISTRY.register(toy)
        with pytest.raises(LookupError, match="declares no loader"):
            toy.resolve("loader")
    finally:
        REGISTRY.unregister("toy_waveform")
    assert "toy_waveform" not in REGISTRY
    with pytest.raises(KeyError, match="unknown modality 'toy_waveform'"):
        REGISTRY["toy_waveform"]
    with pytest.raises(ValueError, match="built in"):
        REGISTRY.unregister("labs")


def test_no_modality_name_table_is_written_by_hand_in_the_app() -> None:
    """A dict literal keyed by the modalities with string values is a name table: it belongs in the registry."""
    keys = set(MODALITIES)
    tables = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Dict) and node.keys and all(isinstance(k, ast.Constant) for k in node.keys):
                found = {k.value for k in node.keys}
                if keys <= found and all(isinstance(v, ast.Constant) and isinstance(v.value, str) for v in node.values):
                    tables.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not tables, f"modality name tables outside medfuse_core/modalities.py: {tables}"
