"""Where models run: picking a device, naming it, and waiting for it.

`resolve_device("auto")` is the GPU when PyTorch sees one, else the CPU; `"cpu"`, `"cuda"` and `"cuda:N"` are taken
as they are, and a GPU that is not there is an error that says what to do. Everything that times a model on a GPU
must call `synchronize` before reading the clock: GPU work is queued, and the clock would otherwise time the queueing.
"""
from __future__ import annotations

import os
import platform

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")
DEVICE_VARIABLE = "EACAP_DEVICE"   # the app's device when none is passed: auto, cpu, cuda or cuda:N


class DeviceError(ValueError):
    """A device that cannot be used here; the message says which one and what to pass instead."""


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """`name` ("auto", "cpu", "cuda", "cuda:N" or a torch.device; None means "auto") as a usable torch.device."""
    if isinstance(name, torch.device):
        name = str(name)
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise DeviceError(f"device {name!r} is not supported: use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} asked for, but PyTorch sees no CUDA GPU here (torch "
                          f"{torch.__version__}): use --device cpu or auto")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"device {name!r} asked for, but only {torch.cuda.device_count()} GPU(s) are visible: "
                          f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


def device_name(device: torch.device) -> str:
    """What a person calls the device: the GPU's name, or the CPU's model and the cores this process may use."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()}, {len(os.sched_getaffinity(0))} cores"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def synchronize(device: torch.device) -> None:
    """Wait until the work queued on `device` is done (a no-op on the CPU, which runs each operation as called)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
