"""Captured decoding: CUDA graphs on a GPU, compiled steps on a CPU; and CUDA graphs of the encoders.

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

On a CPU the same static step is compiled instead (`torch.compile`, Inductor's C++ code): a whole caption's steps
become one call: a loop of fused loops and library products that tests itself whether every clip has finished,
with none of Python's or the dispatcher's cost between the operations, which is most of what a small model's
step costs, and no return to Python between steps. A compile takes tens of seconds (seconds once
Inductor's cache on disk has it), so it runs in a background thread on a call signature's second use and the
decodes before it is ready run eagerly; `wait()` blocks until the compiles under way are done (the bench calls it
before timing). Once compiled, a call signature's first calls time compiled against eager steps and keep the
faster. Compiling is on in long-running processes (`long_running`) and needs a C++ compiler; elsewhere decoding
stays eager.

`EACAP_CUDA_GRAPHS=0` runs everything on a GPU eagerly and `EACAP_COMPILE=0` everything on a CPU (to compare, or
to debug inside a step); `EACAP_COMPILE=1` compiles in every process. A capture or compile that fails warns once
and that call signature runs eagerly from then on. Outside `torch.inference_mode` (training) nothing is captured or
compiled.
"""
from __future__ import annotations

import functools
import itertools
import logging
import os
import shutil
import statistics
import threading
import time
import types
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .decoding import Background, DecodingOptions, FasterChoice, Hypotheses, Search, _check_every, eager_decode
from .sounds import SoundWords

log = logging.getLogger(__name__)

ENABLED = os.environ.get("EACAP_CUDA_GRAPHS", "1") != "0"
# Compiled steps on a CPU: EACAP_COMPILE=1 everywhere, 0 nowhere; by default only in processes that run long enough
# to earn back a compile and say so (`long_running`: the app, live captions, the bench). A compile in a short
# process (one CLI run over a few files or one recording) would cost it more than it saves, and a process does not
# end while a compile is under way.
_COMPILE_SETTING = os.environ.get("EACAP_COMPILE", "auto")
COMPILE = _COMPILE_SETTING == "1"
MAX_GRAPHS = 16   # captured graphs kept per decoder, front-end and encoder network
# A call signature is captured the second time it is seen: a capture costs a few eager runs, which a shape seen
# once (one upload of an odd length) would pay for nothing, while the bench, batch jobs, timelines and live
# captions repeat theirs.
CAPTURE_AFTER = 2
WARMUP = 3        # eager runs before a capture: lazy set-up (plans, library handles, a trace's optimisation) is done


def enabled(device: torch.device) -> bool:
    """Whether work on `device` runs from captured graphs now."""
    return ENABLED and device.type == "cuda" and torch.is_inference_mode_enabled()


def long_running() -> None:
    """Turn compiled decoding steps and fused encoder traces (`eacap.models.tracing`) on for this process, unless
    EACAP_COMPILE=0 / EACAP_FUSE=0: called by the app, live captions and the bench."""
    global COMPILE
    if _COMPILE_SETTING != "0":
        COMPILE = True
    from .models import tracing
    tracing.long_running()


def compiled(device: torch.device) -> bool:
    """Whether decoding steps on `device` run compiled now (a CPU with a C++ compiler, in inference mode)."""
    return COMPILE and device.type == "cpu" and torch.is_inference_mode_enabled() and _compiler_found()


@functools.cache
def _compiler_found() -> bool:
    return any(shutil.which(name) for name in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if name)


_pending: set[threading.Thread] = set()   # background compiles under way
_pending_lock = threading.Lock()


