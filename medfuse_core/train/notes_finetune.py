"""Training stage 1 for the notes branch when its language model is fine-tuned (`train.notes.finetune`).

MEDFuse fine-tunes its notes language model on the clinical task (a medical Llama-3-8B with LoRA);
the default here keeps the model frozen and trains only the sentence adapter on cached vectors (see
train/encoder_pretrain.py), which is what the CPU affords. With `finetune` "lora" (peft adapters on the
attention projections) or "full" (every weight), this stage trains the language model, the note
adapter (`NoteEncoder`) and a throwaway label head together on the notes task: the training
patients with notes, masked BCE over all labels, early stopping on the validation macro-AUPRC of
the patients with notes, as for every other encoder in stage 1.

Per step the sentences of a batch of patients go through the language model with gradients (each
distinct sentence once; copy-forward boilerplate repeats), are pooled as the backbone says, and
fill the (B, S, D) input of the adapter. Validation embeds each distinct sentence once per epoch.

What it leaves behind, in the run folder (resumable: a rerun finds them and skips the stage):
`notes_backbone/` (features/text_finetune.py: LoRA adapters or full weights, safetensors + JSON;
`note_adapter.safetensors`, the adapter as trained with them; `history.json`), and, on the
featurizer, the fine-tuned backbone (merged, frozen) with the spec's `notes_finetune` /
`notes_adaptation_sha256` set, so the train and validation sets are re-embedded by it and the
sentence-embedding cache keys its vectors by the new weights. The note adapter then goes on
training on those cached vectors in the ordinary stage 1 (train/encoder_pretrain.py), from the
weights it reached here: the language model's steps are costly (a few epochs on a CPU), the
adapter's on cached vectors are not, so the adapter gets as many epochs as in the frozen setting.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from medfuse_core.features.featurize import Featurizer, label_vector
from medfuse_core.features.notes import note_sentences
from medfuse_core.features.text_backbone import TextBackbone
from medfuse_core.features.text_finetune import (
    ADAPTATION_FOLDER,
    add_lora,
    check_finetune_mode,
    load_adaptation,
    merge_lora,
    save_adaptation,
    trainable_parameters,
    unfreeze_all,
)
from medfuse_core.runtime.precision import mixed_precision
from medfuse_core.record import PatientRecord
from medfuse_core.train.encoder_pretrain import EncoderLog, label_head
from medfuse_core.runtime.calibration import sigmoid
from medfuse_core.train.metrics import auprc, macro

__all__ = ["NotesTrainConfig", "finetune_notes"]


@dataclass
class NotesTrainConfig:
    """`train.notes`: how stage 1 trains the notes language model (training only; a checkpoint records
    what it did in its feature spec and its `notes_backbone/` folder)."""

    finetune: str = "none"  # "none" (frozen, adapter only) | "lora" | "full"
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | None = None  # None: peft's default for the model type (BERT: query, value)
    lr: float = 2e-4  # the language model's learning rate (the adapter and head use train.encoder_lr)
    epochs: int | None = None  # None: train.encoder_epochs
    batch_size: int = 16  # patients per step (all their sentences go through the language model)
    embed_batch_size: int = 64  # sentences per forward pass when embedding (validation, featurizing)
    compile: bool = False  # torch.compile the language model (CUDA only; off on the CPU, where it does not pay)
    device_map: str | None = None  # "auto": let accelerate place/offload a model too large for one device

    def __post_init__(self) -> None:
        check_finetune_mode(self.finetune)
        if self.finetune == "lora" and (int(self.lora_rank) < 1 or float(self.lora_alpha) <= 0):
            raise ValueError(f"train.notes: lora_rank {self.lora_rank!r} and lora_alpha {self.lora_alpha!r}: expected positive numbers")
        if not 0 <= float(self.lora_dropout) < 1:
            raise ValueError(f"train.notes.lora_dropout {self.lora_dropout!r}: expected a number in [0, 1)")
        if int(self.batch_size) < 1 or int(self.embed_batch_size) < 1:
            raise ValueError("train.notes.batch_size / embed_batch_size: expected positive numbers")


@dataclass
class _NotesRows:
    sentences: list[list[str]]  # per patient, the sentences the featurizer would embed
    labels: np.ndarray  # (N, K)

    @classmethod
    def of(cls, records: Sequence[PatientRecord], featurizer: Featurizer) -> "_NotesRows":
        spec = featurizer.spec
        sentences, labels = [], []
        for record in records:
            texts = [s.text for s in note_sentences(record.notes, spec.max_sentences)]
            if texts:
                sentences.append(texts)
                labels.append(label_vector(record, spec.labels))
        k = len(spec.labels)
        return cls(sentences, np.stack(labels) if labels else np.zeros((0, k), dtype=np.float32))


def _padded(vectors: torch.Tensor, inverse: torch.Tensor, counts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct-sentence vectors (U, D) + index of each sentence (N,) -> (B, S, D) and mask (B, S)."""
    b, s = len(counts), max(counts)
    out = vectors.new_zeros(b, s, vectors.shape[-1])
    mask = torch.zeros(b, s, dtype=torch.bool, device=vectors.device)
    rows = torch.repeat_interleave(torch.arange(b, device=vectors.device), torch.tensor(counts, device=vectors.device))
    cols = torch.cat([torch.arange(c, device=vectors.device) for c in counts])
    out = out.index_put((rows, cols), vectors[inverse])
    mask[rows, cols] = True
    return out, mask


