"""The MedFuse reference architecture used by benchmarks/performance.py: its parts are MedFuse's."""

from __future__ import annotations

import pytest
import torch

from medfuse_core.models.medfuse_reference import REFERENCE_IMAGE_SIZE, MedFuseReference
from medfuse_core.models.vitals_encoder import lstm_parameter_count

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def reference() -> MedFuseReference:
    torch.manual_seed(0)
    return MedFuseReference(n_labels=25).eval()


def test_parts_have_medfuse_sizes(reference: MedFuseReference) -> None:
    # torchvision resnet34 has 21,797,672 parameters, 513,000 of them in its 1000-class fc layer
    assert sum(p.numel() for p in reference.cxr_model.parameters()) == 21_797_672 - 513_000
    assert sum(p.numel() for p in reference.ehr_model.parameters()) == lstm_parameter_count(76, 256, 2)
    assert reference.fusion_lstm.input_size == 256 and reference.fusion_lstm.hidden_size == 512


def test_missing_image_is_skipped_not_zero_filled(reference: MedFuseReference) -> None:
    vitals = torch.randn(3, 48, 76)
    image = torch.randn(3, 3, REFERENCE_IMAGE_SIZE, REFERENCE_IMAGE_SIZE)
    has_image = torch.tensor([True, False, True])
    with torch.inference_mode():
        logits = reference(vitals, image, has_image)
        other_pixels = reference(vitals, torch.randn_like(image), has_image)
        alone = reference(vitals[1:2], image[1:2], torch.tensor([False]))
    assert logits.shape == (3, 25) and torch.isfinite(logits).all()
    # the patient without an image does not see any pixels, and equals its own 1-step sequence
    torch.testing.assert_close(other_pixels[1], logits[1])
    torch.testing.assert_close(alone[0], logits[1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(other_pixels[0], logits[0])  # the ones with an image do
