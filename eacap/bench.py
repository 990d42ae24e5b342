"""Speed benchmark: teacher vs student (and the paper's EfficientNet-B2 student as a reference), one process.

    python -m eacap.bench --teacher checkpoints/teacher --student checkpoints/student [--repeats 5] [--batch 32]

What is timed: the model stages from a 16 kHz waveform already in memory (front-end + encoder + decoder, with
the same `eacap.decoding.decode` for every model), under `torch.inference_mode`, after warm-up runs. File
decoding is left out: it is the same for every model. Latency is one clip at batch 1; throughput is `--batch`
clips in one call. Models take turns within each repeat, so a burst of load from elsewhere on the machine hits
all of them rather than one; in its turn a model captions twice, and the second caption, right after one of its
own, is the headline (a process serving that model), while the first, right after the other model, is reported
as `in turn` (the app's order; see `measure`). The figures are medians over the repeats. The fastest repeat is
reported as well: on a machine shared with other work, it is the closest measure of what the code itself costs.

On a GPU the front-ends, the traced encoders and every decoding step replay CUDA graphs once warm (`eacap.graphs`;
the warm-up runs capture them), and on a CPU the decoding steps run compiled (the warm-up starts the compile and
the bench waits for it), as they do for every caller; `EACAP_CUDA_GRAPHS=0` and `EACAP_COMPILE=0` time the same
code without.

Threads. `--threads` (default: the CPUs this process may use) is set explicitly and printed, because it moves
the ratio: the teacher's large matrix products use extra cores well, the student's many small operations do not.

Caption length. Decoding cost grows with every token, and an untrained (random) model babbles until
`max_length`, so by default every caption is forced to exactly `--tokens` tokens (</s> is blocked until the
last step, then forced): each model then does the same number of decoder steps with the same beam, which
compares the architectures rather than their verbosity. The default, 20, is the caption length at which the paper
(Xu et al., Interspeech 2024) counts the student's FLOPs. With trained models, `--natural` lets each model
stop on its own instead, which is what a user gets; the mean caption length is then reported per model, since a
model that writes shorter captions is faster partly for that reason.

The reference, "EffB2-Trm (paper)", is the paper's student architecture with random weights, built locally
(nothing is downloaded): `efficientnet_pytorch` EfficientNet-B2 (1 input channel, 1408-d output) over the same
64-bin log-mel, averaged over frequency, then a 2-layer d256 decoder over a 4981-word vocabulary, decoded by the
same code. Random weights time the same as trained ones for a fixed caption length.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import graphs
from .audio import SAMPLE_RATE, AudioError, load_audio
from .checkpoint import CheckpointError, load_model
from .cli import CHECKPOINTS, positive
from .compare import warm_up
from .decoding import DecodingOptions, FasterChoice, decode
from .devices import DeviceError, device_name, resolve_device, synchronize
from .features import STUDENT_FRONTEND, LogMel
from .live import HOP_SECONDS as LIVE_HOP
from .live import WINDOW_SECONDS as LIVE_WINDOW
from .live import check_timing
from .models.decoder import CaptionDecoder, DecoderConfig
from .requests import BEAM_SIZE, RequestError, whole_number
from .sounds import SoundWords

DEFAULT_TOKENS = 20
REFERENCE_NAME = "EffB2-Trm (paper)"
REFERENCE_VOCAB = 4981  # the paper's AudioCaps tokenizer size
REFERENCE_SPECIAL = {"pad": 0, "bos": 1, "eos": 2, "unk": 3}


class BenchError(Exception):
    """The benchmark cannot run as asked; the message says which option to change."""


@dataclass
class Pipeline:
    """The three timed stages of a captioning model, and what decoding needs to know."""
    name: str
    frontend: nn.Module
    encoder: nn.Module
    decoder: CaptionDecoder
    special: dict[str, int]
    parameters: int
    sounds: SoundWords | None = None  # the model's sound keywords, for `no_repeat_sounds` (None: the rule is off)
    dtype: torch.dtype = torch.float32  # the encoder's and decoder's (features are cast on the way in)
    tagger: nn.Module | None = None  # a teacher's AudioTagger: timed with the encoder, its tokens join the frames

    @classmethod
    def from_model(cls, name: str, model) -> "Pipeline":
        return cls(name, model.frontend, model.encoder, model.decoder, model.tokenizer.special, model.num_parameters(),
                   model.sound_words, model.decoder.embed.weight.dtype, model.tagger)

    def encode(self, waveforms: torch.Tensor, lengths: torch.Tensor, features: torch.Tensor,
               frame_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder stage: frames, joined by the tagger's tokens when there is one (what the decoder reads)."""
        frames, frame_lengths = self.encoder(features.to(self.dtype), frame_lengths)
        if self.tagger is None:
            return frames, frame_lengths
        return self.tagger(waveforms, lengths, frames, frame_lengths).joined

    def to(self, device: torch.device, half: bool = False) -> "Pipeline":
        if self.tagger is not None:
            self.tagger.to(device)
            if half:
                self.tagger.half_tokens()
        self.frontend.to(device)
        self.encoder.to(device, torch.float16 if half else None)
        self.decoder.to(device, torch.float16 if half else None)
        self.dtype = torch.float16 if half else self.dtype
        return self