def _distinct(batch_sentences: list[list[str]]) -> tuple[list[str], torch.Tensor, list[int]]:
    flat = [t for texts in batch_sentences for t in texts]
    index: dict[str, int] = {}
    inverse = torch.tensor([index.setdefault(t, len(index)) for t in flat], dtype=torch.long)
    return list(index), inverse, [len(texts) for texts in batch_sentences]


def _val_score(backbone: TextBackbone, encoder: nn.Module, head: nn.Module, rows: _NotesRows, device: torch.device,
               precision: str, embed_batch: int) -> float:
    encoder.eval(), head.eval(), backbone.eval()
    unique, inverse, counts = _distinct(rows.sentences)
    with torch.inference_mode(), mixed_precision(device, precision):
        vectors = torch.cat([backbone(**backbone.tokenize(unique[i:i + embed_batch])).float()
                             for i in range(0, len(unique), embed_batch)])
        logits = []
        offset = 0
        for begin in range(0, len(counts), 64):
            part = counts[begin:begin + 64]
            n = sum(part)
            x, mask = _padded(vectors, inverse[offset:offset + n].to(device), part)
            offset += n
            logits.append(head(encoder(x, mask)[0].float()).float().cpu().numpy())
    y, p = rows.labels, sigmoid(np.concatenate(logits))
    return macro([auprc(y[:, k], p[:, k]) for k in range(y.shape[1])])


