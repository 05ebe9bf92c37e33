"""torch.distributed under ``torchrun``: process-group set-up and the few collectives wsss uses.

Every helper also works in a plain single process (rank 0 of 1), so stage code calls them
unconditionally. ``torchrun --nproc_per_node=N -m wsss.<command>`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous address; :func:`init_from_env` joins the group (gloo on CPU,
nccl on CUDA, one GPU per local rank), across nodes as well as on one machine.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from wsss.errors import ConfigError


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group ``torchrun`` describes (no-op when not launched by it).

    Returns the device this rank uses: ``cuda:<LOCAL_RANK>`` for a CUDA device.
    """
    if not launched_by_torchrun() or dist.is_initialized():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(minutes=60))
    return device


def shutdown() -> None:
    """Leave the process group (no-op when not in one). Every command calls it on its way out:
    a process that exits with the group still up lets the interpreter tear down gloo's worker
    threads, which aborts it now and then ("terminate called without an active exception")."""
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_gather_object(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order (``[value]`` in a single process)."""
    if not dist.is_initialized():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def same_on_all_ranks(value: Any, what: str, hint: str) -> None:
    """Raise a ConfigError if ranks disagree on ``value`` (e.g. their output folder)."""
    values = all_gather_object(value)
    if any(v != values[0] for v in values):
        raise ConfigError(f"ranks disagree on {what}: {sorted(set(map(str, values)))}. {hint}")


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (batch-norm statistics). DDP syncs them only at the start
    of a forward pass, so after the last training step each rank still holds its own."""
    if dist.is_initialized():
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)