class EffB2Encoder(nn.Module):
    """EfficientNet-B2 as the paper's student uses it: log-mel [B, 64, T] -> [B, T/32, 1408], mean over frequency."""

    def __init__(self):
        super().__init__()
        try:
            from efficientnet_pytorch import EfficientNet
        except ImportError as error:
            raise ImportError("the EffB2 reference needs efficientnet_pytorch: `pip install efficientnet_pytorch`, "
                              "or run the bench with --no-reference") from error
        self.net = EfficientNet.from_name("efficientnet-b2", in_channels=1, include_top=False)
        self.out_dim = self.net._conv_head.out_channels

    def forward(self, features: torch.Tensor, frame_lengths: torch.Tensor):
        x = self.net.extract_features(features[:, None]).mean(dim=2).transpose(1, 2)
        # efficientnet_pytorch pads for its 260-pixel images, not for this input, so the frame count is not a
        # simple formula of T; valid frames scale with the valid input instead (exact when nothing is padded).
        lengths = torch.ceil(frame_lengths * x.shape[1] / features.shape[-1]).long()
        return x, lengths


def reference_pipeline() -> Pipeline:
    torch.manual_seed(0)
    encoder = EffB2Encoder().eval()
    decoder = CaptionDecoder(DecoderConfig(REFERENCE_VOCAB, memory_dim=encoder.out_dim, width=256, layers=2,
                                           heads=4, ffn=1024)).eval()
    parameters = sum(p.numel() for m in (encoder, decoder) for p in m.parameters())
    return Pipeline(REFERENCE_NAME, LogMel(STUDENT_FRONTEND).eval(), encoder, decoder, REFERENCE_SPECIAL, parameters)


class FixedLengthDecoder:
    """A decoder whose captions are all exactly `length` tokens: </s> is blocked before the last step.

    `decode` forces </s> at step max_length - 1, so with `max_length=length` every hypothesis, greedy or beam,
    runs exactly `length` steps. Only the next-token scores change; the decoding code timed is the real one.
    """

    def __init__(self, decoder: CaptionDecoder, length: int, eos: int):
        self.decoder, self.length, self.eos = decoder, length, eos

    def __getattr__(self, name):
        return getattr(self.decoder, name)

    @property
    def graph_key(self) -> tuple:
        """What a captured decoding step depends on beyond the decoder's (`eacap.graphs`)."""
        return ("fixed length", self.length)

    def step(self, tokens, position, *args):
        logits = self.decoder.step(tokens, position, *args)
        if torch.is_tensor(position):  # a captured step: the same operations at every position
            logits[:, self.eos] = logits[:, self.eos].masked_fill(position < self.length - 1, float("-inf"))
        elif position < self.length - 1:
            logits[:, self.eos] = float("-inf")
        return logits


@dataclass
class Timing:
    """Per-stage wall seconds of each repeat, and caption lengths (tokens, </s> included) of the last run."""
    stages: dict[str, list[float]] = field(
        default_factory=lambda: {s: [] for s in ("frontend", "encoder", "decoder", "total")})
    tokens: list[int] = field(default_factory=list)

    def median(self, stage: str) -> float:
        return statistics.median(self.stages[stage])

    def best(self, stage: str) -> float:
        return min(self.stages[stage])