def finetune_notes(model: nn.Module, featurizer: Featurizer, train_records: Sequence[PatientRecord],
                   val_records: Sequence[PatientRecord], config: NotesTrainConfig, *, out_dir: Path, epochs: int,
                   patience: int, encoder_lr: float, weight_decay: float, seed: int, device: torch.device,
                   precision: str = "auto", progress: bool = True) -> list[EncoderLog]:
    """Fine-tune the notes language model with the note adapter (see the module docstring); in place:
    `model`'s note encoder and `featurizer`'s backbone end with the best weights. No-op for "none"."""
    if config.finetune == "none":
        return []
    out_dir = Path(out_dir)
    folder = out_dir / ADAPTATION_FOLDER
    encoder = model.encoders()["notes"]
    spec = featurizer.spec
    backbone = featurizer.backbone
    weights_file = folder / ("adapter_model.safetensors" if config.finetune == "lora" else "model.safetensors")
    adapter_file, history_file = folder / "note_adapter.safetensors", folder / "history.json"
    if weights_file.is_file() and adapter_file.is_file():  # resumed: this stage finished before
        load_adaptation(backbone, folder, config.finetune)
        spec.notes_finetune, spec.notes_adaptation_sha256 = config.finetune, backbone.adaptation.split(":", 1)[1]
        encoder.load_state_dict(load_file(str(adapter_file), device=str(device)))
        return [EncoderLog(**h) for h in json.loads(history_file.read_text())] if history_file.is_file() else []

    train_rows, val_rows = _NotesRows.of(train_records, featurizer), _NotesRows.of(val_records, featurizer)
    if len(train_rows.sentences) < 2 or not val_rows.sentences:
        raise ValueError(f"train.notes.finetune {config.finetune!r}: expected notes in at least 2 training and 1 "
                         f"validation patients; found {len(train_rows.sentences)} and {len(val_rows.sentences)}")
    torch.manual_seed(seed)
    if config.finetune == "lora":
        add_lora(backbone, config.lora_rank, config.lora_alpha, config.lora_dropout, config.lora_target_modules)
    else:
        unfreeze_all(backbone)
    if config.device_map is None:
        backbone.to(device)
    encoder.to(device)
    head = label_head(int(model.feature_dims["notes"]), train_rows.labels.shape[1]).to(device)
    lm_params = trainable_parameters(backbone)
    optimizer = torch.optim.AdamW([
        {"params": lm_params, "lr": config.lr},
        {"params": list(encoder.parameters()) + list(head.parameters()), "lr": encoder_lr},
    ], weight_decay=weight_decay)
    forward = backbone.forward
    if config.compile and device.type == "cuda":
        forward = torch.compile(backbone.forward)
    generator = torch.Generator().manual_seed(seed)
    labels = torch.tensor(train_rows.labels, dtype=torch.float32)
    n_epochs = int(config.epochs if config.epochs is not None else epochs)
    logs: list[EncoderLog] = []
    best, best_epoch, best_state = -math.inf, -1, None
    for epoch in range(n_epochs):
        if best_epoch >= 0 and epoch - best_epoch > patience:
            break
        started, total, n = time.perf_counter(), 0.0, 0
        backbone.train(), encoder.train(), head.train()
        order = torch.randperm(len(train_rows.sentences), generator=generator).tolist()
        steps = range(0, len(order), config.batch_size)
        for begin in tqdm(steps, desc=f"notes language model {epoch + 1}/{n_epochs}", disable=not progress, leave=False):
            idx = order[begin:begin + config.batch_size]
            unique, inverse, counts = _distinct([train_rows.sentences[i] for i in idx])
            y = labels[idx].to(device)
            with mixed_precision(device, precision):
                enc = backbone.tokenize(unique)
                vectors = forward(enc["input_ids"], enc["attention_mask"]).to(device)
                x, mask = _padded(vectors, inverse.to(device), counts)
                logits = head(encoder(x, mask)[0]).float()
            known = ~torch.isnan(y)
            loss = nn.functional.binary_cross_entropy_with_logits(logits[known], y[known])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([*lm_params, *encoder.parameters(), *head.parameters()], 1.0)
            optimizer.step()
            total, n = total + float(loss.detach()), n + 1
        score = _val_score(backbone, encoder, head, val_rows, device, precision, config.embed_batch_size)
        logs.append(EncoderLog("notes", epoch, total / max(n, 1), score, time.perf_counter() - started))
        if progress:
            print(f"notes language model epoch {epoch + 1}: bce {total / max(n, 1):.4f} val macro-AUPRC {score:.4f}")
        if score > best:
            best, best_epoch = score, epoch
            best_state = ({k: v.detach().clone() for k, v in backbone.model.state_dict().items()
                           if config.finetune == "full" or "lora_" in k},
                          {k: v.detach().clone() for k, v in encoder.state_dict().items()})
    if best_state is not None:
        backbone.model.load_state_dict(best_state[0], strict=False)
        encoder.load_state_dict(best_state[1])
    sha = save_adaptation(backbone, folder, config.finetune, spec.text_model)
    merge_lora(backbone)
    backbone.freeze()
    backbone.adaptation = f"{config.finetune}:{sha}"
    spec.notes_finetune, spec.notes_adaptation_sha256 = config.finetune, sha
    history_file.write_text(json.dumps([asdict(h) for h in logs], indent=1))
    save_file({k: v.detach().contiguous().cpu() for k, v in encoder.state_dict().items()}, str(adapter_file))  # last: marks done
    return logs
