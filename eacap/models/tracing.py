"""TorchScript tracing of the encoders for inference.

At inference both encoders are fixed sequences of operations (no branch depends on the data), and a trace runs
them without Python between the operations: the same kernels in the same order, so the same numbers (tested), in
less time (docs/performance.md). `torch.jit.trace` is deprecated in favour of `torch.compile`, which spent
minutes compiling the CNN and ran it no faster, so the trace stays, with its deprecation warning silenced and the
eager module as the fallback.
"""
from __future__ import annotations

import os
import warnings
from typing import Callable

import torch
from torch import nn

# EACAP_TRACE=0 runs the encoders eagerly (to compare, or to debug inside them).
TRACE = os.environ.get("EACAP_TRACE", "1") != "0"


def trace(module: nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """`module` traced to TorchScript on `example`, for inference; `module` itself where tracing is off or fails.
    On a GPU, wrapped in an `eacap.graphs.GraphedCall`, which replays each input shape's pass as a CUDA graph.

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
    if example.device.type == "cuda":  # on a GPU, each input shape's pass is captured once and replayed
        from ..graphs import GraphedCall
        return GraphedCall(runner)
    return runner
