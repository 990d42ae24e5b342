"""Prepacked float16-weight linear layers for inference, and the weight-derived caches that hold such copies.

`Linear` is `nn.Linear` (same parameters, same state dict) with one difference at inference: when gradients are
off, the input has at most `PACKED_MAX_ROWS` rows and the weight is exactly representable in float16, which is
the case for every shipped checkpoint (they are stored in float16), it multiplies through fbgemm's prepacked
float16-weight GEMM with float32 activations and float32 accumulation. The weights are the same numbers, so the
result is the same up to summation order (tested to 1e-5). It is what makes KV-cached decoding fast: a decoding
step multiplies a handful of rows (batch x beam) by each weight matrix, and the plain float32 GEMM repacks the
whole weight matrix on every call (measurements: docs/performance.md). Weights that are not float16-exact (a model
in training) take the plain path, so training and its validation are unchanged.

`cached_by_weights` keeps anything derived from a module's weights (a packed copy, a fused or traced inference
network) until those weights change.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn


def weights_key(tensors: Iterable[torch.Tensor]) -> tuple:
    """Identifies the current values of `tensors`: storage and version (an optimiser step or a load bumps it).
    Inference tensors carry no version; they cannot be modified in place outside inference mode anyway."""
    return tuple([(t.data_ptr(), 0 if t.is_inference() else t._version) for t in tensors])


def cached_by_weights(module: nn.Module, name: str, build: Callable[[], object],
                      tensors: Iterable[torch.Tensor] | None = None) -> object:
    """`build()`'s result, kept on `module` (outside its state dict) until any of `tensors` (default: the module's
    parameters and buffers) changes."""
    key = weights_key(module_tensors(module) if tensors is None else tensors)
    cached = module.__dict__.get(name)
    if cached is None or cached[0] != key:
        module.__dict__[name] = cached = (key, build())
    return cached[1]


def module_tensors(module: nn.Module) -> list[torch.Tensor]:
    """`module`'s parameters and buffers, read from each submodule's own tables. The same tensors as
    `parameters()` and `buffers()`, several times faster: the submodules are listed once (a model's structure does
    not change; its tensors may, and are read afresh), and inference calls this on every pass."""
    modules = module.__dict__.get("_weights_modules")
    if modules is None:
        modules = module.__dict__["_weights_modules"] = list(module.modules())
    tensors: list[torch.Tensor] = []
    for m in modules:
        tensors += m._parameters.values()
        tensors += m._buffers.values()
    return [t for t in tensors if t is not None]


def fp16_exact(weight: torch.Tensor) -> bool:
    return bool(torch.equal(weight.to(torch.float16).to(weight.dtype), weight))


def _prepack_available() -> bool:
    try:
        torch.ops.quantized.linear_prepack_fp16(torch.zeros(1, 1), None)
        return True
    except (RuntimeError, AttributeError):  # a torch build without fbgemm (e.g. some ARM wheels)
        return False


PREPACK = _prepack_available()
# The packed GEMM wins for few rows and loses slightly for many: decoding steps (batch x beam rows) take it,
# encoders over hundreds of frames do not.
PACKED_MAX_ROWS = 96
# Smaller weights are faster through the plain float32 GEMM, given the weight transposed once ([in, out],
# contiguous; `PackedLinear`): the packed call has a fixed cost of tens of microseconds, and MKL multiplies a few
# rows by a pre-transposed matrix faster than by the [out, in] one `F.linear` passes. So only weights with more
# elements than this are packed: the teacher's decoder's QKV and FFN matrices, not the students' or the output
# layers.
PACKED_MIN_WEIGHTS = 250_000


def prepack(weight: torch.Tensor, bias: torch.Tensor | None = None):
    """fbgemm's prepacked float16 copy of (weight, bias), or None where it would change the numbers (a weight that
    is not float16-exact, e.g. a model in training), cannot run (not on the CPU, no fbgemm) or would be slower (a
    weight of at most `PACKED_MIN_WEIGHTS` elements)."""
    if weight.numel() <= PACKED_MIN_WEIGHTS:
        return None
    if not PREPACK or weight.dtype != torch.float32 or weight.device.type != "cpu" or not fp16_exact(weight):
        return None
    return torch.ops.quantized.linear_prepack_fp16(weight.detach(), None if bias is None else bias.detach())


def _use_packed(packed, x: torch.Tensor) -> bool:
    # Not while `torch.compile` traces (compiled decoding steps, `eacap.graphs`): it cannot trace fbgemm's packed
    # product, and Inductor picks its own GEMMs.
    return (packed is not None and PREPACK and not torch.is_grad_enabled() and x.dtype == torch.float32
            and x.numel() <= PACKED_MAX_ROWS * x.shape[-1] and not torch.compiler.is_compiling())


def linear(x: torch.Tensor, owner: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)`, through the prepacked float16-weight GEMM at inference when `weight` is
    float16-exact. The packed copy is cached on `owner` (the module holding the weights) until they change."""
    if not _use_packed(True, x):
        return F.linear(x, weight, bias)
    packed = cached_by_weights(owner, "_packed_cache", lambda: prepack(weight, bias),
                               (weight,) if bias is None else (weight, bias))
    if packed is None:
        return F.linear(x, weight, bias)
    return torch.ops.quantized.linear_dynamic_fp16(x, packed)


def compiled_affine(x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weight_t + bias as `torch.compile` should see it: a product without the bias, which Inductor hands to
    the library GEMM, and the bias added in Inductor's own fused loops (the compiled decoding steps turn off the
    pattern that would merge them back, `eacap.graphs`). As one `addmm`, the library call copies the bias into the
    output through three more ATen calls on every call. The same numbers to float rounding."""
    y = torch.matmul(x, weight_t)
    return y if bias is None else y + bias


class PackedLinear:
    """A frozen affine map for inference code that calls its layers directly rather than through modules (the
    decoder's step): `F.linear(x, weight, bias)`, through the prepacked GEMM under the same conditions as `linear`.
    Built from weights that may be derived (e.g. two layers' weights concatenated into one product)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        self.weight, self.bias = weight.detach(), None if bias is None else bias.detach()
        self.packed = prepack(self.weight, self.bias)
        # Unpacked: the weight transposed once, for the faster plain GEMM on a few rows (see PACKED_MIN_WEIGHTS)
        self.weight_t = self.weight.t().contiguous() if self.packed is None else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if _use_packed(self.packed, x):
            return torch.ops.quantized.linear_dynamic_fp16(x, self.packed)
        if torch.compiler.is_compiling():
            return compiled_affine(x, self.weight.t() if self.weight_t is None else self.weight_t, self.bias)
        if self.weight_t is not None and x.dim() == 2 and not torch.is_grad_enabled():
            return x @ self.weight_t if self.bias is None else torch.addmm(self.bias, x, self.weight_t)
        return F.linear(x, self.weight, self.bias)


class Linear(nn.Linear):
    """`nn.Linear` with the prepacked float16-weight path at inference (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return F.linear(x, self.weight, self.bias)
        return linear(x, self, self.weight, self.bias)
