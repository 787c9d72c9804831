"""Chest X-ray encoder: a `transformers` ResNet on 1-channel images -> one pooled feature vector.

* From scratch (default): `ResNetModel(ResNetConfig(num_channels=1, depths, hidden_sizes,
  embedding_size, layer_type))`, transformers' own initialisation (Kaiming for convolutions, BN at
  identity). The default config is the ResNet-18 trunk: 11,170,240 parameters with 1 input channel
  (torchvision's resnet18 minus its fc layer, minus 2 x 3,136 stem weights for the 2 dropped channels).
* Pretrained: `config.pretrained_path` names a *local* folder written by `save_pretrained` of a
  transformers `ResNetModel` or `ResNetForImageClassification` (config.json + model.safetensors),
  loaded with `local_files_only=True` (never the network). The checkpoint's own config.json decides
  the architecture (`depths`, `hidden_sizes`, ... of `ImageEncoderConfig` are then ignored; see
  `checkpoint_config`). A 3-channel (RGB) stem is adapted to grey by **summing the first
  convolution's kernels over the input channels**: for a grey film replicated to RGB, (x, x, x),
  the summed kernel gives exactly the RGB network's response, so the pretrained features carry over
  unchanged. `features/images.py` standardises each film to zero mean / unit variance, about the
  scale ImageNet-normalised inputs have, so the pretrained statistics roughly hold.
* Output: `forward(x)` with x (B, 1, H, W) -> (B, feature_dim) after global average pooling of the
  last stage; `feature_dim == hidden_sizes[-1]`. The output stride is 4 x 2^(stages - 1): 32 for
  the four-stage default, so 224 -> a 7 x 7 last-stage map, 128 -> 4 x 4.
* Attribution: `last_stage` is the module of the last encoder stage (output (B, feature_dim,
  H/32, W/32)), the layer to give Captum's `LayerGradCam`; the input keeps its gradient path, so
  `IntegratedGradients` on the pixels works too. `feature_map(x)` returns that stage's output.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn
from transformers import ResNetConfig, ResNetModel

from medfuse_core.models.config import ImageEncoderConfig

__all__ = ["ImageEncoder", "adapt_first_conv_to_grey", "resnet_config"]


def resnet_config(config: ImageEncoderConfig) -> ResNetConfig:
    """The transformers config of a from-scratch 1-channel encoder."""
    return ResNetConfig(
        num_channels=1,
        embedding_size=int(config.embedding_size),
        hidden_sizes=[int(h) for h in config.hidden_sizes],
        depths=[int(d) for d in config.depths],
        layer_type=config.layer_type,
    )


def adapt_first_conv_to_grey(model: ResNetModel) -> None:
    """Make a C-channel ResNet take 1 channel: the stem kernel becomes its sum over input channels."""
    stem = model.embedder.embedder.convolution
    if stem.in_channels == 1:
        return
    grey = nn.Conv2d(
        1, stem.out_channels, kernel_size=stem.kernel_size, stride=stem.stride,
        padding=stem.padding, dilation=stem.dilation, groups=1, bias=stem.bias is not None,
    ).to(device=stem.weight.device, dtype=stem.weight.dtype)
    with torch.no_grad():
        grey.weight.copy_(stem.weight.sum(dim=1, keepdim=True))
        if stem.bias is not None:
            grey.bias.copy_(stem.bias)
    model.embedder.embedder.convolution = grey
    model.embedder.num_channels = 1  # ResNetEmbeddings checks the input's channel count against this
    model.config.num_channels = 1


class ImageEncoder(nn.Module):
    def __init__(self, config: ImageEncoderConfig):
        super().__init__()
        self.config = config
        if config.pretrained_path:
            path = Path(config.pretrained_path).expanduser()
            if not (path / "config.json").is_file():
                raise FileNotFoundError(
                    f"image encoder pretrained_path {str(path)!r}: expected a local folder with a transformers "
                    "ResNet's config.json and model.safetensors"
                )
            model = ResNetModel.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
            adapt_first_conv_to_grey(model)
            model.train()  # from_pretrained returns eval mode; an nn.Module starts in train mode
        else:
            model = ResNetModel(resnet_config(config))
        self.model = model
        self.feature_dim = int(model.config.hidden_sizes[-1])

    @property
    def last_stage(self) -> nn.Module:
        """The last encoder stage (for LayerGradCam); its output is (B, feature_dim, h, w)."""
        return self.stage(-1)

    def stage(self, index: int) -> nn.Module:
        """Encoder stage `index` (Python indexing: -1 is `last_stage`); its output is (B, hidden_sizes[index], h, w)."""
        return self.model.encoder.stages[index]

    @property
    def checkpoint_config(self) -> ImageEncoderConfig:
        """This encoder's architecture as an `ImageEncoderConfig` with no pretrained_path.

        Save this in a trained model's config.json: the trained weights replace the pretrained ones
        anyway, so reloading must not need the pretrained folder.
        """
        c = self.model.config
        out = copy.deepcopy(self.config)
        out.depths = list(c.depths)
        out.hidden_sizes = list(c.hidden_sizes)
        out.embedding_size = int(c.embedding_size)
        out.layer_type = str(c.layer_type)
        out.pretrained_path = None
        return out

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) -> the last stage's output (B, feature_dim, h, w)."""
        return self.model.encoder(self.model.embedder(images), return_dict=True).last_hidden_state

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) standardised pixels -> (B, feature_dim) pooled features."""
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"expected images of shape (B, 1, H, W), got {tuple(images.shape)}")
        return self.model.pooler(self.feature_map(images)).flatten(1)
