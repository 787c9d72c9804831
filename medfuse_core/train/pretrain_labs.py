"""Masked lab-test pretraining of the lab encoder (MAE on per-item value features), with a baseline.

`pretrain_labs` trains `LabMAE` on the training records' lab tokens and reports, on the validation
records, the reconstruction MSE of the masked tokens' value features next to the baseline
"predict the training mean of that item's feature". Validation masks come from a generator seeded
with `seed`, drawn once, and both predictors are scored on exactly the same masked tokens (paired).
An MSE clearly below the baseline means the encoder has learnt how lab items co-vary (BUN with
creatinine, lactate with WBC, ...), which is what the fusion model can later use.

`run_pretrain_labs` is the command-line entry point: bundles -> the fusion run's patient-id hash
split (test patients left out) -> vocabulary on the training split -> pretraining -> `lab_encoder.safetensors` (LabEncoder state dict, safetensors) and
`lab_pretrain.json` (encoder config, vocabulary, metrics, per-epoch history, split).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from medfuse_core.features import window
from medfuse_core.features.labs import N_FEATURES, LabTokens, LabVocabulary, cohort_lab_features
from medfuse_core.models.config import LabEncoderConfig
from medfuse_core.models.lab_encoder import LabEncoder, LabMAE, random_token_mask
from medfuse_core.record import PatientRecord

__all__ = [
    "ENCODER_FILE", "PRETRAIN_JSON", "PretrainResult", "pretrain_labs", "run_pretrain_labs",
    "load_pretrained_lab_encoder", "split_records", "item_feature_means", "evaluate_reconstruction",
]

ENCODER_FILE = "lab_encoder.safetensors"
PRETRAIN_JSON = "lab_pretrain.json"
FORMAT_VERSION = 1


@dataclass
class PretrainResult:
    encoder: LabEncoder  # trained, on the CPU, eval mode
    mae: LabMAE
    config: LabEncoderConfig  # vocab_size / value_features set from the vocabulary
    vocab: LabVocabulary
    val_mse: float  # MAE reconstruction MSE on the validation masked tokens (all V features)
    baseline_mse: float  # training per-item per-feature mean, same tokens
    n_val_masked: int  # masked validation tokens scored
    n_train: int  # training patients with >= 2 lab tokens (the ones that can be masked)
    n_val: int
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch: train_loss, val_mse

    @property
    def ratio(self) -> float:
        return self.val_mse / self.baseline_mse if self.baseline_mse > 0 else float("nan")

    def metrics(self) -> dict[str, Any]:
        return {"val_mse": self.val_mse, "baseline_mse": self.baseline_mse, "ratio": self.ratio,
                "n_val_masked": self.n_val_masked, "n_train": self.n_train, "n_val": self.n_val}


# ------------------------------------------------------------------------------------- tensors


def _pad(tokens: Sequence[LabTokens]) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, L) int64 ids and (N, L, V) float32 values, zero padded (L >= 1)."""
    longest = max([len(t) for t in tokens] + [1])
    items = np.zeros((len(tokens), longest), np.int64)
    values = np.zeros((len(tokens), longest, N_FEATURES), np.float32)
    for i, t in enumerate(tokens):
        items[i, : len(t)] = t.item_ids
        values[i, : len(t)] = t.values
    return torch.from_numpy(items), torch.from_numpy(values)


