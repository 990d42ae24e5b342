"""Activation functions by name, as model configs store them: each as (module class, function)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"gelu": (nn.GELU, F.gelu), "relu": (nn.ReLU, F.relu), "silu": (nn.SiLU, F.silu)}


def activation(name: str):
    """(module class, function) of the activation called `name`; a ValueError naming the choices otherwise."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}: expected one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]
