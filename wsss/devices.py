"""Devices and mixed precision, as every stage picks them."""

from __future__ import annotations

import torch

from wsss.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when present) as a torch device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} asked for, but no CUDA device is available")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"invalid device {name!r}: {exc}") from exc


def autocast_settings(amp: bool, device: torch.device) -> dict:
    """``torch.autocast`` arguments: float16 on CUDA, bfloat16 on the CPU, or disabled."""
    if not amp:
        return {"enabled": False}
    return {"enabled": True, "dtype": torch.float16 if device.type == "cuda" else torch.bfloat16}
