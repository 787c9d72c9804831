"""The notes language model as a checkpoint uses it: the local base model, checked against the weights
hash the checkpoint stored, plus what training changed in it (LoRA adapters or fully fine-tuned weights).

Why a checkpoint pins its notes model: the note adapter and everything after it were trained on the
vectors of one particular set of weights; another model under the same folder name (a re-download,
a different revision, a different size) gives vectors the adapter never saw, and the scores would be
silently wrong. So `FeatureSpec.text_model_sha256` holds `weights_sha256` of the base folder and
`load_notes_backbone` refuses another, naming both hashes.

Fine-tuning (`train.notes.finetune`, train/notes_finetune.py):

* "lora": `peft` LoRA adapters on the attention projections (rank, alpha, dropout, target modules from
  the training config); saved in the run folder as `notes_backbone/adapter_model.safetensors` +
  `adapter_config.json` (peft's format, no pickle), merged into the base weights at load time, so
  inference and token attributions run on a plain transformers model;
* "full": every weight trained; saved as `notes_backbone/model.safetensors` + `config.json`.

Either way the sha256 of the saved weights is stored in the checkpoint and becomes part of the
backbone's `identity` ("lora:<sha256>"), which keys the sentence-embedding cache: a fine-tuned
model never reads the frozen model's (or another fine-tune's) cached vectors.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from medfuse_core.features.text_backbone import (
    DEFAULT_PROMPT,
    TextBackbone,
    WeightsHashMismatch,
    file_sha256,
    resolve_model_folder,
    weights_sha256,
)

__all__ = ["FINETUNE_MODES", "ADAPTATION_FOLDER", "check_finetune_mode", "add_lora", "unfreeze_all", "save_adaptation",
           "load_adaptation", "merge_lora", "load_notes_backbone", "trainable_parameters"]

FINETUNE_MODES = ("none", "lora", "full")
ADAPTATION_FOLDER = "notes_backbone"  # inside the run folder
_LORA_WEIGHTS = "adapter_model.safetensors"
_FULL_WEIGHTS = "model.safetensors"


def check_finetune_mode(mode: str, field: str = "train.notes.finetune") -> str:
    if mode not in FINETUNE_MODES:
        raise ValueError(f"{field} {mode!r}: expected one of {', '.join(FINETUNE_MODES)}")
    return mode


def add_lora(backbone: TextBackbone, rank: int, alpha: float, dropout: float,
             target_modules: list[str] | None) -> TextBackbone:
    """Wrap the backbone's model with LoRA adapters (trainable); the base weights stay frozen.
    `target_modules` None: peft's default for the model type (BERT: query, value; Llama/Qwen/Mistral:
    q_proj, v_proj)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=int(rank), lora_alpha=float(alpha), lora_dropout=float(dropout), bias="none",
                        target_modules=list(target_modules) if target_modules else None)
    backbone.model.requires_grad_(False)
    try:
        backbone.model = get_peft_model(backbone.model, config)
    except ValueError as exc:
        raise ValueError(f"train.notes.lora_target_modules {target_modules!r}: {exc}") from None
    backbone.frozen = False
    backbone.adaptation = None  # the weights now change: nothing may be cached under the old identity
    return backbone


def unfreeze_all(backbone: TextBackbone) -> TextBackbone:
    backbone.unfreeze()
    backbone.adaptation = None
    return backbone


def trainable_parameters(backbone: TextBackbone) -> list[nn.Parameter]:
    return [p for p in backbone.model.parameters() if p.requires_grad]


def _is_peft(model: nn.Module) -> bool:
    return hasattr(model, "peft_config")


