"""Fusion training: BCE over labels + InfoNCE on shared projections + vCLUB on (specific, shared),
with random modality and token dropout so every coalition of tokens is an in-distribution input.

Two stages. Stage 1 (`encoder_epochs` > 0, see train/encoder_pretrain.py) trains each encoder on
its modality alone. Stage 2 trains what comes after the encoders; with `freeze_encoders` the
encoders' outputs are computed once (`EncodedSet`) and the epochs run on them, which is what makes
a CPU run of the full model take minutes and a sweep of the disentanglement weights affordable.

The vCLUB estimators are trained in alternation by their own optimizer (maximum likelihood on
detached pairs), as in Cheng et al. 2020. Validation every epoch; early stopping on validation
macro-AUPRC; the best weights and a resume point are written after every epoch. `selection_start`:
epochs before it are never kept as the best. Why: the parsimony term moves a shared disease's
credit onto the shared token slowly, while macro-AUPRC can peak early; selected before that, a
checkpoint's shared-route accuracy depends on the seed (measured on the synthetic cohort, held-out:
0.66-0.81 over stage-2 seeds 0-2 chosen from epoch 0, 0.91-0.96 over seeds 0-4 chosen from epoch 30
as the demo run is; benchmarks/results/faithfulness.md, sweep rows).

Under torchrun (train/distributed.py) the same loop runs data-parallel: each rank takes its rows of
every global batch, the dropout draws are made for the global batch on every rank alike, the step
and the estimator's step run in DistributedDataParallel, and only rank 0 validates and writes.
Terms computed over a batch (InfoNCE, vCLUB, consensus, decorrelation) and BatchNorm statistics
then see the rank's rows, not the global batch: the usual data-parallel approximation.
"""

from __future__ import annotations

import logging
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from medfuse_core.features.batch import Batch, PatientFeatures, collate
from medfuse_core.models.model import MedFuseLens
from medfuse_core.runtime.precision import check_precision, mixed_precision
from medfuse_core.runtime import checkpoint as ckpt
from medfuse_core.train.distributed import SINGLE, World, padded_order, shard_loader
from medfuse_core.train.encoder_pretrain import EncoderLog, ExtraRows, pretrain_encoders
from medfuse_core.train.notes_finetune import NotesTrainConfig
from medfuse_core.train.objective import TERMS, LossConfig, fusion_objective, variant_loss
from medfuse_core.runtime.calibration import sigmoid
from medfuse_core.runtime.device import resolve_device
from medfuse_core.train.metrics import auprc, macro

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    estimator_lr: float = 1e-3
    patience: int = 6
    selection_start: int = 0  # stage 2: epochs before this one are never kept as the best (see run_training)
    max_grad_norm: float = 1.0
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:1"
    num_workers: int = 0
    progress: bool = True
    encoder_epochs: int = 0  # stage 1: epochs per encoder on its modality alone (0 = no stage 1)
    encoder_patience: int = 6
    encoder_lr: float = 1e-3
    freeze_encoders: bool = False  # stage 2 on frozen encoders (cached outputs) instead of end to end
    fusion_seed: int | None = None  # stage 2's seed (None: `seed`): another stage 2 on the same stage-1 encoders
    precision: str = "auto"  # "auto" (bf16 autocast on CUDA, fp32 on CPU) | "bf16" | "fp32" (runtime/precision.py)
    notes: NotesTrainConfig = field(default_factory=NotesTrainConfig)  # stage 1 of the notes language model
    loss: LossConfig = field(default_factory=LossConfig)  # stage 2's objective weights and dropout (train/objective.py)

    def __post_init__(self) -> None:
        check_precision(self.precision, "train.precision")
        if isinstance(self.loss, dict):
            self.loss = LossConfig.from_dict(self.loss)
        if isinstance(self.notes, dict):
            unknown = set(self.notes) - set(NotesTrainConfig.__dataclass_fields__)
            if unknown:
                raise ValueError(f"train.notes.{sorted(unknown)[0]}: unknown setting; expected some of "
                                 f"{sorted(NotesTrainConfig.__dataclass_fields__)}")
            self.notes = NotesTrainConfig(**self.notes)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """The config of `data`; a key TrainConfig does not have is an error naming it (never ignored)."""
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"train.{unknown[0]}: unknown setting; expected some of {sorted(cls.__dataclass_fields__)}")
        return cls(**data)


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    train_bce: float
    train_infonce: float
    train_vclub: float
    val_macro_auprc: float
    seconds: float
    train_terms: dict[str, float] = field(default_factory=dict)  # every objective term, unweighted