@torch.inference_mode()
def run_once(pipeline: Pipeline, waveforms: torch.Tensor, options: DecodingOptions, fixed: bool, timing: Timing | None):
    device = waveforms.device
    lengths = torch.full((waveforms.shape[0],), waveforms.shape[1], device=device)
    decoder = pipeline.decoder
    if fixed:
        decoder = FixedLengthDecoder(pipeline.decoder, options.max_length, pipeline.special["eos"])
    synchronize(device)  # a GPU queues its work: each clock reading waits for the stage before it
    start = time.perf_counter()
    features, frame_lengths = pipeline.frontend(waveforms, lengths)
    synchronize(device)
    t_frontend = time.perf_counter()
    frames, frame_lengths = pipeline.encode(waveforms, lengths, features, frame_lengths)
    synchronize(device)
    t_encoder = time.perf_counter()
    hyps = decode(decoder, frames, frame_lengths, pipeline.special, options, pipeline.sounds)
    synchronize(device)
    end = time.perf_counter()
    if timing is not None:
        for stage, seconds in (("frontend", t_frontend - start), ("encoder", t_encoder - t_frontend),
                               ("decoder", end - t_encoder), ("total", end - start)):
            timing.stages[stage].append(seconds)
        timing.tokens = [len(t) + 1 for t in hyps.tokens]  # + </s>


def step_products(decoder: CaptionDecoder) -> dict[str, str]:
    """How many of a decoder's step products took each way (`packed_linear.choose_products`), per number of rows
    timed: {"3": "serial 5 / serial 5", ...}, the eager ways before the slash, the compiled ones after (where this
    process compiles decoding steps)."""
    chosen: dict[int, list] = {}
    for linear in decoder.step_plan().linears():
        for rows, ways in linear.chosen.items():
            chosen.setdefault(rows, []).append(ways)

    def tally(ways: list) -> str:
        return ", ".join(f"{way} {ways.count(way)}" for way in sorted(set(ways), key=ways.index))

    return {str(rows): f"{tally([w[0] for w in ways])} / "
                       + (tally([w[1] for w in ways]) if all(w[1] for w in ways) else "not timed (no compiled steps)")
            for rows, ways in sorted(chosen.items())}


def count_operations(pipeline: Pipeline, waveform: torch.Tensor, options: DecodingOptions, fixed: bool) -> dict:
    """ATen operator calls per caption, per stage: every `aten::` event `torch.profiler` records for one caption of
    `waveform` (warm: call after `measure`), nested calls included. The CPU-side count of dispatched operations:
    the same on any machine for the same code and shapes, and what a small model's time follows where each
    operation costs more to launch than to compute."""
    from torch.profiler import ProfilerActivity, profile

    lengths = torch.full((1,), waveform.shape[1], device=waveform.device)
    decoder = (FixedLengthDecoder(pipeline.decoder, options.max_length, pipeline.special["eos"]) if fixed
               else pipeline.decoder)
    counts = {}
    with torch.inference_mode():
        stages = (("frontend", lambda: pipeline.frontend(waveform, lengths)),
                  ("encoder", lambda: pipeline.encode(waveform, lengths, features, feature_lengths)),
                  ("decoder", lambda: decode(decoder, frames, frame_lengths, pipeline.special, options,
                                             pipeline.sounds)))
        for stage, call in stages:
            with _native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU]) as profiler:
                out = call()
            counts[stage] = sum(event.name.startswith("aten::") for event in profiler.events())
            if stage == "frontend":
                features, feature_lengths = out
            elif stage == "encoder":
                frames, frame_lengths = out
    counts["total"] = sum(counts.values())
    return counts


