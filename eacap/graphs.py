"""CUDA graphs: on a GPU, each decoding step and each encoder pass replays as one captured graph.

Both models are small enough that a GPU spends most of a caption waiting for the host to launch the next kernel:
a decoding step is over a hundred kernels of a few microseconds each. A CUDA graph records the kernels of one call
once and replays them all with a single launch, so the GPU runs them back to back. What this module captures:
- `decode`: one step of `eacap.decoding`'s search in its static form (every shape fixed, the position a tensor
  on the device, nothing read back to the host), captured once per decoder, batch shape and decoding options and
  replayed once per token, after an eager start that loads the batch; every few steps the host reads whether all
  clips have finished.
- `GraphedCall`: a function of tensors (a front-end, an encoder's traced network), captured once per input
  shape.

A graph reads and writes the same memory at every replay, so each capture keeps its own input and output
buffers: a call copies its input in, replays, and copies the output out (a caller may keep the result while the
next call replays). Captures are kept per shape, the least recently used dropped beyond `MAX_GRAPHS`.

`EACAP_CUDA_GRAPHS=0` runs everything eagerly (to compare, or to debug inside a step). A capture that fails warns
once and that call signature runs eagerly from then on. Outside `torch.inference_mode` (training) nothing is
captured.
"""
from __future__ import annotations

import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .decoding import DecodingOptions, Hypotheses, Search, _check_every
from .sounds import SoundWords

ENABLED = os.environ.get("EACAP_CUDA_GRAPHS", "1") != "0"
MAX_GRAPHS = 16   # captured graphs kept per decoder, front-end and encoder network
# A call signature is captured the second time it is seen: a capture costs a few eager runs, which a shape seen
# once (one upload of an odd length) would pay for nothing, while the bench, batch jobs, timelines and live
# captions repeat theirs.
CAPTURE_AFTER = 2
WARMUP = 3        # eager runs before a capture: lazy set-up (plans, library handles, a trace's optimisation) is done


def enabled(device: torch.device) -> bool:
    """Whether work on `device` runs from captured graphs now."""
    return ENABLED and device.type == "cuda" and torch.is_inference_mode_enabled()


def capture(*bodies: Callable[[], object], device: torch.device,
            before: Callable[[], object] | None = None) -> tuple[list[torch.cuda.CUDAGraph], list]:
    """Each of `bodies` captured as a graph of its own, in order; the graphs and the outputs of the captured calls.

    The whole sequence, after `before` (not captured), first runs `WARMUP` times on a side stream: lazy set-up
    happens there, not in a graph."""
    with torch.cuda.device(device):
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(WARMUP):
                if before is not None:
                    before()
                for body in bodies:
                    body()
        torch.cuda.current_stream().wait_stream(stream)
        graphs, outputs = [], []
        for body in bodies:
            graph = torch.cuda.CUDAGraph()
            # thread_local: the app runs models in several threads at once, and another thread's GPU calls during
            # this capture (on its own stream, never captured) must not be refused.
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                outputs.append(body())
            graphs.append(graph)
    return graphs, outputs


class GraphCache:
    """Captured graphs by key, least recently used dropped beyond `MAX_GRAPHS`; keys whose capture failed are
    remembered and run eagerly."""

    def __init__(self):
        self.entries: OrderedDict = OrderedDict()
        self.seen: OrderedDict = OrderedDict()   # calls per key not captured yet
        self.failed: set = set()
        self.lock = threading.Lock()

    def get(self, key, build: Callable[[], object], what: str):
        """The entry for `key`, built (captured) on its `CAPTURE_AFTER`-th use; None before that, or if its
        capture failed: the caller runs eagerly."""
        if key in self.failed:
            return None
        entry = self.entries.get(key)
        if entry is None:
            self.seen[key] = self.seen.pop(key, 0) + 1
            while len(self.seen) > 16 * MAX_GRAPHS:
                self.seen.popitem(last=False)
            if self.seen[key] < CAPTURE_AFTER:
                return None
            del self.seen[key]
            try:
                entry = build()
            except Exception as error:  # the eager path still gives the same result
                self.failed.add(key)
                warnings.warn(f"eacap: capturing {what} as a CUDA graph failed ({error}); it runs eagerly")
                return None
            self.entries[key] = entry
            while len(self.entries) > MAX_GRAPHS:
                self.entries.popitem(last=False)
        self.entries.move_to_end(key)
        return entry


