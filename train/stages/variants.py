"""`python -m train speed-variants`: how fast would other student shapes be, before spending hours training one?

Times the shipped teacher, the shipped student, and candidate student architectures (random weights, rounded to
float16 like a shipped checkpoint so the same inference paths run) with `eacap.bench`'s timing code: a 10 s clip,
beam 3, captions forced to 20 tokens, latency at batch 1 and throughput at batch 32, in one process, models taking
turns. Random weights time the same as trained ones at a fixed caption length, so the ratios printed are what a
trained student of that shape would reach against this teacher — its quality is a separate question that only
training answers.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

import torch

from eacap.bench import Pipeline, measure
from eacap.checkpoint import CheckpointError, load_model
from eacap.cli import CHECKPOINTS, positive
from eacap.decoding import DecodingOptions
from eacap.features import STUDENT_FRONTEND
from eacap.models import CaptionModel, ModelConfig
from eacap.models.presets import fast_shape, lite_shape, named_shape, slim_shape, student_config

HOP_320 = dataclasses.replace(STUDENT_FRONTEND, hop_length=320)  # 20 ms frames: half the CNN input


def variants(base: ModelConfig) -> dict[str, ModelConfig]:
    """Candidate student shapes, each a change of the base-shape student's config (`base`)."""
    def change(frontend=None, encoder=None, **decoder) -> ModelConfig:
        encoder = encoder or base.encoder
        return dataclasses.replace(base, frontend=frontend or base.frontend, encoder=encoder,
                                   decoder=dataclasses.replace(base.decoder, memory_dim=encoder.out_dim, **decoder))
    return {
        "base shape": base,
        "1-layer decoder": change(layers=1),
        "20 ms hop": change(frontend=HOP_320),
        "20 ms hop + 1-layer decoder": change(frontend=HOP_320, layers=1),
        "shape \"fast\": 20 ms hop + 1-layer FFN-512 decoder + narrow CNN": fast_shape(base),
        "shape \"slim\": 40 ms frames + 1-layer FFN-512 decoder": slim_shape(base),
        "shape \"lite\": 40 ms frames + 2-layer d128 FFN-512 decoder": lite_shape(base),
    }


def base_of(config: ModelConfig) -> ModelConfig:
    """The base-shape student of the same size as `config` (itself if it is base, or no named shape): the shapes
    below are changes of the base shape, whichever shape the shipped student has."""
    named = named_shape(config)
    if named is None:
        return config
    return student_config(config.decoder.vocab_size, named[0], config.kd.teacher_dim if config.kd else 384)


def random_fp16_model(config: ModelConfig, tokenizer) -> CaptionModel:
    model = CaptionModel(config, tokenizer).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    return model


def run(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(args.threads)
    teacher, student = load_model(args.teacher), load_model(args.student)
    pipelines = [Pipeline.from_model("teacher", teacher), Pipeline.from_model("student (shipped)", student)]
    pipelines += [Pipeline.from_model(name, random_fp16_model(config, student.tokenizer))
                  for name, config in variants(base_of(student.config)).items()]
    options = DecodingOptions(beam_size=3, max_length=20)
    clip = torch.randn(1, 160_000, generator=torch.Generator().manual_seed(0)) * 0.1
    # two warm-up runs: an encoder's TorchScript trace optimises itself on its second run at a new shape
    latency, _ = measure(pipelines, clip, options, True, args.repeats, 2)   # each model right after itself
    throughput, _ = measure(pipelines, clip.repeat(args.batch, 1), options, True, args.repeats, 2)
    t_lat, t_batch = latency["teacher"].median("total"), throughput["teacher"].median("total")
    rows = []
    for p in pipelines:
        lat, batch = latency[p.name], throughput[p.name]
        rows.append({"model": p.name, "parameters": p.parameters, "latency_ms": lat.median("total") * 1000,
                     "latency_stages_ms": [lat.median(s) * 1000 for s in ("frontend", "encoder", "decoder")],
                     "batch_ms": batch.median("total") * 1000,
                     "batch_stages_ms": [batch.median(s) * 1000 for s in ("frontend", "encoder", "decoder")],
                     "latency_x": t_lat / lat.median("total"), "throughput_x": t_batch / batch.median("total")})
    return rows


def table(rows: list[dict], batch: int) -> str:
    lines = [f"| model | params | latency, batch 1 (front-end / encoder / decoder) | batch {batch} (front-end / "
             "encoder / decoder) | latency speed-up | throughput speed-up |", "|---|---|---|---|---|---|"]
    for r in rows:
        stages = " / ".join(f"{v:.0f}" for v in r["latency_stages_ms"])
        batch_stages = " / ".join(f"{v:.0f}" for v in r["batch_stages_ms"])
        lines.append(f"| {r['model']} | {r['parameters'] / 1e6:.2f} M | {r['latency_ms']:.0f} ms ({stages}) | "
                     f"{r['batch_ms']:.0f} ms ({batch_stages}) | {r['latency_x']:.1f}x | {r['throughput_x']:.1f}x |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", default=str(CHECKPOINTS / "teacher"), help="teacher checkpoint")
    parser.add_argument("--student", default=str(CHECKPOINTS / "student"), help="the student the variants change")
    parser.add_argument("--repeats", type=positive, default=3, help="timed runs per model (default 3)")
    parser.add_argument("--batch", type=positive, default=32, help="clips per call for throughput (default 32)")
    parser.add_argument("--threads", type=positive, default=2, help="torch threads (default 2, as the bench here)")


def main(args: argparse.Namespace) -> int:
    try:
        rows = run(args)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(table(rows, args.batch))
    return 0
