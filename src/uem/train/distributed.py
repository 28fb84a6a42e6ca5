"""Multi-process training: torchrun + DistributedDataParallel, gloo on the CPU, nccl on CUDA.

How the ranks share the work, and why the result matches one process with the same global batch:

* Batches. Every rank draws the same seeded permutation and cuts it into the same global batches
  (`cfg.batch_size` is the GLOBAL batch). Rank r runs the encoder's top on slice r of each batch
  (`Dist.local`); the features are then all-gathered with autograd (`Dist.gather`), so every rank
  holds the whole batch in single-process order and computes the SAME loss as one process would.
  All UEM losses couple the batch (per-domain means, L_SPR's in-batch pairs), so this is what keeps
  the method unchanged. The gather's backward sums the N identical copies of the gradient (N x the
  true one on each rank's slice) and DDP's gradient average divides by N: the exact gradient.
* BatchNorm. Where the trained part has BatchNorm (the linear / mlp heads: the last MBConv blocks,
  the head conv's BN, the projection head's BatchNorm1d; the default grid head has none) it
  normalises with batch statistics. torch.nn.SyncBatchNorm refuses CPU tensors (torch
  2.13: "expected input tensor to be on GPU"), so `GlobalBatchNorm` does the same on any device:
  per-channel sums all-reduced with autograd, so training statistics are the global batch's.
* Banks, prototypes. Bank updates use the gathered features: every rank applies the same update,
  the banks stay identical. K estimation, k-means and the merge run once, on rank 0, and are
  broadcast as tensors (`Dist.from_main`, `Dist.broadcast_tensors`). This module moves tensors only:
  what they mean (`uem.train.stages`, `EpochPrototypes.to_tensors`) lives with the stages.
* Cache. The frozen trunk's (view, batch) jobs are dealt round-robin to the ranks and summed
  (`Dist.sum_shards`): N processes compute it N times faster, and the bits equal one process's.
* Writes. Only rank 0 writes files, logs and draws progress bars (the trainer asks `is_main`).

Single process (no torchrun, or WORLD_SIZE=1): every method here is the identity, nothing changes.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import nn

from ..engine.errors import UemError

TIMEOUT_ENV = "UEM_DIST_TIMEOUT"   # seconds a collective may wait (default 1800): a dead rank fails, not hangs
THREADS_ENV = "UEM_TORCH_THREADS"  # torch threads per process; default cores // processes on this machine
_CHUNK = 1 << 24                   # elements per all-reduce of a large CPU tensor (32 MiB of float16)


class DistError(UemError):
    """The ranks disagree about their inputs (e.g. RUN is not on a filesystem every rank sees)."""


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_process(local_world: int) -> int:
    """C // N: N processes on a C-core machine share the cores instead of oversubscribing them
    (UEM_TORCH_THREADS overrides it, e.g. to compare with a one-thread single-process run)."""
    if os.environ.get(THREADS_ENV):
        return max(1, int(os.environ[THREADS_ENV]))
    return max(1, cores() // max(1, local_world))


def is_main_process() -> bool:
    """Rank 0, or no torchrun at all (for messages printed outside the trainer)."""
    return os.environ.get("RANK", "0") == "0"


@dataclass
class Dist:
    """This process's place in the job. world == 1: single process, every method a no-op."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- data --------------------------------------------------------------------------------------
    def local(self, idx: np.ndarray) -> np.ndarray:
        """This rank's slice of a global batch; the slices in rank order are the batch itself."""
        return np.array_split(idx, self.world)[self.rank] if self.active else idx

    def gather(self, x: torch.Tensor, total: int) -> torch.Tensor:
        """Rows of every rank's `x` (slices of one batch of `total` rows), in rank order, with
        autograd. Slices differ by at most one row: padded to equal size for the collective."""
        if not self.active:
            return x
        sizes = [len(s) for s in np.array_split(np.arange(total), self.world)]
        pad = max(sizes) - len(x)
        if pad:
            x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))])
        parts = dist_nn.all_gather(x) if x.requires_grad else _all_gather(x)
        return torch.cat([p[:s] for p, s in zip(parts, sizes)])

    def embed(self, fn: Callable[[slice], torch.Tensor], n: int) -> torch.Tensor:
        """fn over rows [0, n), each rank a contiguous part, gathered on every rank (no autograd)."""
        if not self.active:
            return fn(slice(0, n))
        rows = np.array_split(np.arange(n), self.world)[self.rank]  # the split `gather` expects
        with torch.no_grad():
            part = fn(slice(int(rows[0]), int(rows[-1]) + 1) if len(rows) else slice(0, 0))
            return self.gather(part, n)

    def sum_shards(self, t: torch.Tensor) -> torch.Tensor:
        """In place: the element-wise sum over ranks of a CPU tensor where each rank filled its own
        entries and left the rest 0 (x + 0 == x exactly, so the result equals one process's)."""
        if not self.active:
            return t
        flat = t.view(-1)
        for s in range(0, flat.numel(), _CHUNK):
            part = flat[s:s + _CHUNK].to(self.device)
            dist.all_reduce(part)
            flat[s:s + _CHUNK] = part.cpu()
        return t

    # -- compute once, share -----------------------------------------------------------------------
    def from_main(self, fn: Callable[[], Sequence[int]]) -> list[int]:
        """Integers computed on rank 0 only (e.g. the K estimate), then broadcast."""
        if not self.active:
            return [int(v) for v in fn()]
        values = [int(v) for v in fn()] if self.is_main else []
        return [int(v) for v in self.broadcast_tensors([torch.as_tensor(values, dtype=torch.int64)]
                                                       if self.is_main else None)[0]]

    def broadcast_tensors(self, tensors: list[torch.Tensor] | None) -> list[torch.Tensor]:
        """Rank 0's list of tensors on every rank (others pass None): a header of dtypes and shapes,
        then the data. Tensors only — no pickled objects travel between processes."""
        if not self.active:
            assert tensors is not None
            return tensors
        codes = [torch.float32, torch.float64, torch.int64, torch.bool, torch.float16, torch.int32]
        if self.is_main:
            header = [len(tensors)]
            for t in tensors:
                header += [codes.index(t.dtype), t.dim(), *t.shape]
            head = torch.as_tensor([len(header), *header], dtype=torch.int64)
            size = torch.as_tensor([len(head)], dtype=torch.int64)
        else:
            size = torch.zeros(1, dtype=torch.int64)
        size = self._bcast(size)
        head = self._bcast(head if self.is_main else torch.zeros(int(size[0]), dtype=torch.int64)).tolist()
        out, pos = [], 2
        for k in range(head[1]):
            dtype, ndim = codes[head[pos]], head[pos + 1]
            shape = head[pos + 2: pos + 2 + ndim]
            pos += 2 + ndim
            t = tensors[k] if self.is_main else torch.zeros(shape, dtype=dtype)
            out.append(self._bcast(t.contiguous()))
        return out

    def _bcast(self, t: torch.Tensor) -> torch.Tensor:
        moved = t.to(self.device) if dist.get_backend() == "nccl" else t.cpu()
        # bool is not a collective dtype everywhere: travel as uint8
        wire = moved.to(torch.uint8) if moved.dtype == torch.bool else moved
        dist.broadcast(wire, src=0)
        return (wire.bool() if t.dtype == torch.bool else wire).to(t.device if self.is_main else "cpu")

    def all_agree(self, flag: bool) -> bool:
        """True only if `flag` is true on every rank (e.g. 'my cache file loaded')."""
        if not self.active:
            return flag
        t = torch.as_tensor([int(flag)], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item())

    def check_same(self, what: str, value: int) -> None:
        """Fail loudly (not hang later) when ranks see different inputs."""
        if not self.active:
            return
        t = torch.as_tensor([value, -value], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        if int(t[0]) != value or int(-t[1]) != value:
            raise DistError(f"ranks disagree about {what}: every rank must see the same DATA and RUN "
                            "(on several machines, RUN must be on a shared filesystem)")

    # -- modules -----------------------------------------------------------------------------------
    def prepare(self, encoder: nn.Module, frozen: list[nn.Module]) -> nn.Module:
        """BatchNorm -> GlobalBatchNorm and the frozen modules' parameters out of autograd (they get
        no gradient from cached training, and DDP insists every trainable parameter gets one)."""
        if not self.active:
            return encoder
        for m in frozen:
            for p in m.parameters():
                p.requires_grad_(False)
        return convert_batchnorm(encoder)

    def wrap(self, module: nn.Module) -> nn.Module:
        """DistributedDataParallel around a module (gradients averaged over ranks). Buffers are not
        re-broadcast each step: GlobalBatchNorm keeps them identical on every rank already."""
        if not self.active:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids, forward_sync_buffers=False)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