class GraphedCall:
    """`fn(*tensors)`, returning a tensor or a tuple of tensors, replayed from a CUDA graph captured per input
    signature (shapes, strides, dtypes); `fn` itself wherever graphs are off (`enabled`). `fn` must be a fixed
    sequence of operations with no read back to the host (a traced network, a front-end)."""

    def __init__(self, fn: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]], name: str = ""):
        self.fn, self.name = fn, name or type(fn).__name__
        self.graphs = GraphCache()

    def __call__(self, *args: torch.Tensor):
        if not enabled(args[0].device):
            return self.fn(*args)
        key = tuple((tuple(a.shape), a.stride(), a.dtype, a.device) for a in args)

        def build():
            inputs = [a.clone() for a in args]
            graphs, outputs = capture(lambda: self.fn(*inputs), device=args[0].device)
            return inputs, graphs[0], outputs[0]

        with self.graphs.lock:
            entry = self.graphs.get(key, build, self.name)
            if entry is None:
                return self.fn(*args)
            inputs, graph, out = entry
            for static, a in zip(inputs, args):
                static.copy_(a)
            graph.replay()
            # The next replay overwrites the graph's output: the caller gets its own copy.
            return tuple(o.clone() for o in out) if isinstance(out, tuple) else out.clone()


@dataclass
class CapturedSearch:
    """A search in its static form, its position counter, and its step captured each way round
    (`eacap.decoding.Search`)."""
    search: Search
    position: torch.Tensor
    steps: tuple
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, decoder, frames: torch.Tensor, lengths: torch.Tensor) -> None:
        """Load a batch: its cross-attention, fresh buffers, position 0. Run eagerly, a few dozen operations per
        call: captured as a graph of its own it gave wrong captions on an H200, for a reason not found yet (the
        same code run eagerly is right, on the GPU and with the CPU's stand-in for capture), so it stays out."""
        self.search.reset(decoder.cross_attention(frames, lengths, self.search.group, static=True))
        self.position.zero_()


def decode(search_kind: type[Search], decoder, frames: torch.Tensor, lengths: torch.Tensor, special: dict[str, int],
           options: DecodingOptions, sounds: SoundWords | None) -> Hypotheses | None:
    """`eacap.decoding.decode` with each step replayed from a captured graph (on a GPU; called by it): per call,
    the start, one replay per token, and a read every few steps. None if the step could not be captured: the
    caller runs it eagerly."""
    key = (search_kind, frames.shape, frames.dtype, lengths.dtype, options, id(sounds),
           getattr(decoder, "graph_key", None))

    def build() -> CapturedSearch:
        search = search_kind(decoder, frames, lengths, special, options, sounds, static=True)
        entry = CapturedSearch(search, torch.zeros(1, dtype=torch.long, device=frames.device), ())

        def step():
            search.step(entry.position)
            entry.position.add_(1)

        # A beam step swaps two pairs of buffers (history and key/value cache), so it is captured twice: the first
        # graph reads what the start wrote, the second what the first wrote, and they alternate. The warm-up runs
        # whole rounds (start, step, step), so the capture begins from the buffers the start writes.
        graphs, _ = capture(step, step, device=frames.device, before=lambda: entry.start(decoder, frames, lengths))
        entry.steps = tuple(graphs)
        return entry

    with decoder.step_plan().graphs.lock:
        entry = decoder.step_plan().graphs.get(key, build, "a decoding step")
    if entry is None:
        return None
    every = _check_every(frames.device)
    with entry.lock:
        entry.start(decoder, frames, lengths)
        for position in range(options.max_length):
            entry.steps[position % 2].replay()
            if (position + 1) % every == 0 and entry.search.finished():
                break
        return entry.search.result()
