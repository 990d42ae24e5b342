"""TorchScript tracing of the encoders for inference, and oneDNN's fusion of each traced shape on a CPU.

At inference both encoders are fixed sequences of operations (no branch depends on the data), and a trace runs
them without Python between the operations: the same kernels in the same order, so the same numbers (tested), in
less time (docs/performance.md). `torch.jit.trace` is deprecated in favour of `torch.compile`, which spent
minutes compiling the CNN and ran it no faster, so the trace stays, with its deprecation warning silenced and the
eager module as the fallback.

On a CPU, an input shape seen a second time gets a fused copy of the trace (`FusedTrace`, built in the background):
frozen (the weights become constants) and optimised with oneDNN's graph fusion, which merges each convolution or
matrix product with the operations around it (activation, residual sum, scaling) into one oneDNN kernel. The
student's CNN then runs in two thirds of its plain trace's time, the teacher's layers a few percent faster; the
numbers differ from the plain trace's by float rounding (about 1e-6). A fused graph is specialised to its input
shape, so each shape gets its own, like a CUDA graph, up to `MAX_FUSED` shapes. Like compiled decoding steps, fusing
is on in processes that run long enough to earn back its builds (`eacap.graphs.long_running`: the app, live
captions, the bench); a one-shot CLI run keeps the plain traces. `EACAP_FUSE=0` keeps them everywhere,
`EACAP_FUSE=1` fuses in every process.
"""
from __future__ import annotations

import os
import threading
import warnings
from typing import Callable

import torch
from torch import nn

# EACAP_TRACE=0 runs the encoders eagerly (to compare, or to debug inside them).
TRACE = os.environ.get("EACAP_TRACE", "1") != "0"
_FUSE_SETTING = os.environ.get("EACAP_FUSE", "auto")
FUSE = _FUSE_SETTING == "1"   # read on each call; `long_running` turns it on
FUSE_WARMUP = 3   # calls that let TorchScript profile the fused copy's input and then fuse and compile it
# Fused shapes per trace. A fused copy's memory stays with the process even once the copy is dropped (TorchScript
# keeps each frozen copy's compiled code: 13-16 MB per student shape, 20-30 MB per teacher shape), so copies are
# never replaced: the first shapes seen twice get them, and later shapes keep the plain trace.
MAX_FUSED = 8
# Larger inputs keep the plain trace: a fused copy holds memory in proportion to its input (the teacher's layers at
# 32 clips of 10 s, 6.1 M elements: 700 MB more for the process's life, for a tenth off their time). The student's
# CNN, which runs 8 clips at a time on a CPU, and either encoder on a few clips stay under it.
MAX_FUSED_ELEMENTS = 1_000_000

# oneDNN's fusion is a process-wide TorchScript switch, read when a graph is optimised (its first calls). It is
# turned on only while a fused copy is warmed up, under this lock, so no other graph is optimised with it.
_fusion_lock = threading.Lock()


def long_running() -> None:
    """Turn fusing on for this process, unless EACAP_FUSE=0 (called by `eacap.graphs.long_running`)."""
    global FUSE
    if _FUSE_SETTING != "0":
        FUSE = True


def trace(module: nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """`module` traced to TorchScript on `example`, for inference; `module` itself where tracing is off or fails.
    On a GPU, wrapped in an `eacap.graphs.GraphedCall`, which replays each input shape's pass as a CUDA graph; on
    a CPU, in a `FusedTrace`, which runs each input shape seen twice through a oneDNN-fused copy where `FUSE`.

    A trace replays the branches its example took: callers key it by any such branch.
    """
    runner = module
    if TRACE:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                runner = torch.jit.trace(module, example, check_trace=False)
        except Exception as error:  # whatever stops the trace, the module itself still runs
            warnings.warn(f"eacap: TorchScript tracing of {type(module).__name__} failed ({error}); running it "
                          "eagerly")
            return runner
    if example.device.type == "cuda":  # on a GPU, each input shape's pass is captured once and replayed
        from ..graphs import GraphedCall
        return GraphedCall(runner)
    if TRACE and example.device.type == "cpu":
        return FusedTrace(runner, type(module).__name__)
    return runner


class FusedTrace:
    """A trace of one tensor argument, each input signature (shape, strides, dtype) seen `CAPTURE_AFTER` times
    run from a frozen, oneDNN-fused copy of its own (for the first `MAX_FUSED` signatures, of inputs of at most
    `MAX_FUSED_ELEMENTS`); the plain trace until then, for other inputs, and for good where fusing failed (with a
    warning)."""

    def __init__(self, traced: torch.jit.ScriptModule, name: str = ""):
        from ..graphs import GraphCache

        self.traced, self.name = traced, name or "a trace"
        self.fused = GraphCache(fallback="the plain trace runs instead")
        self.plain_runs = 0

    def plain(self, x: torch.Tensor) -> torch.Tensor:
        if self.plain_runs < 2:
            # TorchScript profiles and optimises a graph on its first calls: not while a fused copy is warmed up in
            # another thread with oneDNN's fusion switched on, which would fuse this graph too.
            with _fusion_lock:
                self.plain_runs += 1
                return self.traced(x)
        return self.traced(x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not FUSE or not torch.is_inference_mode_enabled() or x.numel() > MAX_FUSED_ELEMENTS:
            return self.plain(x)
        key = (tuple(x.shape), x.stride(), x.dtype)

        # Built in a background thread (`eacap.graphs.GraphCache`), which warms the copy up on this call's input (a
        # fresh tensor nobody writes to), while this call and the next ones of its shape run the plain trace: a
        # caller never waits for a build, and `eacap.graphs.wait()` waits for the builds under way.
        def build():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fused = torch.jit.freeze(self.traced.eval())   # a copy; the plain trace is unchanged
            with _fusion_lock:
                torch.jit.enable_onednn_fusion(True)
                try:
                    for _ in range(FUSE_WARMUP):
                        fused(x)
                finally:
                    torch.jit.enable_onednn_fusion(False)
            return fused

        with self.fused.lock:
            full = key not in self.fused.entries and len(self.fused.entries) + len(self.fused.building) >= MAX_FUSED
            fused = None if full else self.fused.get(key, build, f"fusing {self.name} with oneDNN", background=True)
        return self.plain(x) if fused is None else fused(x)
