"""Prepacked float16-weight linear layers for inference, and the weight-derived caches that hold such copies.

`Linear` is `nn.Linear` (same parameters, same state dict) with one difference at inference: when gradients are
off, the input has at most `PACKED_MAX_ROWS` rows and the weight is exactly representable in float16, which is
the case for every shipped checkpoint (they are stored in float16), it multiplies through fbgemm's prepacked
float16-weight GEMM with float32 activations and float32 accumulation. The weights are the same numbers, so the
result is the same up to summation order (tested to 1e-5). It is what makes KV-cached decoding fast: a decoding
step multiplies a handful of rows (batch x beam) by each weight matrix, and the plain float32 GEMM repacks the
whole weight matrix on every call (measurements: docs/performance.md). Weights that are not float16-exact (a model
in training) take the plain path, so training and its validation are unchanged.

Which library multiplies a decoding step's few rows fastest depends on the machine, not only on the shapes: on the
Intel Xeon these models were first timed on, MKL's float32 GEMM multiplied 3 rows by the student's small matrices in
a few microseconds while fbgemm's packed call had a floor of tens; on an AMD EPYC, MKL takes 2-3x as long as
fbgemm for the same products. So a decoder's step products (`PackedLinear`) are not chosen by a rule but timed:
`choose_products` runs every product of a step every way it may run (`WAYS`) at the step's number of rows, in turn
as a step runs them, and each keeps the fastest (`EACAP_PRODUCTS=plain|packed|serial` forces one way wherever it
may run). Compiled decoding steps (`eacap.graphs`) call the packed products through a custom operator
(`eacap::linear_fp16`), which Inductor calls as it is instead of tracing into it.

`cached_by_weights` keeps anything derived from a module's weights (a packed copy, a fused or traced inference
network) until those weights change.
"""
from __future__ import annotations

import itertools
import os
import time
import warnings
import weakref
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


def prepack(weight: torch.Tensor, bias: torch.Tensor | None = None, any_size: bool = False):
    """fbgemm's prepacked float16 copy of (weight, bias), or None where it would change the numbers (a weight that
    is not float16-exact, e.g. a model in training), cannot run (not on the CPU, no fbgemm) or would be slower (a
    weight of at most `PACKED_MIN_WEIGHTS` elements, unless `any_size`: the caller times both ways)."""
    if weight.numel() <= PACKED_MIN_WEIGHTS and not any_size:
        return None
    if not PREPACK or weight.dtype != torch.float32 or weight.device.type != "cpu" or not fp16_exact(weight):
        return None
    return torch.ops.quantized.linear_prepack_fp16(weight.detach(), None if bias is None else bias.detach())


