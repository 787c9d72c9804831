"""Image encoder: ResNet-18 size, tiny forward/backward, last stage, 1-channel pretrained loading."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import ResNetConfig, ResNetForImageClassification, ResNetModel

from medfuse_core.models.config import ImageEncoderConfig
from medfuse_core.models.image_encoder import ImageEncoder

TINY = dict(depths=[1, 1], hidden_sizes=[8, 16], embedding_size=8, layer_type="basic")


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_resnet18_config_matches_the_standard_trunk():
    encoder = ImageEncoder(ImageEncoderConfig())
    # torchvision resnet18: 11,689,512 - fc (512*1000 + 1000) - stem weights of 2 channels (2*64*7*7)
    standard_trunk_1ch = 11_689_512 - 513_000 - 2 * 64 * 7 * 7
    assert standard_trunk_1ch == 11_170_240
    assert abs(_count(encoder) - standard_trunk_1ch) / standard_trunk_1ch < 0.01
    assert encoder.feature_dim == 512


def test_tiny_forward_shapes_gradients_and_last_stage():
    torch.manual_seed(0)
    encoder = ImageEncoder(ImageEncoderConfig(**TINY))
    assert encoder.feature_dim == 16
    captured = {}
    handle = encoder.last_stage.register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
    x = torch.randn(3, 1, 64, 64, requires_grad=True)
    features = encoder(x)
    handle.remove()
    assert features.shape == (3, 16) and torch.isfinite(features).all()
    assert captured["out"].shape == (3, 16, 8, 8)  # stride 4 (stem) x 2 (second stage) = 8
    assert torch.allclose(captured["out"].mean(dim=(2, 3)), features, atol=1e-6)
    features.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        encoder(torch.randn(1, 3, 64, 64))


def test_pretrained_three_channel_checkpoint_is_loaded_and_summed(tmp_path):
    torch.manual_seed(1)
    rgb = ResNetModel(ResNetConfig(num_channels=3, **TINY)).eval()
    folder = tmp_path / "tiny_resnet"
    rgb.save_pretrained(folder)
    assert (folder / "model.safetensors").is_file()

    config = ImageEncoderConfig(pretrained_path=str(folder))  # default ResNet-18 fields ignored
    encoder = ImageEncoder(config)
    assert encoder.training and encoder.feature_dim == 16
    saved, loaded = rgb.state_dict(), encoder.model.state_dict()
    assert set(saved) == set(loaded)
    stem = "embedder.embedder.convolution.weight"
    assert loaded[stem].shape == (8, 1, 7, 7)
    assert torch.equal(loaded[stem], saved[stem].sum(dim=1, keepdim=True))
    for name in saved:
        if name != stem:
            assert torch.equal(loaded[name], saved[name]), name

    # a grey film gives exactly what the RGB network gives for the film replicated to (x, x, x)
    encoder.eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        expected = rgb(pixel_values=x.repeat(1, 3, 1, 1)).pooler_output.flatten(1)
        assert torch.allclose(encoder(x), expected, atol=1e-5)

    saved_config = encoder.checkpoint_config
    assert saved_config.pretrained_path is None and saved_config.hidden_sizes == [8, 16]
    rebuilt = ImageEncoder(saved_config)
    rebuilt.load_state_dict(encoder.state_dict())  # a trained model reloads without the pretrained folder


def test_pretrained_classification_checkpoint_loads_its_trunk(tmp_path):
    torch.manual_seed(2)
    classifier = ResNetForImageClassification(ResNetConfig(num_channels=3, num_labels=5, **TINY))
    classifier.save_pretrained(tmp_path)
    encoder = ImageEncoder(ImageEncoderConfig(pretrained_path=str(tmp_path)))
    stem = "embedder.embedder.convolution.weight"
    expected = classifier.resnet.state_dict()[stem].sum(dim=1, keepdim=True)
    assert torch.equal(encoder.model.state_dict()[stem], expected)


def test_missing_pretrained_folder_is_a_clear_error(tmp_path):
    config = dataclasses.replace(ImageEncoderConfig(), pretrained_path=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="pretrained_path"):
        ImageEncoder(config)