def wait(timeout: float | None = None) -> None:
    """Block until the compiles under way in the background are done (or `timeout` seconds have passed)."""
    with _pending_lock:
        threads = list(_pending)
    for thread in threads:
        thread.join(timeout)


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

    def __init__(self, fallback: str = "it runs eagerly"):
        self.fallback = fallback                 # what the warning of a failed build says happens instead
        self.entries: OrderedDict = OrderedDict()
        self.seen: OrderedDict = OrderedDict()   # calls per key not captured yet
        self.failed: set = set()
        self.building: set = set()               # keys being built in the background
        self.lock = threading.Lock()

    def get(self, key, build: Callable[[], object], what: str, background: bool = False):
        """The entry for `key`, built (captured) on its `CAPTURE_AFTER`-th use; None before that, or if its
        capture failed: the caller runs eagerly. `background`: built in a thread of its own (in inference mode),
        None until it is ready. Call with `lock` held."""
        if key in self.failed or key in self.building:
            return None
        entry = self.entries.get(key)
        if entry is None:
            self.seen[key] = self.seen.pop(key, 0) + 1
            while len(self.seen) > 16 * MAX_GRAPHS:
                self.seen.popitem(last=False)
            if self.seen[key] < CAPTURE_AFTER:
                return None
            del self.seen[key]
            if background:
                self.building.add(key)
                # Not a daemon: a process that ends while a compile runs waits for it (ending the interpreter
                # under a running compile aborts the process).
                thread = threading.Thread(target=self._build_in_background, args=(key, build, what), daemon=False,
                                          name="eacap build")
                with _pending_lock:
                    _pending.add(thread)
                thread.start()
                return None
            entry = self._build(key, build, what)
            if entry is None:
                return None
        self.entries.move_to_end(key)
        return entry

    def _build(self, key, build: Callable[[], object], what: str):
        try:
            entry = build()
        except Exception as error:  # the eager path still gives the same result
            self.failed.add(key)
            warnings.warn(f"eacap: {what} failed ({error}); {self.fallback}")
            return None
        self.entries[key] = entry
        while len(self.entries) > MAX_GRAPHS:
            self.entries.popitem(last=False)
        return entry

    def _build_in_background(self, key, build: Callable[[], object], what: str) -> None:
        Background.add(1)
        try:
            started = time.perf_counter()
            with torch.inference_mode():
                try:
                    entry = build()
                except Exception as error:
                    entry, failure = None, error
                else:
                    log.info("%s: done in %.1f s", what, time.perf_counter() - started)
            with self.lock:
                if entry is None:
                    self.failed.add(key)
                    warnings.warn(f"eacap: {what} failed ({failure}); {self.fallback}")
                else:
                    self.entries[key] = entry
                    while len(self.entries) > MAX_GRAPHS:
                        self.entries.popitem(last=False)
                self.building.discard(key)
        finally:
            Background.add(-1)
            with _pending_lock:
                _pending.discard(threading.current_thread())


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
            entry = self.graphs.get(key, build, f"capturing {self.name} as a CUDA graph")
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
    """A search in its static form, its position counter, and the calls that advance it: on a GPU its step
    captured each way round (two graph replays that alternate, one step each); on a CPU one compiled call that
    runs the whole caption (`eacap.decoding.Search`)."""
    search: Search
    position: torch.Tensor
    steps: tuple[Callable[[], object], ...]
    compiled: Callable[[torch.Tensor], object] | None = None
    # On a CPU: "compiled" or "eager", whichever is faster for this call signature here. Compiled steps win at a
    # few rows and can lose at many (docs/performance.md), so the first calls time both.
    choice: FasterChoice | None = None
    share: bool = False      # compiled: the batch's cross-attention is taken as it is, of any number of frames
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, decoder, frames: torch.Tensor, lengths: torch.Tensor) -> None:
        """Load a batch: its cross-attention, fresh buffers, position 0. Run eagerly, a few dozen operations per
        call: captured as a graph of its own it gave wrong captions on an H200, for a reason not found yet (the
        same code run eagerly is right, on the GPU and with the CPU's stand-in for capture), so it stays out."""
        self.search.reset(decoder.cross_attention(frames, lengths, self.search.group, static=True), self.share)
        self.position.zero_()


_compiled_functions = itertools.count()


def _run_to_end(search: Search, steps: int) -> Callable[[torch.Tensor], tuple[torch.Tensor]]:
    """A function that runs static steps of `search` from `position` until every clip has finished or `steps`
    steps are done, to compile: one loop in the compiled code (`while_loop`), two steps per turn (the beam's
    buffers take turns, `BeamSearch.step`), with the stopping test read inside it, so a caption costs one call and
    no read back to Python. Each function is a new code object: `torch.compile` keeps its compiled code and guards
    per code object, and a shared one would pile every batch shape's and every model's compile onto one list that
    is searched on each call and capped at a few entries."""
    from torch._higher_order_ops.while_loop import while_loop

    def run(position: torch.Tensor) -> tuple[torch.Tensor]:
        def unfinished(position):
            return (position[0] < steps) & search.unfinished()

        def two_steps(position):
            search.step(position, 0)
            search.step(position + 1, 1)
            return (position + 2,)

        return while_loop(unfinished, two_steps, (position,))

    code = run.__code__.replace(co_name=f"eacap_decode_{next(_compiled_functions)}")
    return types.FunctionType(code, run.__globals__, code.co_name, None, run.__closure__)




def _no_guards(guards) -> list[bool]:
    """Keep none of a compile's guards (see `decode`)."""
    return [False] * len(guards)