@dataclass
class TrainResult:
    best_epoch: int
    best_val_macro_auprc: float
    history: list[EpochLog] = field(default_factory=list)
    encoder_history: list[EncoderLog] = field(default_factory=list)


@dataclass
class EncodedSet:
    """Frozen encoders' outputs for a list of patients: what stage 2 trains on when encoders are frozen."""

    features: dict[str, torch.Tensor]  # modality -> (N, dim), zeros where absent
    present: torch.Tensor  # (N, 4) bool
    labels: torch.Tensor  # (N, K), NaN where unknown

    @classmethod
    @torch.inference_mode()
    def build(cls, model: torch.nn.Module, patients: list[PatientFeatures], batch_size: int, device: torch.device,
              world: World = SINGLE, precision: str = "auto") -> "EncodedSet":
        """Every patient's encoder outputs; with several ranks each encodes its share and they swap."""
        if world.size > 1:
            share = [patients[i] for i in padded_order(range(len(patients)), world.size)[world.rows]]
            local = cls.build(model, share, batch_size, device, precision=precision)
            features = {m: world.gather_strided(v, len(patients)) for m, v in local.features.items()}
            present = torch.tensor(np.stack([p.present for p in patients]), device=device)
            labels = torch.tensor(np.stack([p.labels for p in patients]), device=device)
            return cls(features, present, labels)
        model.eval()
        parts: dict[str, list[torch.Tensor]] = {}
        for batch in make_loader(patients, batch_size, False, 0, 0, False):
            batch = batch.to(device)
            with mixed_precision(device, precision):
                for m, value in model.modality_features(batch, batch.present).items():
                    parts.setdefault(m, []).append(value.float())
        present = torch.tensor(np.stack([p.present for p in patients]), device=device)
        labels = torch.tensor(np.stack([p.labels for p in patients]), device=device)
        return cls({m: torch.cat(v) for m, v in parts.items()}, present, labels)

    def __len__(self) -> int:
        return int(self.present.shape[0])

    def rows(self, index: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        return {m: v[index] for m, v in self.features.items()}, self.present[index], self.labels[index]


def freeze_encoders(model: torch.nn.Module) -> None:
    """Stage 2 with frozen encoders: no gradients and eval mode (BatchNorm statistics stay put)."""
    for encoder in model.encoders().values():
        encoder.requires_grad_(False)
        encoder.eval()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def modality_dropout(present: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Hide each present modality with probability p, keeping at least one per patient."""
    if p <= 0:
        return present
    drop = torch.rand(present.shape, generator=generator) < p
    kept = present & ~drop.to(present.device)
    # a patient left with nothing keeps one of its modalities, chosen at random
    empty = ~kept.any(dim=1) & present.any(dim=1)
    if bool(empty.any()):
        scores = torch.rand(present.shape, generator=generator).to(present.device) * present
        choice = scores.argmax(dim=1)
        kept[empty, choice[empty]] = True
    return kept


def token_dropout(batch_size: int, n_tokens: int, p: float, generator: torch.Generator, device: torch.device,
                  p_last: float | None = None) -> torch.Tensor:
    """Random token keep-mask (B, n_tokens); the last (shared) token is dropped with `p_last` when
    given. A row may lose every token (the empty coalition is also an input the head must handle:
    it is the attribution baseline)."""
    keep = torch.rand(batch_size, n_tokens, generator=generator) >= p
    if p_last is not None:
        keep[:, -1] = torch.rand(batch_size, generator=generator) >= p_last
    return keep.to(device)


def make_loader(features: list[PatientFeatures], batch_size: int, shuffle: bool, seed: int, num_workers: int,
                pin_memory: bool) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(features, batch_size=batch_size, shuffle=shuffle, collate_fn=collate, generator=generator,
                      num_workers=num_workers, pin_memory=pin_memory, persistent_workers=num_workers > 0)


@torch.inference_mode()
def predict_logits(model: MedFuseLens, features: list[PatientFeatures], batch_size: int = 128,
                   device: torch.device | None = None, present_override: Callable[[Batch], torch.Tensor] | None = None,
                   precision: str = "auto") -> np.ndarray:
    """Logits (N, K) for a list of patients, in order."""
    device = device or next(model.parameters()).device
    model.eval()
    out = []
    for batch in make_loader(features, batch_size, False, 0, 0, False):
        batch = batch.to(device)
        present = present_override(batch) if present_override is not None else None
        with mixed_precision(device, precision):
            out.append(model(batch, present=present).logits.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(model.labels)), dtype=np.float32)


def validation_macro_auprc(model: MedFuseLens, features: list[PatientFeatures] | EncodedSet, batch_size: int,
                           precision: str = "auto") -> float:
    if isinstance(features, EncodedSet):
        model.eval()
        with torch.inference_mode(), mixed_precision(features.present.device, precision):
            logits = model.forward_features(features.features, features.present).logits.float().cpu().numpy()
        labels = features.labels.cpu().numpy()
    else:
        logits = predict_logits(model, features, batch_size, precision=precision)
        labels = np.stack([f.labels for f in features])
    probs = sigmoid(logits)
    return macro([auprc(labels[:, k], probs[:, k]) for k in range(labels.shape[1])])


def _train_batches(train_set: list[PatientFeatures], encoded: EncodedSet | None, config: TrainConfig, epoch: int,
                   device: torch.device, world: World = SINGLE
                   ) -> Iterator[tuple[Batch | None, dict[str, torch.Tensor] | None, torch.Tensor, torch.Tensor]]:
    """(batch, features, labels, global present) per step: a Batch end to end, or cached encoder
    features; this rank's rows (`world.rows`) of the global batch, whose `present` the last item holds
    (what the dropout draws are made for; this rank's own is `global present[world.rows]`)."""
    progress = config.progress and world.is_main
    if encoded is None:
        if world.size == 1:
            loader = make_loader(train_set, config.batch_size, True, config.seed + epoch, config.num_workers, device.type == "cuda")
            order = None
        else:
            loader, order = shard_loader(train_set, config.batch_size, config.seed, epoch, world, collate,
                                         config.num_workers, device.type == "cuda")
        for i, batch in enumerate(tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False)):
            batch = batch.to(device, non_blocking=True)
            if order is None:
                block_present = batch.present
            else:
                block = order[i * config.batch_size : (i + 1) * config.batch_size]
                block_present = torch.from_numpy(np.stack([train_set[j].present for j in block])).to(device)
            yield batch, None, batch.labels, block_present
        return
    order = torch.randperm(len(encoded), generator=torch.Generator().manual_seed(config.seed + epoch))
    if world.size > 1:
        order = torch.tensor(padded_order(order.tolist(), world.size))
    order = order.to(device)
    for start in range(0, len(order), config.batch_size):
        block = order[start : start + config.batch_size]
        features, _, labels = encoded.rows(block[world.rows])
        yield None, features, labels, encoded.present[block]


class FusionStep(torch.nn.Module):
    """One training step's forward pass and objective as one module call: what DistributedDataParallel
    wraps, so the gradients of everything the loss touches are averaged in its backward."""

    def __init__(self, model: MedFuseLens, loss: LossConfig):
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, batch: Batch | None, features: dict[str, torch.Tensor] | None, present: torch.Tensor,
                keep: torch.Tensor, labels: torch.Tensor):
        if batch is not None:
            out = self.model(batch, present=present, token_keep=keep)
        else:
            out = self.model.forward_features(features, present, token_keep=keep)
        return fusion_objective(self.model, out, labels, self.loss), out


class EstimatorStep(torch.nn.Module):
    """The vCLUB estimators' own step (maximum likelihood on detached pairs), as a module for DDP."""

    def __init__(self, estimators: torch.nn.Module):
        super().__init__()
        self.estimators = estimators

    def forward(self, specific: torch.Tensor, shared: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        loss = self.estimators.estimator_loss(specific, shared, present)
        if loss.grad_fn is None:  # no modality on two patients of the batch: a zero that reaches the estimators,
            loss = sum(p.sum() for p in self.parameters()) * 0.0  # so the (DDP) backward still runs on every rank
        return loss


def train(model: MedFuseLens, train_set: list[PatientFeatures], val_set: list[PatientFeatures], config: TrainConfig,
          out_dir: Path, save_extra: Callable[[Path], None] | None = None, world: World = SINGLE,
          device: torch.device | None = None, stage1_extra: dict[str, ExtraRows] | None = None) -> TrainResult:
    """Stage 1 (optional) then stage 2 with early stopping; resumes from `out_dir` when it holds a resume point.

    `save_extra(out_dir)` is called whenever the best weights are saved (it writes config.json).
    `stage1_extra`: modality -> more patients for that encoder's stage 1 (train/encoder_pretrain.py).
    `world`: this process's rank among data-parallel processes (train/distributed.py; its process
    group already started, `device` then this rank's device); `config.batch_size` is the global batch.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = device or resolve_device(config.device)
    world.local_batch_size(config.batch_size)  # fails early when the batch does not split evenly
    seed_everything(config.seed)
    model.to(device)
    encoder_history: list[EncoderLog] = []
    if config.encoder_epochs > 0:
        encoder_history = pretrain_encoders(
            model, train_set, val_set, out_dir=out_dir, epochs=config.encoder_epochs, patience=config.encoder_patience,
            batch_size=config.batch_size, lr=config.encoder_lr, weight_decay=config.weight_decay, seed=config.seed,
            device=device, make_loader=make_loader, progress=config.progress, world=world, precision=config.precision,
            extra=stage1_extra)
    # stage 2 starts from a known random state whether stage 1 ran now or was loaded from encoders/,
    # so a run resumed after stage 1 ends with the same weights as an uninterrupted one
    if config.fusion_seed is not None:
        config = replace(config, seed=config.fusion_seed)
    seed_everything(config.seed + 1)
    encoded_train = encoded_val = None
    if config.freeze_encoders:
        freeze_encoders(model)
        encoded_train = EncodedSet.build(model, train_set, config.batch_size, device, world, config.precision)
        if world.is_main:  # only rank 0 validates
            encoded_val = EncodedSet.build(model, val_set, config.batch_size, device, precision=config.precision)
    loss_config = variant_loss(model.config.variant, config.loss)  # what this model variant trains with
    estimator_params = list(model.mi_estimators.parameters())
    estimator_ids = {id(p) for p in estimator_params}
    main_params = [p for p in model.parameters() if id(p) not in estimator_ids and p.requires_grad]
    optimizer = torch.optim.AdamW(main_params, lr=config.lr, weight_decay=config.weight_decay)
    estimator_optimizer = torch.optim.Adam(estimator_params, lr=config.estimator_lr)
    optimizers = {"model": optimizer, "estimator": estimator_optimizer}

    history: list[EpochLog] = []
    best_epoch, best_score, start_epoch = -1, -math.inf, 0
    resumed = ckpt.load_trainer_state(out_dir, optimizers)
    if resumed is not None:
        ckpt.load_weights(model, out_dir / "last", device)
        start_epoch = resumed["epoch"] + 1
        best_epoch, best_score = resumed["best_epoch"], resumed["best_score"]
        history = [EpochLog(**h) for h in resumed["history"]]
    # the main step leaves the estimators to their own (DDP-wrapped) step
    estimator_names = [f"model.mi_estimators.{name}" for name, _ in model.mi_estimators.named_parameters()]
    step = world.wrap(FusionStep(model, loss_config), device, ignore=estimator_names)
    estimator_step = world.wrap(EstimatorStep(model.mi_estimators), device)
    world.reseed(config.seed + 1)
    for epoch in range(start_epoch, config.epochs):
        if epoch - best_epoch > config.patience and best_epoch >= 0:
            break
        started = time.perf_counter()
        # reseeded per epoch, so a resumed run draws the same dropout as an uninterrupted one
        dropout_generator = torch.Generator().manual_seed(config.seed * 10_007 + epoch)
        model.train()
        if config.freeze_encoders:
            freeze_encoders(model)
        sums = np.zeros(1 + len(TERMS))
        n_batches = 0
        for batch, features, labels, block_present in _train_batches(train_set, encoded_train, config, epoch, device, world):
            # drawn for the whole global batch (identically on every rank), then this rank's rows
            present = modality_dropout(block_present, loss_config.modality_dropout, dropout_generator)[world.rows]
            keep = token_dropout(len(block_present), block_present.shape[1] + 1, loss_config.token_dropout, dropout_generator, device,
                                 loss_config.shared_token_dropout)[world.rows]
            with mixed_precision(device, config.precision):
                objective, out = step(batch, features, present, keep, labels)
            optimizer.zero_grad(set_to_none=True)
            objective.total.backward()
            torch.nn.utils.clip_grad_norm_(main_params, config.max_grad_norm)
            optimizer.step()
            # the estimator's own step, on detached projections
            estimator_optimizer.zero_grad(set_to_none=True)
            with mixed_precision(device, config.precision):
                estimator_loss = estimator_step(out.specific.detach().float(), out.shared.detach().float(), out.present)
            estimator_loss.backward()
            estimator_optimizer.step()
            sums += [float(objective.total.detach())] + [float(objective.terms[t].detach()) for t in TERMS]
            n_batches += 1
        means = world.mean(sums / max(n_batches, 1), device)  # each global batch's loss: the mean of its ranks'
        terms = dict(zip(TERMS, map(float, means[1:])))
        score = math.nan
        if world.is_main:
            score = validation_macro_auprc(model, encoded_val if encoded_val is not None else val_set, config.batch_size,
                                           config.precision)
        score = world.broadcast_float(score, device)
        log = EpochLog(epoch, float(means[0]), terms["bce"], terms["infonce"], terms["vclub"], score,
                       time.perf_counter() - started, terms)
        history.append(log)
        if config.progress and world.is_main:
            logger.info("epoch %d: loss %.4f (bce %.4f, infonce %.3f, vclub %.3f) val macro-AUPRC %.4f [%.1f s]",
                        epoch + 1, log.train_loss, log.train_bce, log.train_infonce, log.train_vclub, score, log.seconds)
        if epoch >= config.selection_start and score > best_score:
            best_epoch, best_score = epoch, score
            if world.is_main:
                ckpt.save_weights(model, out_dir)
                if save_extra is not None:
                    save_extra(out_dir)
        if world.is_main:
            ckpt.save_weights(model, out_dir / "last")
            ckpt.save_trainer_state(out_dir, optimizers, {
                "epoch": epoch, "best_epoch": best_epoch, "best_score": best_score,
                "history": [asdict(h) for h in history], "train_config": asdict(config),
            })
    if world.is_main:
        (out_dir / "history.json").write_text(json.dumps([asdict(h) for h in history], indent=1))
    world.barrier()  # rank 0's files are complete before every rank reads the best weights back
    ckpt.load_weights(model, out_dir, device)
    return TrainResult(best_epoch, best_score, history, encoder_history)