def _use_packed(packed, x: torch.Tensor, compiled_too: bool = False) -> bool:
    # Not while `torch.compile` traces, unless the caller takes the packed product through its custom operator
    # (`PackedLinear`): the compiler cannot trace into fbgemm's packed product.
    return (packed is not None and PREPACK and not torch.is_grad_enabled() and x.dtype == torch.float32
            and x.numel() <= PACKED_MAX_ROWS * x.shape[-1] and (compiled_too or not torch.compiler.is_compiling()))


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
    decoder's step): `F.linear(x, weight, bias)`, one of three ways (`WAYS`): "plain", the library's float32 GEMM
    (MKL on x86); "packed", fbgemm's packed float16-weight GEMM through PyTorch's quantized operator (split over the
    threads); "serial", the same fbgemm product on the calling thread alone, with no threads to wake (PyTorch's
    `fbgemm_linear_fp16_weight_fp32_activation`). Built from weights that may be derived (e.g. two layers'
    weights concatenated into one product).

    The way is chosen per number of rows: as `choose_products` timed it where it has run for that number (a
    decoding step's batch x beam), else by the rule `Linear` follows (packed for weights of more than
    `PACKED_MIN_WEIGHTS` elements and at most `PACKED_MAX_ROWS` rows). The packed ways exist wherever they may run
    (float16-exact weights, inference, fbgemm), whatever the weight's size."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        self.weight, self.bias = weight.detach(), None if bias is None else bias.detach()
        self.packed = prepack(self.weight, self.bias, any_size=True)
        self.serial = None   # the serial way's packed copy, made when first timed (`ways`)
        # The weight transposed once, for the faster plain GEMM on a few rows (see PACKED_MIN_WEIGHTS); a large
        # weight's plain product takes the transposed view instead of a second copy
        small = self.weight.numel() <= PACKED_MIN_WEIGHTS
        self.weight_t = self.weight.t().contiguous() if small else None
        # rows -> the ways `choose_products` timed fastest: (called directly, called from compiled code or None
        # where not timed so)
        self.chosen: dict[int, tuple[str, str | None]] = {}
        self.key = next(_keys)
        _BY_KEY[self.key] = self

    def ways(self) -> list[str]:
        """The ways this product may run (making the serial way's packed copy if needed)."""
        if self.packed is None:
            return ["plain"]
        if self.serial is None and SERIAL:
            self.serial = torch.fbgemm_pack_gemm_matrix_fp16(self.weight)
        return ["plain", "packed"] + (["serial"] if SERIAL else [])

    def way(self, x: torch.Tensor) -> str:
        """How `x` is multiplied."""
        if not _use_packed(self.packed, x, compiled_too=True):
            return "plain"
        if PRODUCTS != "auto":
            return PRODUCTS if PRODUCTS in self.ways() else "plain"
        compiling = torch.compiler.is_compiling()
        chosen = self.chosen.get(x.numel() // x.shape[-1])
        if chosen is None:   # not timed at this number of rows: the rule (compiled steps: the plain GEMM)
            return "packed" if self.weight_t is None and not compiling else "plain"
        return chosen[1 if compiling else 0] or chosen[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.product(x, self.way(x))

    def product(self, x: torch.Tensor, way: str) -> torch.Tensor:
        """The product one of `WAYS`."""
        if way != "plain":
            if torch.compiler.is_compiling():
                y = torch.ops.eacap.linear_fp16(x, self.key, way == "serial")
                # The operator's serial product leaves the bias out: added here, it is part of the compiled code's
                # own loops instead of one more ATen call per product (`_linear_fp16`)
                return y + self.bias if way == "serial" and self.bias is not None else y
            return self._fp16(x, way == "serial")
        if torch.compiler.is_compiling():
            return compiled_affine(x, self.weight.t() if self.weight_t is None else self.weight_t, self.bias)
        if self.weight_t is not None and x.dim() == 2 and not torch.is_grad_enabled():
            return x @ self.weight_t if self.bias is None else torch.addmm(self.bias, x, self.weight_t)
        return F.linear(x, self.weight, self.bias)

    def _fp16(self, x: torch.Tensor, serial: bool, bias: bool = True) -> torch.Tensor:
        """The packed product, serial or over the threads; `bias=False`: the serial one without its bias (the
        threaded one has it packed with the weights)."""
        if serial:
            return torch.fbgemm_linear_fp16_weight_fp32_activation(x, self.serial, self.bias if bias else None)
        return torch.ops.quantized.linear_dynamic_fp16(x, self.packed)


WAYS = ("plain", "packed", "serial")


def products_setting(value: str) -> str:
    """The EACAP_PRODUCTS setting `value`, or "auto" (with a warning) where it is none of the settings."""
    if value in ("auto",) + WAYS:
        return value
    warnings.warn(f"eacap: EACAP_PRODUCTS={value!r} is not one of auto, plain, packed, serial; timing each way (auto)")
    return "auto"


# How a step's products run (`choose_products`): "auto" times the ways on this machine; any of `WAYS` forces that
# one wherever it may run (the plain GEMM elsewhere).
PRODUCTS = products_setting(os.environ.get("EACAP_PRODUCTS", "auto"))
# The serial way: PyTorch marks these two functions deprecated (to be removed in a later release, while torch is
# pinned here); without them the serial way is not offered.
SERIAL = PREPACK and hasattr(torch, "fbgemm_pack_gemm_matrix_fp16") \
    and hasattr(torch, "fbgemm_linear_fp16_weight_fp32_activation")
warnings.filterwarnings("ignore", message=r"fbgemm_(pack_gemm_matrix_fp16|linear_fp16_weight_fp32_activation) is "
                        r"deprecated")

# The packed products of compiled steps, by key: a compiled call names its product by a number (Inductor cannot
# take fbgemm's packed weights as an input), and finds it here while the `PackedLinear` lives.
_BY_KEY: "weakref.WeakValueDictionary[int, PackedLinear]" = weakref.WeakValueDictionary()
_keys = itertools.count()


# Defined with `torch.library.Library` rather than `torch.library.custom_op`, whose wrapper costs about 2 us more
# per call, a tenth of a small product.
_LIBRARY = torch.library.Library("eacap", "FRAGMENT")
_LIBRARY.define("linear_fp16(Tensor x, int key, bool serial) -> Tensor")


def _linear_fp16(x: torch.Tensor, key: int, serial: bool) -> torch.Tensor:
    """`PackedLinear` number `key`'s packed product, as one operator that compiled code calls as it is; the serial
    product without its bias, which the compiled code adds in its own loops."""
    return _BY_KEY[key]._fp16(x, serial, bias=not serial)


def _linear_fp16_shape(x: torch.Tensor, key: int, serial: bool) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], _BY_KEY[key].weight.shape[0]))