@contextlib.contextmanager
def _native_stderr_silenced():
    """The profiler's native library logs a line to file descriptor 2 on each start and stop: not the user's
    business, so it is sent to /dev/null for that while (Python's own stderr is flushed first)."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def measure(pipelines: list[Pipeline], waveforms: torch.Tensor, options: DecodingOptions, fixed: bool,
            repeats: int, warmup: int) -> tuple[dict[str, Timing], dict[str, Timing]]:
    """Warm up every model, then `repeats` rounds in which each model captions twice in a row: (steady: each model
    timed right after a caption of its own, as a process serving one model runs; in turn: each timed right after the
    model before it, as the app runs a teacher and a student side by side).

    Which order is timed matters to a small model on a CPU: a caption of the teacher leaves the cores' caches full
    of its own weights and activations, so the student's next caption refetches its own (docs/performance.md), while
    the teacher, whose weights never fit the caches, is not slowed by what ran before it. Models still take turns in
    every round, so a machine that slows down or speeds up meanwhile changes every model alike."""
    for pipeline in pipelines:
        for _ in range(warmup):
            run_once(pipeline, waveforms, options, fixed, None)
    # On a CPU the warm-up's second run starts building in the background: the encoders' fused traces and, where
    # on, the compiled decoding steps; once compiled, the next runs time compiled against eager steps and keep the
    # faster (`eacap.graphs`). What is timed comes after.
    graphs.wait()
    if _compiles(waveforms.device) and warmup >= graphs.CAPTURE_AFTER:
        for pipeline in pipelines:
            for _ in range(2 * FasterChoice.TRIALS):
                run_once(pipeline, waveforms, options, fixed, None)
    steady, in_turn = ({p.name: Timing() for p in pipelines} for _ in range(2))
    for _ in range(repeats):
        for pipeline in pipelines:
            run_once(pipeline, waveforms, options, fixed, in_turn[pipeline.name])
            run_once(pipeline, waveforms, options, fixed, steady[pipeline.name])
    return steady, in_turn


def _compiles(device: torch.device) -> bool:
    with torch.inference_mode():
        return graphs.compiled(device)


def bench_clip(args) -> tuple[np.ndarray, str]:
    if args.audio:
        audio = load_audio(args.audio)
        return audio.waveform, f"{audio.name} ({audio.duration:.1f} s)"
    # Noise at a speech-like level: content does not change the cost of a fixed-length caption.
    rng = np.random.default_rng(0)
    return (0.1 * rng.standard_normal(round(args.seconds * SAMPLE_RATE))).astype(np.float32), \
        f"{args.seconds:g} s of generated noise"


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    graphs.long_running()   # the bench times warm code, as a server runs it
    try:
        device = resolve_device(args.device)
    except DeviceError as error:
        raise BenchError(f"{error} (--device)") from None
    if args.half and device.type != "cuda":
        raise BenchError("--half needs a GPU (--device cuda): on a CPU float16 is slower than float32")
    teacher = Pipeline.from_model("teacher", load_model(args.teacher, device=device, half=args.half))
    student = Pipeline.from_model("student", load_model(args.student, device=device, half=args.half))
    pipelines = [teacher, student] + ([] if args.no_reference else [reference_pipeline().to(device, args.half)])
    fixed = not args.natural
    options = DecodingOptions(beam_size=args.beam_size, max_length=args.tokens if fixed else args.max_length,
                              no_repeat_ngram_size=args.no_repeat_ngram, no_repeat_sounds=not args.repeat_sounds)
    for p in pipelines:
        try:
            options.validate(p.decoder.config.max_length)
        except ValueError as error:
            raise BenchError(f"{p.name}: {error}: change --tokens/--max-length/--beam-size") from None

    clip, clip_label = bench_clip(args)
    clip_seconds = len(clip) / SAMPLE_RATE
    single = torch.from_numpy(clip)[None].to(device)
    latency, latency_in_turn = measure(pipelines, single, options, fixed, args.repeats, args.warmup)
    operations = {p.name: count_operations(p, single, options, fixed) for p in pipelines}
    batched = single.repeat(args.batch, 1)
    # The same warm-up at batch 32: an encoder's TorchScript trace optimises itself on its second run at a new shape
    throughput, throughput_in_turn = measure(pipelines, batched, options, fixed, args.repeats, args.warmup)

    models = {}
    for p in pipelines:
        lat, thr = latency[p.name], throughput[p.name]
        clips_per_second = args.batch / thr.median("total")
        models[p.name] = {
            "parameters": p.parameters,
            "latency_seconds": lat.median("total"),
            "stage_seconds": {s: lat.median(s) for s in ("frontend", "encoder", "decoder")},
            "decoder_step_seconds": lat.median("decoder") / max(lat.tokens),
            "caption_tokens": float(np.mean(lat.tokens)),
            "batch_seconds": thr.median("total"),
            "batch_stage_seconds": {s: thr.median(s) for s in ("frontend", "encoder", "decoder")},
            "clips_per_second": clips_per_second,
            "x_real_time": clips_per_second * clip_seconds,
            # Fastest repeat: on a shared machine, the cost of the code itself with the least interference.
            "best_latency_seconds": lat.best("total"),
            "best_clips_per_second": args.batch / thr.best("total"),
            # Timed right after the model before it (`measure`)
            "in_turn": {"latency_seconds": latency_in_turn[p.name].median("total"),
                        "stage_seconds": {s: latency_in_turn[p.name].median(s)
                                          for s in ("frontend", "encoder", "decoder")},
                        "clips_per_second": args.batch / throughput_in_turn[p.name].median("total")},
            "aten_ops_per_caption": operations[p.name],
            "step_products": step_products(p.decoder),
        }
    t, s = models["teacher"], models["student"]
    result = {
        "clip": clip_label, "clip_seconds": clip_seconds, "beam_size": options.beam_size,
        "tokens": args.tokens if fixed else None, "natural_length": not fixed,
        "batch": args.batch, "repeats": args.repeats, "threads": torch.get_num_threads(),
        "device": str(device), "device_name": device_name(device), "half": args.half,
        "cuda_graphs": graphs.ENABLED and device.type == "cuda",
        "compiled_steps": _compiles(device),
        "torch": torch.__version__, "models": models,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux reports KiB
        "speedup": {"latency": t["latency_seconds"] / s["latency_seconds"],
                    "throughput": s["clips_per_second"] / t["clips_per_second"],
                    "aten_ops": t["aten_ops_per_caption"]["total"] / s["aten_ops_per_caption"]["total"]},
        "best_speedup": {"latency": t["best_latency_seconds"] / s["best_latency_seconds"],
                         "throughput": s["best_clips_per_second"] / t["best_clips_per_second"]},
        "in_turn_speedup": {"latency": t["in_turn"]["latency_seconds"] / s["in_turn"]["latency_seconds"],
                            "throughput": s["in_turn"]["clips_per_second"] / t["in_turn"]["clips_per_second"]},
    }
    if REFERENCE_NAME in models:
        r = models[REFERENCE_NAME]
        result["student_vs_reference"] = {"latency": r["latency_seconds"] / s["latency_seconds"],
                                          "throughput": s["clips_per_second"] / r["clips_per_second"]}
    return result


def report(result: dict) -> str:
    length = (f"{result['tokens']} tokens per caption (fixed)" if not result["natural_length"]
              else "captions of natural length")
    precision = ((", float16" if result.get("half") else "") + (", CUDA graphs" if result.get("cuda_graphs") else "")
                 + (", compiled decoding steps" if result.get("compiled_steps") else ""))
    lines = [f"eacap bench: {result['clip']}, beam {result['beam_size']}, {length}; torch {result['torch']}, "
             f"{result['threads']} threads, medians of {result['repeats']} repeats",
             f"device: {result.get('device', 'cpu')} ({result.get('device_name', 'unknown')}){precision}",
             "",
             f"{'model':<18} {'params':>8} | {'latency (batch 1)':>17} {'frontend':>9} {'encoder':>9} {'decoder':>9} "
             f"{'per step':>9} {'tokens':>6} | {'batch ' + str(result['batch']):>9} {'clips/s':>8} {'x real time':>11}"]
    for name, m in result["models"].items():
        st = m["stage_seconds"]
        lines.append(f"{name:<18} {m['parameters'] / 1e6:>7.2f}M | {_ms(m['latency_seconds']):>17} "
                     f"{_ms(st['frontend']):>9} {_ms(st['encoder']):>9} {_ms(st['decoder']):>9} "
                     f"{_ms(m['decoder_step_seconds']):>9} {m['caption_tokens']:>6.1f} | "
                     f"{m['batch_seconds']:>8.2f}s {m['clips_per_second']:>8.1f} {m['x_real_time']:>10.0f}x")
    lines.append("")
    lines.append("aten operator calls per caption (batch 1; frontend + encoder + decoder): " + ", ".join(
        f"{name} {m['aten_ops_per_caption']['total']:,} ({m['aten_ops_per_caption']['frontend']:,} + "
        f"{m['aten_ops_per_caption']['encoder']:,} + {m['aten_ops_per_caption']['decoder']:,})"
        for name, m in result["models"].items() if "aten_ops_per_caption" in m))
    products = {name: m["step_products"] for name, m in result["models"].items() if m.get("step_products")}
    if products:
        lines.append("decoding step products, the way timing chose (rows: eager / compiled): " + "; ".join(
            f"{name} " + ", ".join(f"{rows} rows: {ways}" for rows, ways in chosen.items())
            for name, chosen in products.items()))
    lines.append(f"peak RSS: {result['peak_rss_mib']:.0f} MiB (the whole process: all models and runs)")
    if "student_vs_reference" in result:
        ref = result["student_vs_reference"]
        lines.append(f"student vs {REFERENCE_NAME}: latency {ref['latency']:.2f}x, throughput {ref['throughput']:.2f}x")
    if "in_turn_speedup" in result:
        turn = result["in_turn_speedup"]
        lines.append("in turn (each model timed right after the other, as the app runs them): " + ", ".join(
            f"{name} {_ms(m['in_turn']['latency_seconds'])}" for name, m in result["models"].items())
            + f"; latency {turn['latency']:.1f}x, throughput {turn['throughput']:.1f}x")
    best = result["best_speedup"]
    lines.append(f"fastest repeats: latency {best['latency']:.1f}x, throughput {best['throughput']:.1f}x "
                 "(least disturbed by other load; the medians on the next line are the headline)")
    speedup = result["speedup"]
    lines.append(f"speed-up: latency {speedup['latency']:.1f}x, throughput {speedup['throughput']:.1f}x")
    return "\n".join(lines)


# -- long recordings ------------------------------------------------------------------------------------------

def write_long_recording(path: Path, minutes: float) -> None:
    """A generated recording of `minutes`, written a minute at a time (its own memory stays flat too): stretches
    of noise, tones, clicks and silence, so windows differ and segments form."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(SAMPLE_RATE * 60) / SAMPLE_RATE
    with sf.SoundFile(path, "w", SAMPLE_RATE, 1, format="FLAC") as out:
        left = round(minutes * 60 * SAMPLE_RATE)
        for minute in range(math.ceil(minutes)):
            kind = minute % 4
            if kind == 0:
                chunk = 0.1 * rng.standard_normal(len(t))
            elif kind == 1:
                chunk = 0.2 * np.sin(2 * np.pi * (220 + 110 * minute % 660) * t)
            elif kind == 2:
                chunk = np.where(rng.random(len(t)) < 0.002, 0.5, 0.0) * rng.standard_normal(len(t))
            else:
                chunk = np.zeros(len(t))
            chunk = chunk[: min(len(chunk), left)]
            left -= len(chunk)
            out.write(chunk.astype(np.float32))


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def long_worker(model_path: str, audio: str, beam_size: int, threads: int, device: str = "cpu") -> dict:
    """One model over the whole recording, in its own process (so its peak RSS is its own)."""
    from .timeline import caption_timeline

    torch.set_num_threads(threads)
    model = load_model(model_path, device=device)
    loaded = _rss_mib()
    samples: list[tuple[int, float]] = []
    timeline = caption_timeline(model, audio, DecodingOptions(beam_size=beam_size),
                                progress=lambda done, total: samples.append((done, _rss_mib())))
    total = samples[-1][0]
    early = next(rss for done, rss in samples if done >= total / 10)
    return {"seconds": timeline.seconds, "duration": timeline.duration, "windows": total,
            "segments": len(timeline.segments), "rss_after_load_mib": loaded, "rss_at_10pct_mib": early,
            "rss_at_end_mib": samples[-1][1],
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_long(args) -> dict:
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        audio = Path(folder) / "long.flac"
        write_long_recording(audio, args.long)
        models = {}
        for role, path in (("teacher", args.teacher), ("student", args.student)):
            done = subprocess.run([sys.executable, "-m", "eacap.bench", "--long-worker", path, str(audio),
                                   "--beam-size", str(args.beam_size), "--threads", str(args.threads),
                                   "--device", args.device],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise BenchError(f"{role} ({path}): the long-recording run failed: {done.stderr.strip()[-500:]}")
            m = json.loads(done.stdout)
            m["seconds_per_audio_hour"] = m["seconds"] * 3600 / m["duration"]
            m["x_real_time"] = m["duration"] / m["seconds"]
            models[role] = m
    t, s = models["teacher"], models["student"]
    return {"long_minutes": args.long, "beam_size": args.beam_size, "threads": args.threads, "torch": torch.__version__,
            "device": args.device,
            "models": models, "speedup": {"long": t["seconds"] / s["seconds"]}}


def report_long(result: dict) -> str:
    lines = [f"eacap bench --long: a {result['long_minutes']:g} min generated recording as a timeline (10 s windows, "
             f"5 s hop, beam {result['beam_size']}, natural captions); {result['threads']} threads, "
             "one process per model", "",
             f"{'model':<8} {'windows':>7} {'wall':>9} {'per audio hour':>15} {'x real time':>12} | "
             f"{'RSS loaded':>11} {'at 10%':>8} {'at end':>8} {'peak':>8}"]
    for name, m in result["models"].items():
        lines.append(f"{name:<8} {m['windows']:>7} {m['seconds']:>8.1f}s {m['seconds_per_audio_hour']:>14.0f}s "
                     f"{m['x_real_time']:>11.0f}x | {m['rss_after_load_mib']:>9.0f}MiB "
                     f"{m['rss_at_10pct_mib']:>5.0f}MiB "
                     f"{m['rss_at_end_mib']:>5.0f}MiB {m['peak_rss_mib']:>5.0f}MiB")
    lines += ["", f"speed-up: long {result['speedup']['long']:.1f}x"]
    return "\n".join(lines)


# -- live captioning -------------------------------------------------------------------------------------------

def run_stream(args) -> dict:
    """Each model's cost of one live window: the median wall time of captioning `--window` seconds of sound, as
    `LiveCaptioner` does every hop, alone on the machine. A model keeps up with any hop at least that long."""
    torch.set_num_threads(args.threads)
    try:
        check_timing(args.window, args.hop)
        device = resolve_device(args.device)
    except (DeviceError, ValueError) as error:
        raise BenchError(f"{error} (--device/--window/--hop)") from None
    models = {"teacher": load_model(args.teacher, device=device), "student": load_model(args.student, device=device)}
    rng = np.random.default_rng(0)
    windows = [(0.1 * rng.standard_normal(round(args.window * SAMPLE_RATE))).astype(np.float32)
               for _ in range(args.repeats)]
    options = DecodingOptions(beam_size=args.beam_size, max_length=args.max_length)
    result = {"window": args.window, "hop": args.hop, "beam_size": args.beam_size, "threads": torch.get_num_threads(),
              "device": str(device), "device_name": device_name(device), "models": {}}
    for role, model in models.items():
        warm_up(model, windows[0], options)
        seconds = []
        for waveform in windows:
            synchronize(device)
            started = time.perf_counter()
            model.caption_batch([waveform], options)
            synchronize(device)
            seconds.append(time.perf_counter() - started)
        per_window = statistics.median(seconds)
        result["models"][role] = {"seconds_per_window": per_window, "real_time_factor": per_window / args.hop,
                                  "shortest_hop": per_window, "repeats": len(seconds)}
    t, s = result["models"]["teacher"], result["models"]["student"]
    result["speedup"] = {"stream": t["seconds_per_window"] / s["seconds_per_window"]}
    return result


def report_stream(result: dict) -> str:
    lines = [f"eacap bench --stream: a {result['window']:g} s window every {result['hop']:g} s, beam "
             f"{result['beam_size']}, natural captions; {result['threads']} threads",
             f"device: {result['device']} ({result['device_name']})", "",
             f"{'model':<8} {'per window':>11} {'real-time factor':>17} {'shortest hop it keeps up with':>30}"]
    for role, m in result["models"].items():
        lines.append(f"{role:<8} {_ms(m['seconds_per_window']):>11} {m['real_time_factor']:>17.3f} "
                     f"{m['shortest_hop']:>29.2f}s")
    lines += ["", f"speed-up: stream {result['speedup']['stream']:.1f}x"]
    return "\n".join(lines)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eacap.bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default=str(CHECKPOINTS / "teacher"), help="teacher checkpoint folder or Hub id")
    parser.add_argument("--student", default=str(CHECKPOINTS / "student"), help="student checkpoint folder or Hub id")
    parser.add_argument("--repeats", type=positive, default=5, help="timed runs per model and setting (default 5)")
    parser.add_argument("--warmup", type=positive, default=2, help="untimed runs before timing (default 2)")
    parser.add_argument("--batch", type=positive, default=32, help="clips per call for throughput (default 32)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the generated clip (default 10)")
    parser.add_argument("--audio", help="time this file instead of generated noise (the first 30 s)")
    parser.add_argument("--beam-size", type=positive, default=3,
                        help=f"beam width for every model, {BEAM_SIZE[0]}-{BEAM_SIZE[1]} (default 3)")
    parser.add_argument("--tokens", type=positive, default=DEFAULT_TOKENS,
                        help=f"forced caption length, </s> included (default {DEFAULT_TOKENS})")
    parser.add_argument("--no-repeat-ngram", type=int, default=DecodingOptions().no_repeat_ngram_size,
                        help="block repeated n-grams of this size, 0 off (default: eacap's, "
                             f"{DecodingOptions().no_repeat_ngram_size})")
    parser.add_argument("--repeat-sounds", action="store_true",
                        help="let captions name a sound twice (turns off no_repeat_sounds, on by default)")
    parser.add_argument("--natural", action="store_true", help="let models stop on their own (trained models only)")
    parser.add_argument("--max-length", type=positive, default=30, help="longest caption with --natural (default 30)")
    parser.add_argument("--threads", type=positive, default=len(os.sched_getaffinity(0)),
                        help="torch intra-op threads (default: the CPUs this process may use)")
    parser.add_argument("--device", default="auto", type=str.lower,
                        help="where the models run: auto (a GPU when there is one), cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--half", action="store_true", help="float16 encoders and decoders (GPU only)")
    parser.add_argument("--no-reference", action="store_true", help=f"skip the {REFERENCE_NAME} reference")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--save", type=Path, help="also write the JSON result to this file (read by `train report`)")
    parser.add_argument("--long", type=float, metavar="MINUTES",
                        help="instead: caption a generated recording of MINUTES as a timeline with each model and "
                             "report time per audio hour and peak memory (e.g. --long 60)")
    parser.add_argument("--long-worker", nargs=2, metavar=("MODEL", "AUDIO"), help=argparse.SUPPRESS)
    parser.add_argument("--stream", action="store_true",
                        help="instead: live captioning (eacap.live): each model's compute time per window, its "
                             "real-time factor at --hop and the shortest hop it keeps up with")
    parser.add_argument("--window", type=float, default=LIVE_WINDOW,
                        help=f"with --stream: seconds each caption hears (default {LIVE_WINDOW:g})")
    parser.add_argument("--hop", type=float, default=LIVE_HOP,
                        help=f"with --stream: seconds between captions (default {LIVE_HOP:g})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:  # the app's and the CLI's limit: a benchmark times what users can ask for
        whole_number("beam_size", args.beam_size, *BEAM_SIZE)
    except RequestError as error:
        print(f"error: {error}: change --beam-size", file=sys.stderr)
        return 2
    if args.long_worker:
        print(json.dumps(long_worker(*args.long_worker, args.beam_size, args.threads, args.device)))
        return 0
    if args.long is not None:
        if not 0.1 <= args.long <= 60:
            print(f"error: --long must be within 0.1-60 minutes (the 1-hour limit), got {args.long:g}", file=sys.stderr)
            return 2
        return finish(args, run_long, report_long)
    if args.stream:
        return finish(args, run_stream, report_stream)
    if not 0.1 <= args.seconds <= 30:
        print(f"error: --seconds must be within 0.1-30 (the models' window), got {args.seconds:g}", file=sys.stderr)
        return 2
    return finish(args, run, report)


def finish(args, measure, describe) -> int:
    """Run one benchmark mode, save its JSON if asked, print it; an error names the option to change (exit 2)."""
    try:
        result = measure(args)
    except (CheckpointError, AudioError, ImportError, BenchError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result) if args.json else describe(result))
    return 0

if __name__ == "__main__":
    sys.exit(main())
