"""Process-group plumbing for torchrun: rank, device, reductions, and a batch norm synchronised
across ranks on any backend (torch's SyncBatchNorm needs GPUs; this one also runs on gloo/CPU)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistributedContext:
    """Where this process stands: rank, world size, local rank and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> DistributedContext:
    """Join the process group when launched by torchrun (NCCL on GPUs, gloo on CPU), else one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else str(device).startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError(f"device {device} requested but CUDA is not available")
    if not use_cuda:
        chosen = torch.device("cpu")
    elif world_size > 1 or device == "auto":
        chosen = torch.device("cuda", local_rank)
    else:
        chosen = torch.device(device)
        chosen = torch.device("cuda", chosen.index or 0)
    if use_cuda:
        torch.cuda.set_device(chosen)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistributedContext(rank, world_size, local_rank, chosen)


def teardown(ctx: DistributedContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    """Sum a tensor over ranks (in place); a no-op in one process."""
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_objects(obj: object, ctx: DistributedContext) -> list:
    """Every rank's ``obj``, in rank order (on every rank)."""
    if not ctx.enabled:
        return [obj]
    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistributedContext) -> None:
    if ctx.enabled:
        dist.barrier()


def launched_shard() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when torchrun started more than one process, else None.
    Offline jobs (precompute, score-variants) use the rank as their shard."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))


def wait_for_all_ranks() -> None:
    """Block until every torchrun rank gets here (gloo, with a timeout of days: shards of an
    offline job may finish hours apart), then leave the process group."""
    from datetime import timedelta

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=timedelta(days=7))
    dist.barrier()
    dist.destroy_process_group()


class RankSyncedBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics are the mean and variance over the whole global
    batch (all ranks), with gradients flowing through the all-reduce. Equivalent to one process
    seeing the global batch; works on every backend."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims = [0, 2] if x.ndim == 3 else [0]
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        stats = all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        channels = x.shape[1]
        total = stats[-1]
        mean = stats[:channels] / total
        var = stats[channels: 2 * channels] / total - mean * mean
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
            self.running_var.mul_(1 - momentum).add_(var.detach() * total / (total - 1), alpha=momentum)
        shape = (1, channels, 1) if x.ndim == 3 else (1, channels)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Synchronise every BatchNorm1d across ranks: torch's SyncBatchNorm on GPUs, else ours."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm1d) and not isinstance(child, RankSyncedBatchNorm):
            synced = RankSyncedBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                         child.track_running_stats).to(child.weight.device)
            synced.load_state_dict(child.state_dict())
            setattr(module, name, synced)
        else:
            convert_sync_batchnorm(child, device)
    return module