def decode(search_kind: type[Search], decoder, frames: torch.Tensor, lengths: torch.Tensor, special: dict[str, int],
           options: DecodingOptions, sounds: SoundWords | None) -> Hypotheses | None:
    """`eacap.decoding.decode` with its steps replayed from captured graphs (on a GPU) or compiled (on a CPU);
    called by it where `enabled` or `compiled` says so. Per call: the start, then one replay per token on a GPU
    with a read every few steps, or on a CPU one compiled call that steps until every clip has finished. None if
    the steps are not ready (seen too few times, compiling, or failed): the caller runs eagerly."""
    graphed = enabled(frames.device)
    clips, count = frames.shape[:2]
    # A graph replays fixed shapes; compiled steps take any number of frames (from 2: PyTorch's compiler treats
    # sizes 0 and 1 as constants), each way of attending to them compiled once.
    shape = frames.shape if graphed else (clips, frames.shape[2], decoder.cross_kind(clips, count),
                                          count if count < 2 else "frames")
    key = (search_kind, shape, frames.dtype, frames.device.type, lengths.dtype, options, id(sounds),
           getattr(decoder, "graph_key", None))

    def capture_steps() -> CapturedSearch:
        search = search_kind(decoder, frames, lengths, special, options, sounds, static=True)
        entry = CapturedSearch(search, torch.zeros(1, dtype=torch.long, device=frames.device), ())

        def stepper(parity: int):
            def step():
                search.step(entry.position, parity)
                entry.position.add_(1)
            return step

        # A beam step reads one of two pairs of buffers (history and key/value cache) and writes the other, so it
        # is captured twice, once each way round: the first graph reads what the start wrote, the second what the
        # first wrote, and they alternate. The warm-up runs whole rounds (start, step, step).
        graphs, _ = capture(stepper(0), stepper(1), device=frames.device,
                            before=lambda: entry.start(decoder, frames, lengths))
        entry.steps = tuple(graph.replay for graph in graphs)
        return entry

    def compile_steps() -> CapturedSearch:
        # Two steps per turn of the compiled loop: buffers for an even number of steps (a step past the last
        # changes nothing a result reads, `Search`). `validate` keeps max_length under the decoder's maximum.
        length = options.max_length + options.max_length % 2
        search = search_kind(decoder, frames, lengths, special, options, sounds, static=True, length=length)
        entry = CapturedSearch(search, torch.zeros(1, dtype=torch.long, device=frames.device), (),
                               choice=FasterChoice(("compiled", "eager")), share=True)
        # No guards: a compiled function checks on every call that its inputs still match what it was compiled
        # for, at a cost of a sizeable part of a call here. This one is only ever called below, on the buffers it
        # was compiled with and cross-attention of the same kind, whose number of frames is compiled as a variable.
        # No pattern matching: its only rewrites here turn each product and the bias added after it
        # (`packed_linear.compiled_affine`) back into one `addmm`, whose library call copies the bias into the output
        # through three more ATen calls, a third of a compiled call's ATen calls and about a tenth of its time.
        run = torch.compile(_run_to_end(search, options.max_length), fullgraph=True,
                            options={"cpp_wrapper": True, "guard_filter_fn": _no_guards, "pattern_matcher": False})
        entry.start(decoder, frames, lengths)
        if count >= 2:
            for cross in search.state.cross:
                for tensor, dim in cross.frame_dims():
                    torch._dynamo.mark_dynamic(tensor, dim)
        run(entry.position)   # the compile
        entry.compiled = run
        return entry

    cache = decoder.step_plan().graphs
    with cache.lock:
        entry = (cache.get(key, capture_steps, "capturing a decoding step as a CUDA graph") if graphed
                 else cache.get(key, compile_steps, "compiling a decoding step", background=True))
    if entry is None:
        return None
    way = "compiled" if entry.choice is None else entry.choice.next()
    started = time.perf_counter()
    if way == "eager":
        result = eager_decode(search_kind, decoder, frames, lengths, special, options, sounds)
    else:
        with entry.lock:
            entry.start(decoder, frames, lengths)
            if entry.compiled is not None:
                entry.compiled(entry.position)
            else:
                every = _check_every(frames.device)
                for position in range(options.max_length):
                    entry.steps[position % 2]()
                    if (position + 1) % every == 0 and entry.search.finished():
                        break
            result = entry.search.result()
    if entry.choice is not None and entry.choice.chosen is None:
        entry.choice.record(way, time.perf_counter() - started)
        if entry.choice.chosen is not None:
            log.info("decoding steps at batch %d, beam %d: %s kept (median of %d calls: %s)", clips,
                     options.beam_size, entry.choice.chosen, FasterChoice.TRIALS,
                     ", ".join(f"{c} {statistics.median(t) * 1e3:.1f} ms" for c, t in entry.choice.samples.items()))
    return result
