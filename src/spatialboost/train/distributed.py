"""One process or many: ``torchrun --nproc-per-node N -m spatialboost train ...``.

``init_distributed`` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); without it the run is a
single process and every helper here is a no-op. Backend: NCCL on GPUs, gloo on CPU (the tests).

Strategies (``TrainConfig.distributed``):

- ``ddp``: ``DistributedDataParallel`` over the VLM; only parameters with ``requires_grad`` are reduced.
- ``fsdp``: FSDP2 (``torch.distributed.fsdp.fully_shard``) on each LLM decoder layer, then on the whole
  VLM, for LLMs whose weights + optimiser state do not fit one device. Checkpoints gather full tensors.

Loss normalisation is the caller's: each process scales its summed token loss by
``world_size / global_tokens`` so that DDP's gradient *mean* equals the gradient of the global token mean,
whatever the split of the global batch across processes.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

log = logging.getLogger(__name__)


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def init_distributed(device: str = "auto") -> DistEnv:
    """Join torchrun's process group when WORLD_SIZE > 1; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        log.info("process %d/%d on %s", rank, world, dev)
    return DistEnv(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def shutdown(env: DistEnv) -> None:
    """Leave the process group. Collect garbage first: FSDP's module state is freed by the cycle collector, and
    gloo work it still references, destroyed during interpreter finalisation, can abort the process at exit
    (a rank's "terminate called without an active exception" after every output is written)."""
    if env.distributed and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def all_reduce_sum(x: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.distributed:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def wrap_distributed(model: nn.Module, env: DistEnv, strategy: str) -> nn.Module:
    """DDP or FSDP2 around ``model`` when distributed; ``model`` itself otherwise."""
    if not env.distributed:
        return model
    if strategy == "fsdp":
        return shard_fsdp(model, env)
    ids = [env.device.index] if env.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def shard_fsdp(model: nn.Module, env: DistEnv) -> nn.Module:
    """FSDP2: shard each LLM decoder layer, then the root (projector, encoder, embeddings)."""
    mesh = init_device_mesh(env.device.type, (env.world_size,))
    llm = getattr(model, "llm", model)
    layers = getattr(getattr(llm, "model", llm), "layers", [])
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    sharded = sum(hasattr(p, "full_tensor") for p in model.parameters())
    log.info("FSDP: %d LLM layers + root sharded over %d processes (%d DTensor parameters)",
             len(layers), env.world_size, sharded)  # fmt: skip
    return model


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def no_sync(model: nn.Module, active: bool):
    """Skip DDP's gradient all-reduce on accumulation micro-batches (all but the last)."""
    if active and isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


def full_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """FSDP2 DTensor shards -> full tensors (collective: every rank must call it)."""
    out = {}
    for name, t in tensors.items():
        full = t.full_tensor() if hasattr(t, "full_tensor") else t
        out[name] = full.detach().cpu()
    return out