def _all_gather(x: torch.Tensor) -> list[torch.Tensor]:
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return parts


def setup(device: torch.device) -> Dist:
    """The process group when started by torchrun (WORLD_SIZE > 1 in the environment), else a
    single-process Dist. nccl on CUDA (one GPU per local rank), gloo on the CPU. Sets the torch
    threads to cores // processes-on-this-machine."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(device=device)
    # The autograd collectives of torch.distributed.nn warn that they are deprecated in favour of a
    # private module (torch.distributed._functional_collectives); they work, and are public.
    warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.\w+ is deprecated",
                            category=FutureWarning)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DistError(f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible): "
                            "use at most one process per GPU")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    torch.set_num_threads(threads_per_process(local_world))
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "1800")))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    return Dist(rank=rank, world=world, local_rank=local_rank, device=device)


# -- BatchNorm over the global batch ---------------------------------------------------------------
class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm (1d or 2d) that, in training with several ranks, normalises with the statistics of
    the whole global batch. Two passes (mean, then the centred squares), each an all-reduce with
    autograd; running statistics updated as torch.nn.BatchNorm does (unbiased variance). In eval
    mode, or alone, it is plain BatchNorm. Same parameter and buffer names: state dicts load as is."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in (2, 3, 4, 5):
            raise ValueError(f"expected 2D-5D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = x.new_full((1,), x.numel() // x.shape[1])
        sums = dist_nn.all_reduce(torch.cat([x.sum(dims), count]))
        n = sums[-1]
        mean = sums[:-1] / n
        xc = x - mean.reshape(shape)
        var = dist_nn.all_reduce((xc * xc).sum(dims)) / n
        y = xc * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(var.detach() * n / (n - 1).clamp_min(1), factor)
        return y


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm*d below `module` replaced (in place) by a GlobalBatchNorm sharing its
    parameters and buffers."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, GlobalBatchNorm):
            new = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                  child.track_running_stats)
            if child.affine:
                new.weight, new.bias = child.weight, child.bias
            if child.track_running_stats:
                new.running_mean, new.running_var = child.running_mean, child.running_var
                new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(module, name, new)
        else:
            convert_batchnorm(child)
    return module


class EncoderTop(nn.Module):
    """encoder.top (the trained part above the cached trunk) as a module's forward, so
    DistributedDataParallel can wrap it."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.encoder.top(h)
