"""Training stage 1: each encoder learns its modality alone, with a throwaway label head.

Why a separate stage: trained jointly from the start, the fusion model leans on the modalities that
are easiest to fit (labs, vitals) and the others stay undertrained (measured on the synthetic cohort:
COPD, which only the notes carry, 0.54 AUROC jointly vs 0.99 from the notes alone; the same for the
image's pleural disease). MedFuse (Hayat et al. 2022) pretrains its unimodal encoders for the same
reason. Each encoder m is trained with a small head (LN -> Linear -> GELU -> Dropout -> Linear) on
the training patients that have m, with masked BCE over all labels and early stopping on the
validation macro-AUPRC of those patients; the head is then dropped and the best encoder weights kept.
An encoder may learn from more patients than the fusion model (`ExtraRows`; `train
--image-encoder-data` gives the film encoder another cohort's films): measured on the synthetic
cohort, the film encoder's maps point into the planted finding far more often when it has seen more
films (benchmarks/results/image_maps.md).

Resumable: a finished encoder is saved as `<out_dir>/encoders/<modality>.safetensors` and loaded
instead of retrained when the run is started again.

Under torchrun the probe runs in DistributedDataParallel on each rank's rows of every global batch
(train/distributed.py); image shifts are drawn for the global batch alike on every rank; rank 0
validates and broadcasts the score, so every rank keeps the same best weights.
"""

from __future__ import annotations

import logging
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from medfuse_core.features.batch import Batch, PatientFeatures, collate
from medfuse_core.models.model import encode_modality
from medfuse_core.runtime.precision import mixed_precision
from medfuse_core.record import MODALITIES
from medfuse_core.train.distributed import SINGLE, World, shard_loader
from medfuse_core.runtime.calibration import sigmoid
from medfuse_core.train.metrics import auprc, macro

logger = logging.getLogger(__name__)


@dataclass
class EncoderLog:
    modality: str
    epoch: int
    train_bce: float
    val_macro_auprc: float
    seconds: float


@dataclass
class ExtraRows:
    """More patients for one encoder's stage 1 only, from another cohort split the same way (its train
    rows join the training rows, its val rows the early-stopping rows). Why: the film encoder learns
    from films alone, and films are what a multimodal cohort has fewest of; MedFuse likewise
    pretrains its CXR encoder on all of MIMIC-CXR, far more films than its paired cohort. Patients
    already in the main cohort (same patient_id) are not counted twice."""

    train: list[PatientFeatures]
    val: list[PatientFeatures]

    def joined(self, train_rows: list[PatientFeatures], val_rows: list[PatientFeatures], index: int
               ) -> tuple[list[PatientFeatures], list[PatientFeatures]]:
        seen = {f.patient_id for f in (*train_rows, *val_rows)}
        more_train = [f for f in self.train if f.present[index] and f.patient_id not in seen]
        more_val = [f for f in self.val if f.present[index] and f.patient_id not in seen]
        return train_rows + more_train, val_rows + more_val


def label_head(feature_dim: int, n_labels: int, hidden: int = 128) -> nn.Module:
    """The throwaway stage-1 head on one encoder's output (also the notes fine-tuning's, train/notes_finetune.py)."""
    return nn.Sequential(nn.LayerNorm(feature_dim), nn.Linear(feature_dim, hidden), nn.GELU(),
                         nn.Dropout(0.1), nn.Linear(hidden, n_labels))


class _Probe(nn.Module):
    """Encoder m + a label head; the head exists only during stage 1."""

    def __init__(self, model: nn.Module, modality: str, feature_dim: int, n_labels: int, hidden: int = 128):
        super().__init__()
        self.model = model
        self.modality = modality
        self.head = label_head(feature_dim, n_labels, hidden)

    def forward(self, batch: Batch) -> torch.Tensor:
        rows = torch.ones(batch.size, dtype=torch.bool, device=batch.present.device)
        return self.head(encode_modality(self.model, self.modality, batch, rows).float())


def _augment_images(batch: Batch, generator: torch.Generator, max_shift: int, world: World = SINGLE) -> Batch:
    """Random translation of each film by up to `max_shift` pixels (wrap-free: shifted in zeros),
    so a from-scratch CNN on a small cohort learns findings rather than positions of pixels.
    With several ranks the shifts are drawn for the global batch and this rank's rows taken."""
    if max_shift <= 0:
        return batch
    images = torch.zeros_like(batch.image)
    h, w = images.shape[-2:]
    shifts = torch.randint(-max_shift, max_shift + 1, (batch.size * world.size, 2), generator=generator)[world.rows].tolist()
    for i, (dy, dx) in enumerate(shifts):
        ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
        xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
        images[i, :, yd, xd] = batch.image[i, :, ys, xs]
    return Batch(**{**batch.__dict__, "image": images})


def _macro_auprc(probe: _Probe, loader, device: torch.device) -> float:
    probe.eval()
    logits, labels = [], []
    with torch.inference_mode():
        for batch in loader:
            batch = batch.to(device)
            logits.append(probe(batch).float().cpu().numpy())
            labels.append(batch.labels.cpu().numpy())
    probe.train()
    y, p = np.concatenate(labels), sigmoid(np.concatenate(logits))
    return macro([auprc(y[:, k], p[:, k]) for k in range(y.shape[1])])


