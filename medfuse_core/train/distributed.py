"""Data-parallel training across processes: `torchrun --nproc_per_node=N -m medfuse_core train ...`.

What N processes must agree on, and how this module makes them:
- the samples: every epoch has one order, the one a single process would visit (`epoch_order`);
  it is padded to a multiple of N like `DistributedSampler` pads, and rank r takes positions
  r, r + N, r + 2N, ... So the i-th per-rank batches (global batch / N each) of all ranks together
  are exactly the single process's i-th batch, and draws made for that global batch (modality and
  token dropout, image shifts) can be made identically on every rank and split by `rows`;
- the weights: DistributedDataParallel averages the gradients (gloo on CPU, NCCL on CUDA);
- the decisions: validation runs on rank 0 and its score is broadcast, so early stopping and
  "best epoch" agree; only rank 0 writes files, prints and shows progress bars.

A single process (no torchrun environment) gets `SINGLE`, whose every method is a no-op, so the
single-process path runs exactly the code it ran before this module existed.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

__all__ = ["SINGLE", "OrderedDistributedSampler", "World", "epoch_order", "padded_order", "setup", "shard_loader",
           "shutdown", "world_from_env"]


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    distributed: bool = False  # True under torchrun (even with one process): collectives are live

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def rows(self) -> slice:
        """This rank's rows of a global batch (see the module docstring)."""
        return slice(self.rank, None, self.size)

    def local_batch_size(self, global_batch_size: int) -> int:
        if global_batch_size % self.size:
            raise ValueError(f"batch_size {global_batch_size} must be divisible by the {self.size} training processes")
        return global_batch_size // self.size

    # -------------------------------------------------------------------------------- collectives

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast_float(self, value: float, device: torch.device) -> float:
        """Rank 0's value on every rank."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        dist.broadcast(tensor, src=0)
        return float(tensor.item())

    def mean(self, values: np.ndarray, device: torch.device) -> np.ndarray:
        """Element-wise mean over ranks of a float array of the same shape everywhere."""
        if not self.distributed:
            return values
        tensor = torch.as_tensor(np.asarray(values, dtype=np.float64), device=device).clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.cpu().numpy() / self.size

    def gather_strided(self, local: torch.Tensor, n: int) -> torch.Tensor:
        """Inverse of taking `padded_order(range(n))[rows]`: every rank's rows, back in the order 0..n-1."""
        if not self.distributed:
            return local[:n]
        parts = [torch.empty_like(local) for _ in range(self.size)]
        dist.all_gather(parts, local.contiguous())
        return torch.stack(parts, dim=1).reshape(-1, *local.shape[1:])[:n]

    # -------------------------------------------------------------------------------- modules

    def wrap(self, module: torch.nn.Module, device: torch.device, ignore: Sequence[str] = ()) -> torch.nn.Module:
        """`module` in DistributedDataParallel (or itself, in a single process). `ignore`: names of
        parameters and buffers DDP must leave alone (trained by another optimizer, or not used).
        find_unused_parameters: modality dropout leaves some encoders without a gradient in a step."""
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        if ignore:
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, list(ignore))
        device_ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=True)

    def reseed(self, seed: int) -> None:
        """Rank-specific global RNG (dropout layers) once the weights are created identically."""
        if self.size > 1:
            torch.manual_seed(seed + 104_729 * self.rank)

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (fills the caches), then the others (read them)."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()


SINGLE = World()


def world_from_env() -> World:
    """The torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK), or `SINGLE` outside it."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return SINGLE
    return World(rank=int(os.environ["RANK"]), size=int(os.environ["WORLD_SIZE"]),
                 local_rank=int(os.environ.get("LOCAL_RANK", "0")), distributed=True)


def setup(world: World, device: torch.device) -> torch.device:
    """Start the process group (NCCL on CUDA, gloo on CPU); returns this rank's device."""
    if not world.distributed:
        return device
    # DDP copies gradients of expanded parameters (token embeddings) into its buckets: correct, only noisy
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank if device.index is None else device.index)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=30), **kwargs)
    return device


def shutdown(world: World, wait: bool = True) -> None:
    """End the process group; `wait`: first a barrier, so no rank leaves while others still work."""
    if world.distributed and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------- sampling


def epoch_order(n: int, seed: int) -> list[int]:
    """The order in which a single training process visits n items in an epoch: its loader is
    `DataLoader(..., shuffle=True, generator=torch.Generator().manual_seed(seed), num_workers=0)`
    (train/loop.py's `make_loader`), iterated through `tqdm.auto`. Asked of the same construction
    rather than re-derived, because what is drawn from the generator before the permutation depends
    on it: DataLoader draws a worker base seed per iterator, and tqdm.auto (tqdm_asyncio) starts an
    iterator of its own before the loop's. (With num_workers > 0 the single process's order differs
    again; the ranks still split one order.)"""
    if n == 0:
        return []
    loader = DataLoader(range(n), batch_size=n, shuffle=True, generator=torch.Generator().manual_seed(seed))
    return [int(i) for batch in tqdm(loader, disable=True, leave=False) for i in batch]


def padded_order(order: Sequence[int], world_size: int) -> list[int]:
    """`order` padded with its own first items to a multiple of world_size (DistributedSampler's padding)."""
    order = list(order)
    total = math.ceil(len(order) / world_size) * world_size
    if total > len(order) and order:
        order += (order * math.ceil((total - len(order)) / len(order)))[: total - len(order)]
    return order


class OrderedDistributedSampler(DistributedSampler):
    """A DistributedSampler that deals out a given per-epoch order (`order_of(seed + epoch)`)
    instead of its own permutation; `set_epoch` each epoch as with any DistributedSampler."""

    def __init__(self, dataset: Sequence, world: World, seed: int,
                 order_of: Callable[[int, int], list[int]] = epoch_order):
        super().__init__(dataset, num_replicas=world.size, rank=world.rank, shuffle=False, seed=seed, drop_last=False)
        self.order_of = order_of

    def global_order(self) -> list[int]:
        """This epoch's order over all ranks, padded: the concatenation of the global batches."""
        return padded_order(self.order_of(len(self.dataset), self.seed + self.epoch), self.num_replicas)

    def __iter__(self) -> Iterator[int]:
        return iter(self.global_order()[self.rank :: self.num_replicas])


def shard_loader(dataset: Sequence, global_batch_size: int, seed: int, epoch: int, world: World,
                 collate_fn: Callable, num_workers: int = 0, pin_memory: bool = False
                 ) -> tuple[DataLoader, list[int]]:
    """This rank's loader for one epoch (global batch / world size per step) and the epoch's
    padded global order (global batch i = order[i * global_batch_size : (i + 1) * global_batch_size])."""
    sampler = OrderedDistributedSampler(dataset, world, seed)
    sampler.set_epoch(epoch)
    loader = DataLoader(dataset, batch_size=world.local_batch_size(global_batch_size), sampler=sampler,
                        collate_fn=collate_fn, num_workers=num_workers, pin_memory=pin_memory,
                        persistent_workers=num_workers > 0)
    return loader, sampler.global_order()