def save_adaptation(backbone: TextBackbone, folder: str | os.PathLike, mode: str, base_name: str) -> str:
    """Write what fine-tuning changed under `folder` (safetensors + JSON); returns its sha256.
    `base_name`: how the run config named the base model (written instead of this machine's path)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if mode == "lora":
        if not _is_peft(backbone.model):
            raise ValueError("save_adaptation('lora'): the backbone has no LoRA adapters")
        backbone.model.save_pretrained(str(folder), safe_serialization=True)
        config_file = folder / "adapter_config.json"
        config = json.loads(config_file.read_text())
        config["base_model_name_or_path"] = Path(str(base_name)).name  # never an absolute path of this machine
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True))
        (folder / "README.md").unlink(missing_ok=True)  # peft's model-card stub, naming the base folder's path
        return file_sha256(folder / _LORA_WEIGHTS)
    if mode == "full":
        backbone.model.save_pretrained(str(folder), safe_serialization=True)
        return file_sha256(folder / _FULL_WEIGHTS)
    raise ValueError(f"save_adaptation: mode {mode!r}: expected 'lora' or 'full'")


def merge_lora(backbone: TextBackbone) -> TextBackbone:
    """Fold the LoRA adapters into the base weights: a plain transformers model again (faster, and the
    same embedding layer for attributions)."""
    if _is_peft(backbone.model):
        backbone.model = backbone.model.merge_and_unload()
    return backbone


def load_adaptation(backbone: TextBackbone, folder: str | os.PathLike, mode: str,
                    expected_sha256: str | None = None, dtype: torch.dtype = torch.float32) -> TextBackbone:
    """Apply a saved adaptation to a freshly loaded base backbone; frozen and merged afterwards."""
    folder = Path(folder)
    weights = folder / (_LORA_WEIGHTS if mode == "lora" else _FULL_WEIGHTS)
    if not weights.is_file():
        raise FileNotFoundError(f"{folder}: expected the fine-tuned notes model's weights {weights.name} "
                                f"(train.notes.finetune = {mode!r}); the run folder is incomplete")
    actual = file_sha256(weights)
    if expected_sha256 is not None and actual != expected_sha256.lower():
        raise WeightsHashMismatch(f"{weights}: sha256 {actual}, but the checkpoint was trained with "
                                  f"{expected_sha256}; the run folder's notes model was changed or damaged")
    if mode == "lora":
        from peft import PeftModel

        backbone.model = PeftModel.from_pretrained(backbone.model, str(folder), is_trainable=False).merge_and_unload()
    elif mode == "full":
        from transformers import AutoModel

        backbone.model = AutoModel.from_pretrained(str(folder), local_files_only=True, dtype=dtype, use_safetensors=True)
    else:
        raise ValueError(f"load_adaptation: mode {mode!r}: expected 'lora' or 'full'")
    backbone.adaptation = f"{mode}:{actual}"
    backbone.freeze()
    return backbone


def load_notes_backbone(text_model: str, *, pooling: str = "mean", max_tokens: int = 128,
                        prompt_template: str = DEFAULT_PROMPT, text_model_sha256: str | None = None,
                        finetune: str = "none", adaptation_sha256: str | None = None,
                        run_dir: str | os.PathLike | None = None, device_map: str | dict | None = None
                        ) -> TextBackbone:
    """The notes model a checkpoint was trained with, from disk only, or a clear error.

    `text_model_sha256` (stored at training time) must equal `weights_sha256` of the folder now; the
    packaged MiniLM is additionally checked against its official hash by `TextBackbone.from_pretrained`.
    Checkpoints from before the hash was stored (None) skip the comparison."""
    check_finetune_mode(finetune, "features.notes_finetune")
    if text_model_sha256 is not None:
        folder, _ = resolve_model_folder(text_model)
        actual = weights_sha256(folder)
        if actual != text_model_sha256.lower():
            raise WeightsHashMismatch(
                f"notes model {text_model!r}: this checkpoint was trained on weights with sha256 {text_model_sha256}, "
                f"but {folder} now holds weights with sha256 {actual}. A checkpoint only runs with the notes "
                "model it was trained on: point model.notes.text_model at that model, or retrain."
            )
    backbone = TextBackbone.from_pretrained(text_model, pooling=pooling, max_tokens=max_tokens,
                                            prompt_template=prompt_template, device_map=device_map)
    if finetune != "none":
        if run_dir is None:
            raise ValueError(f"notes model fine-tuned ({finetune!r}): the run folder is needed to load its weights")
        load_adaptation(backbone, Path(run_dir) / ADAPTATION_FOLDER, finetune, adaptation_sha256)
    return backbone