def pretrain_encoder(model: nn.Module, modality: str, train_set: list[PatientFeatures], val_set: list[PatientFeatures],
                     *, epochs: int, patience: int, batch_size: int, lr: float, weight_decay: float, seed: int,
                     device: torch.device, make_loader: Callable, image_shift: int = 8,
                     progress: bool = True, world: World = SINGLE, precision: str = "auto",
                     extra: ExtraRows | None = None) -> list[EncoderLog]:
    """Stage 1 for one encoder (in place: `model`'s encoder ends with its best weights).
    `batch_size` is the global batch (each of the `world.size` ranks takes its share). `extra`: more
    (train, val) patients for this encoder alone (see `ExtraRows`)."""
    index = list(getattr(model, "modalities", MODALITIES)).index(modality)
    train_rows = [f for f in train_set if f.present[index]]
    val_rows = [f for f in val_set if f.present[index]]
    if extra is not None:
        train_rows, val_rows = extra.joined(train_rows, val_rows, index)
    logs: list[EncoderLog] = []
    if len(train_rows) < 2 or not val_rows:
        return logs
    encoder = model.encoders()[modality]
    feature_dim = int(model.feature_dims[modality])
    torch.manual_seed(seed)
    probe = _Probe(model, modality, feature_dim, len(train_rows[0].labels)).to(device)
    params = list(encoder.parameters()) + list(probe.head.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    # DDP leaves alone everything of the model but this encoder (the probe holds the whole model)
    trained = ("head.",) + tuple(f"model.{name}." for name, child in model.named_children() if child is encoder)
    ignored = [name for name, _ in [*probe.named_parameters(), *probe.named_buffers()] if not name.startswith(trained)]
    runner = world.wrap(probe, device, ignore=ignored)
    world.reseed(seed)
    generator = torch.Generator().manual_seed(seed)
    val_loader = make_loader(val_rows, batch_size, False, seed, 0, False)
    progress = progress and world.is_main
    best, best_epoch, best_state = -math.inf, -1, None
    encoder.train()
    for epoch in range(epochs):
        if best_epoch >= 0 and epoch - best_epoch > patience:
            break
        started, total, n = time.perf_counter(), 0.0, 0
        if world.size == 1:
            loader = make_loader(train_rows, batch_size, True, seed + epoch, 0, False)
        else:
            loader, _ = shard_loader(train_rows, batch_size, seed, epoch, world, collate)
        for batch in tqdm(loader, desc=f"{modality} encoder {epoch + 1}/{epochs}", disable=not progress, leave=False):
            batch = batch.to(device)
            if modality == "image":
                batch = _augment_images(batch, generator, image_shift, world)
            with mixed_precision(device, precision):
                logits = runner(batch).float()
            known = ~torch.isnan(batch.labels)
            loss = nn.functional.binary_cross_entropy_with_logits(logits[known], batch.labels[known])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            total, n = total + float(loss.detach()), n + 1
        score = world.broadcast_float(_macro_auprc(probe, val_loader, device) if world.is_main else math.nan, device)
        train_bce = float(world.mean(np.array([total / max(n, 1)]), device)[0])
        logs.append(EncoderLog(modality, epoch, train_bce, score, time.perf_counter() - started))
        if progress:
            logger.info("%s encoder epoch %d: bce %.4f val macro-AUPRC %.4f", modality, epoch + 1, train_bce, score)
        if score > best:
            best, best_epoch = score, epoch
            best_state = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    if best_state is not None:
        encoder.load_state_dict(best_state)
    return logs


def pretrain_encoders(model: nn.Module, train_set: list[PatientFeatures], val_set: list[PatientFeatures], *,
                      out_dir: Path, epochs: int, patience: int, batch_size: int, lr: float, weight_decay: float,
                      seed: int, device: torch.device, make_loader: Callable, progress: bool = True,
                      world: World = SINGLE, precision: str = "auto",
                      extra: dict[str, ExtraRows] | None = None) -> list[EncoderLog]:
    """Stage 1 for every encoder the model has, each saved (and on a rerun reused) under out_dir/encoders.
    `extra`: modality -> more patients for that encoder's stage 1 (`ExtraRows`)."""
    folder = Path(out_dir) / "encoders"
    folder.mkdir(parents=True, exist_ok=True)
    world.barrier()  # every rank sees the same finished encoders
    logs: list[EncoderLog] = []
    for modality, encoder in model.encoders().items():
        weights = folder / f"{modality}.safetensors"
        if weights.is_file():
            encoder.load_state_dict(load_file(str(weights), device=str(device)))
            history = folder / f"{modality}.json"
            if history.is_file():
                logs += [EncoderLog(**h) for h in json.loads(history.read_text())]
            continue
        encoder_logs = pretrain_encoder(model, modality, train_set, val_set, epochs=epochs, patience=patience,
                                        batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed,
                                        device=device, make_loader=make_loader, progress=progress, world=world,
                                        precision=precision, extra=(extra or {}).get(modality))
        if world.is_main:
            save_file({k: v.detach().contiguous().cpu() for k, v in encoder.state_dict().items()}, str(weights))
            (folder / f"{modality}.json").write_text(json.dumps([asdict(h) for h in encoder_logs], indent=1))
        logs += encoder_logs
    return logs
