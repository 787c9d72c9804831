"""Image evidence maps on the film's own pixel grid: Grad-CAM x Integrated Gradients (the default),
smoothed IG, Grad-CAM, or plain IG (see the package docstring for why and how each was chosen)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from medfuse_core.explain.concurrency import thread_scoped
from medfuse_core.explain.evidence.results import ImageEvidence

if TYPE_CHECKING:
    from medfuse_core.explain.evidence.explainer import EvidenceExplainer

IMAGE_METHODS = ("gradcam_ig", "smoothed_ig", "gradcam", "ig")
DEFAULT_IMAGE_METHOD = "gradcam_ig"
IMAGE_BLUR_BASELINE = 0.05  # sigma of the blurred-film baseline, as a fraction of the input side
IMAGE_SMOOTHING = 0.12  # sigma of the smoothing of the smoothed_ig map, as a fraction of the input side
GRADCAM_IG_STAGE = -2  # gradcam_ig's Grad-CAM layer: the image encoder's stage before the last (8 x 8 at 128 px)
GRADCAM_IG_SMOOTHING = 0.04  # sigma of the smoothing of gradcam_ig's IG factor, as a fraction of the input side
IMAGE_MAX_STEPS = 32  # IG steps per baseline at most for the smoothed maps (smoothing makes more steps moot)
GRADCAM_IG_STEPS = 16  # gradcam_ig's IG steps at most: its pointing game on the validation cohort is the same at
# 16 and 32 steps (0.93 of 41 true positives, every disease alike; benchmarks/results/evidence_steps.md), half the time
IMAGE_IG_BATCH = GRADCAM_IG_STEPS  # film rows per forward pass of IG: gradcam_ig's steps in one pass (0.97x the time
# of chunks of 8, the same map to 1e-7: benchmarks/results/review_evidence.md); longer maps go in chunks of this


def image_map(ex: EvidenceExplainer, label: str | int, method: str = DEFAULT_IMAGE_METHOD, n_steps: int = 32,
              internal_batch_size: int | None = IMAGE_IG_BATCH) -> ImageEvidence | None:
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam

    if method not in IMAGE_METHODS:
        raise ValueError(f"image method {method!r}: expected one of {IMAGE_METHODS}")
    geometry = ex.index.image_geometry
    if not ex.has("image") or geometry is None:
        return None
    k = ex.label_index(label)
    x = ex.batch.image.float()
    size = x.shape[-1]
    forward = ex.forward_of("image", "image")
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
    with ex.gradients():
        if method == "gradcam_ig":
            attr, delta = pixel_ig(blurred(x, IMAGE_BLUR_BASELINE * size), min(n_steps, GRADCAM_IG_STEPS))
            model_map = gradcam_ig_product(gradcam(ex.model.image_encoder.stage(GRADCAM_IG_STAGE)), attr,
                                           GRADCAM_IG_SMOOTHING * size)
        elif method == "gradcam":
            model_map = gradcam(ex.model.image_encoder.last_stage)
        elif method == "ig":
            model_map, delta = pixel_ig(torch.zeros_like(x), n_steps)
        else:
            (black, d0), (soft, d1) = (pixel_ig(torch.zeros_like(x), steps),
                                       pixel_ig(blurred(x, IMAGE_BLUR_BASELINE * size), steps))
            model_map, delta = blurred(((black + soft) / 2).clamp(min=0), IMAGE_SMOOTHING * size), max(d0, d1)
    model_map = model_map[0, 0].float().cpu().numpy()
    return ImageEvidence(method, geometry.to_original(model_map), model_map, ex.index.image_index, delta)


def gradcam_ig_product(cam: torch.Tensor, attribution: torch.Tensor, smoothing: float) -> torch.Tensor:
    """The gradcam_ig map from its two factors at model resolution: an upsampled Grad-CAM map and a
    pixel IG attribution (positive part, smoothed with sigma = `smoothing` pixels), each scaled to max 1."""
    return unit_max(cam) * unit_max(blurred(attribution.clamp(min=0), smoothing))


def unit_max(attribution: torch.Tensor) -> torch.Tensor:
    """A non-negative map scaled to maximum 1 (all zeros stays all zeros)."""
    peak = attribution.max()
    return attribution / peak if float(peak) > 0 else torch.zeros_like(attribution)


def blurred(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, C, H, W) images blurred with a Gaussian of `sigma` pixels (separable, reflect-padded)."""
    radius = max(1, int(round(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=images.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(images.dtype)
    channels = images.shape[1]
    out = torch.nn.functional.pad(images, (radius, radius, radius, radius), mode="reflect")
    out = torch.nn.functional.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return torch.nn.functional.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