_LIBRARY.impl("linear_fp16", _linear_fp16, "CPU")
torch.library.register_fake("eacap::linear_fp16", _linear_fp16_shape, lib=_LIBRARY)


def choose_products(linears: list[PackedLinear], rows: int, compiled: bool = True, rounds: int | None = None) -> None:
    """Time each of `linears` every way it may run (`PackedLinear.ways`) at `rows` rows and keep the fastest for
    that number of rows (`PackedLinear.chosen`): once as eager code calls them and, where `compiled` (decoding steps
    may run compiled in this process), once as compiled code does, the packed ways through their custom operator,
    which returns to Python on each call (a few microseconds, which can decide it at many rows; its first call in a
    process takes about a second, which a process that compiles pays anyway).

    Each round runs all of them in turn one way, then in turn another (the order rotating between rounds), as a
    decoding step runs them: a product then finds the others' weights in the cores' caches rather than its own, as
    it does in a step. The fastest of `rounds` rounds after one to warm up: a decode's first call can meet a compile
    running in the background (`eacap.graphs`), which takes a core now and then, and a way that wakes the second
    core more than another. By default 20 rounds at a few rows, fewer at many, where each call takes longer and
    varies less: about 0.2 s for the teacher's decoder at 3 rows and 0.3 s at 96, a few hundredths for the
    student's, once per decoder and number of rows. Products that can only run one way are left out."""
    rounds = rounds or max(4, min(20, 240 // rows))
    if rows > PACKED_MAX_ROWS or PRODUCTS != "auto":
        return
    todo = [linear for linear in linears if linear.packed is not None and rows not in linear.chosen]
    if not todo:
        return
    ways = [linear.ways() for linear in todo][0]   # every product's packed copies made, the same ways for all
    calls = {way: (lambda linear, x, way=way: linear.product(x, way)) for way in ways}
    if compiled:
        calls.update({f"{way} op": (lambda linear, x, serial=way == "serial": torch.ops.eacap.linear_fp16(
            x, linear.key, serial)) for way in ways if way != "plain"})
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(rows, linear.weight.shape[1], generator=generator) for linear in todo]
    names = list(calls)
    times = {name: [[] for _ in todo] for name in names}
    with torch.inference_mode():
        for round_ in range(rounds + 1):
            for name in names[round_ % len(names):] + names[: round_ % len(names)]:
                for linear, x, samples in zip(todo, inputs, times[name]):
                    start = time.perf_counter()
                    calls[name](linear, x)
                    samples.append(time.perf_counter() - start)
    for i, linear in enumerate(todo):
        def cost(name: str) -> float:
            return min(times[name][i][1:])
        linear.chosen[rows] = (min(ways, key=cost), min(ways, key=lambda way: cost(way if way == "plain" else
                                                                                   f"{way} op")) if compiled else None)


class Linear(nn.Linear):
    """`nn.Linear` with the prepacked float16-weight path at inference (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return F.linear(x, self.weight, self.bias)
        return linear(x, self, self.weight, self.bias)