def item_feature_means(items: torch.Tensor, values: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(vocab_size, V): mean value features per item over real tokens; the global mean for unseen items."""
    mask = items > 0
    ids, vals = items[mask], values[mask].double()
    sums = torch.zeros(vocab_size, values.shape[-1], dtype=torch.float64).index_add_(0, ids, vals)
    counts = torch.zeros(vocab_size, dtype=torch.float64).index_add_(0, ids, torch.ones_like(ids, dtype=torch.float64))
    overall = vals.mean(dim=0) if vals.shape[0] else torch.zeros(values.shape[-1], dtype=torch.float64)
    means = torch.where(counts.unsqueeze(1) > 0, sums / counts.clamp(min=1).unsqueeze(1), overall)
    return means.float()


@torch.no_grad()
def evaluate_reconstruction(mae: LabMAE, items: torch.Tensor, values: torch.Tensor, means: torch.Tensor,
                            *, batch_size: int = 256, seed: int = 0, device: str | torch.device = "cpu") -> tuple[float, float, int]:
    """(MAE MSE, per-item-mean MSE, masked tokens) on the same seeded masks; MSE over tokens x V."""
    generator = torch.Generator().manual_seed(int(seed))
    masked_all = random_token_mask(items > 0, float(mae.config.mask_ratio), generator)
    was_training = mae.training
    mae.eval()
    sse = base_sse = 0.0
    n = 0
    for start in range(0, items.shape[0], batch_size):
        sl = slice(start, start + batch_size)
        it, va, mk = items[sl].to(device), values[sl].to(device), masked_all[sl].to(device)
        out = mae(it, va, masked=mk)
        target = va[mk].double()
        sse += float(((out.prediction[mk].double() - target) ** 2).sum())
        base_sse += float(((means.to(device)[it[mk]].double() - target) ** 2).sum())
        n += int(mk.sum())
    mae.train(was_training)
    denom = max(n * values.shape[-1], 1)
    return sse / denom, base_sse / denom, n


# ------------------------------------------------------------------------------------ training


def _lr_lambda(total_steps: int, warmup: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(total_steps - warmup, 1)
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return f


def _default_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pretrain_labs(records_train: Sequence[PatientRecord], records_val: Sequence[PatientRecord], vocab: LabVocabulary,
                  config: LabEncoderConfig | None = None, epochs: int = 20, batch_size: int = 64, lr: float = 1e-3,
                  seed: int = 0, device: str | torch.device | None = None, *, hours: float = window.HOURS,
                  weight_decay: float = 0.01, mask_repeats: int = 4, log=None) -> PretrainResult:
    """MAE-pretrain a `LabEncoder` on the training records; score it against the per-item mean on val."""
    config = dataclasses.replace(config or LabEncoderConfig(), vocab_size=vocab.size, value_features=N_FEATURES)
    device = _default_device(device)
    torch.manual_seed(int(seed))
    encoder = LabEncoder(config)
    mae = LabMAE(encoder, config).to(device)

    train_items, train_values = _pad(cohort_lab_features(records_train, vocab, hours))
    keep = (train_items > 0).sum(dim=1) >= 2  # nothing to reconstruct from fewer than 2 tokens
    train_items, train_values = train_items[keep], train_values[keep]
    val_items, val_values = _pad(cohort_lab_features(records_val, vocab, hours))
    means = item_feature_means(train_items, train_values, config.vocab_size)
    with torch.no_grad():  # the decoder starts at the baseline and learns the deviation from it
        mae.prediction_bias.weight.copy_(means.to(device))
    n_train = int(train_items.shape[0])

    steps_per_epoch = max(math.ceil(n_train / batch_size), 1) if n_train else 0
    total = steps_per_epoch * int(epochs)
    optimizer = torch.optim.AdamW(mae.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(total, max(total // 20, 1)))
    order_rng = np.random.default_rng(int(seed))
    mask_rng = torch.Generator().manual_seed(int(seed) + 1)
    history: list[dict[str, float]] = []
    for epoch in range(int(epochs) if n_train else 0):
        mae.train()
        perm = torch.from_numpy(order_rng.permutation(n_train))
        total_loss, total_n = 0.0, 0
        for start in range(0, n_train, batch_size):
            idx = perm[start : start + batch_size]
            items, values = train_items[idx], train_values[idx]
            longest = int((items > 0).sum(dim=1).max())
            items, values = items[:, :longest], values[:, :longest]  # tokens are left-aligned
            if mask_repeats > 1:  # several independent masks of each patient in one step
                items, values = items.repeat(mask_repeats, 1), values.repeat(mask_repeats, 1, 1)
            masked = random_token_mask(items > 0, float(config.mask_ratio), mask_rng)
            out = mae(items.to(device), values.to(device), masked=masked.to(device))
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(mae.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            total_loss += float(out.loss.detach()) * out.n_masked
            total_n += out.n_masked
        val_mse, base_mse, _ = evaluate_reconstruction(mae, val_items, val_values, means, seed=seed, device=device)
        history.append({"epoch": epoch + 1, "train_loss": total_loss / max(total_n, 1), "val_mse": val_mse, "baseline_mse": base_mse})
        if log is not None:
            log(f"epoch {epoch + 1}/{epochs}: train {history[-1]['train_loss']:.4f}, val {val_mse:.4f} (per-item mean {base_mse:.4f})")

    val_mse, base_mse, n_masked = evaluate_reconstruction(mae, val_items, val_values, means, seed=seed, device=device)
    mae.cpu().eval()
    return PretrainResult(encoder=mae.encoder, mae=mae, config=config, vocab=vocab, val_mse=val_mse,
                          baseline_mse=base_mse, n_val_masked=n_masked, n_train=n_train,
                          n_val=len(records_val), history=history)


# ---------------------------------------------------------------------------------- entry point


def split_records(records: Sequence[PatientRecord], val_fraction: float = 0.15, test_fraction: float = 0.15,
                  seed: int = 0) -> tuple[list[PatientRecord], list[PatientRecord]]:
    """(train, val) by the fusion run's own rule (`train.run.split_of`); test patients are left out.

    So pretraining never sees the labs of a patient the fusion model is tested on, provided the same
    fractions and seed are used for both (the defaults are `SplitConfig`'s).
    """
    from medfuse_core.train.run import SplitConfig, split_of

    split = SplitConfig(val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    sides = [split_of(r.patient_id, split) for r in records]
    return ([r for r, s in zip(records, sides) if s == "train"], [r for r, s in zip(records, sides) if s == "val"])


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_pretrained(result: PretrainResult, out_dir: str | Path, extra: dict[str, Any] | None = None) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in result.encoder.state_dict().items()}
    _atomic_write(out / ENCODER_FILE, lambda p: save_file(state, str(p), metadata={"format": "pt"}))
    doc = {"format_version": FORMAT_VERSION, "config": dataclasses.asdict(result.config), "vocab": result.vocab.to_dict(),
           "metrics": result.metrics(), "history": result.history, **(extra or {})}
    _atomic_write(out / PRETRAIN_JSON, lambda p: p.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8"))


def load_pretrained_lab_encoder(folder: str | Path) -> tuple[LabEncoder, LabVocabulary, dict[str, Any]]:
    """(encoder in eval mode, vocabulary, the lab_pretrain.json document) from a pretraining folder."""
    folder = Path(folder)
    doc = json.loads((folder / PRETRAIN_JSON).read_text(encoding="utf-8"))
    if doc.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{folder / PRETRAIN_JSON}: format_version {doc.get('format_version')!r}, expected {FORMAT_VERSION}")
    encoder = LabEncoder(LabEncoderConfig(**doc["config"]))
    encoder.load_state_dict(load_file(str(folder / ENCODER_FILE)))
    return encoder.eval(), LabVocabulary.from_dict(doc["vocab"]), doc


def run_pretrain_labs(data_dir: str | Path, out_dir: str | Path, *, epochs: int = 20, batch_size: int = 64,
                      lr: float = 1e-3, seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15,
                      hours: float = window.HOURS,
                      max_items: int = 128, min_count: int = 5, config: LabEncoderConfig | None = None,
                      device: str | None = None, log=print) -> PretrainResult:
    """Bundles under `data_dir` -> pretrained lab encoder + vocabulary + metrics in `out_dir`."""
    from medfuse_core.train.run import read_cohort

    records = read_cohort(data_dir, progress=log is not None)
    train, val = split_records(records, val_fraction, test_fraction, seed)
    if not train or not val:
        raise ValueError(f"{data_dir}: {len(records)} patients give an empty train or validation split")
    vocab = LabVocabulary.fit(train, max_items=max_items, min_count=min_count)
    if len(vocab) == 0:
        raise ValueError(f"{data_dir}: no lab item has numeric values in >= {min_count} training patients")
    if log:
        log(f"{len(train)} training / {len(val)} validation patients, {len(vocab)} lab items")
    result = pretrain_labs(train, val, vocab, config, epochs, batch_size, lr, seed, device, hours=hours, log=log)
    save_pretrained(result, out_dir, {"hours": hours, "data": str(data_dir), "seed": seed,
                                      "split": {"val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed,
                                                "train": len(train), "val": len(val)}})
    if log:
        log(f"validation reconstruction MSE {result.val_mse:.4f} vs per-item mean {result.baseline_mse:.4f} "
            f"(ratio {result.ratio:.3f}); wrote {Path(out_dir) / ENCODER_FILE}")
    return result
