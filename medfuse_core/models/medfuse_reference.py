"""The MedFuse reference architecture (Hayat et al. 2022, nyuad-cai/MedFuse), for cost comparisons.

What `benchmarks/performance.py` sets our model beside, built from the same parts as ours:

* EHR: MedFuse's LSTM over the 76-feature discretized series (2 layers, 256 hidden, last hidden
  state): our `VitalsEncoder` is that network.
* CXR: ResNet-34 (torchvision's layout: basic blocks, depths 3-4-6-3, widths 64-512, 64-wide stem)
  on 3 x 224 x 224 images, global-average pooled to 512 features; here the `transformers` ResNet with
  that config, from scratch.
* Fusion ("lstm" in MedFuse's `fusion.py`): the CXR feature projected to the EHR width (512 -> 256),
  the sequence [EHR, CXR] (or [EHR] alone when the image is missing, by packing) through a 1-layer
  LSTM of 512 hidden units, its last hidden state -> a linear layer per label.

It has no labs or notes encoder and no disentanglement: it is the reference point for "what does a
patient cost", not a model this project trains or ships.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence
from transformers import ResNetConfig, ResNetModel

from medfuse_core.models.config import VitalsEncoderConfig
from medfuse_core.models.vitals_encoder import VitalsEncoder

__all__ = ["MedFuseReference", "RESNET34", "REFERENCE_IMAGE_SIZE"]

RESNET34 = ResNetConfig(num_channels=3, embedding_size=64, hidden_sizes=[64, 128, 256, 512], depths=[3, 4, 6, 3],
                        layer_type="basic")
REFERENCE_IMAGE_SIZE = 224


class MedFuseReference(nn.Module):
    def __init__(self, n_labels: int, ehr_hidden: int = 256, ehr_layers: int = 2):
        super().__init__()
        self.ehr_model = VitalsEncoder(VitalsEncoderConfig(hidden=ehr_hidden, layers=ehr_layers))
        self.cxr_model = ResNetModel(RESNET34)
        cxr_dim = RESNET34.hidden_sizes[-1]
        self.projection = nn.Linear(cxr_dim, ehr_hidden)
        self.fusion_lstm = nn.LSTM(ehr_hidden, cxr_dim, batch_first=True)
        self.classifier = nn.Linear(cxr_dim, n_labels)

    def forward(self, vitals: torch.Tensor, image: torch.Tensor, has_image: torch.Tensor) -> torch.Tensor:
        """vitals (B, 48, 76), image (B, 3, 224, 224), has_image bool (B,) -> logits (B, n_labels).
        The image network runs only on the patients that have one."""
        ehr = self.ehr_model(vitals)
        cxr = ehr.new_zeros(ehr.shape[0], self.projection.out_features)
        if bool(has_image.any()):
            pooled = self.cxr_model(image[has_image]).pooler_output.flatten(1)
            cxr = cxr.index_put((has_image.nonzero(as_tuple=True)[0],), self.projection(pooled).to(cxr.dtype))
        sequence = torch.stack([ehr, cxr], dim=1)
        lengths = (1 + has_image.long()).cpu()
        packed = pack_padded_sequence(sequence, lengths, batch_first=True, enforce_sorted=False)
        _, (hidden, _) = self.fusion_lstm(packed)
        return self.classifier(hidden[-1])
