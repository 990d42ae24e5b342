"""`python -m train ablation --steps N [--seeds 0 1] [--shape S] [--jobs 2]`: the paper's comparisons in miniature.

Trains every student row of the results table (no KD, seq-KD, token-KD, seq-KD + MSE / contrastive encoder KD,
+ audio-only data, and MSE vs contrastive with 10% / 25% of the captions) with the same step budget, schedule
shape and seeds, then scores each on the test split. Every row is the same student architecture: the shipped one
(the preset's `student_shape`) unless `--shape` names another. Runs go to `students/ablation<N>/`, scores to
`results/ablation<N>/` (`ablation<N>_<shape>/` for a shape other than base), and `train report` turns them into a
table plus a plain-words check of the paper's claims.

Every row is resumable and skipped once scored, so re-running the same command continues where it stopped.
`--jobs J` splits the rows over J processes with cores/J threads each, for machines with more cores than one
run uses well. On 2 cores it gains nothing: each job renders its scenes on the same cores the other trains on.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import replace

import torch

from eacap.models.presets import STUDENT_SHAPES
from train.core.config import PipelineConfig, add_preset_arguments, config_from_args
from train.core.data import run_path
from train.core.runs import Recipe, group_name, student_dir
from train.stages import evaluate, student  # the stages each row runs: ablation orchestrates them

# In order of importance: with a partial run the table still answers the main questions.
RECIPES = (
    Recipe("none"),
    Recipe("seq+contrastive"),
    Recipe("seq+contrastive", audio_only=True),
    Recipe("seq+mse"),
    Recipe("seq"),
    Recipe("token"),
    Recipe("seq+mse", label_fraction=0.1),
    Recipe("seq+contrastive", label_fraction=0.1),
    Recipe("seq+mse", label_fraction=0.25),
    Recipe("seq+contrastive", label_fraction=0.25),
)


def plan(seeds: list[int], rows: list[str] | None = None, shape: str = "base") -> list[tuple[Recipe, int]]:
    """(recipe, seed) for every row, or only the rows named (recipe names such as `none`, `seq_contrastive`), each
    with the student architecture `shape`."""
    known = [recipe.name for recipe in RECIPES]
    unknown = sorted(set(rows or []) - set(known))
    if unknown:
        raise ValueError(f"unknown ablation row(s) {', '.join(unknown)}: choose from {', '.join(known)}")
    return [(replace(recipe, shape=shape), seed) for seed in seeds for recipe in RECIPES
            if not rows or recipe.name in rows]


def split_jobs(runs: list[tuple[Recipe, int]], jobs: int) -> list[list[tuple[Recipe, int]]]:
    """Greedy balance by cost (an audio-only row trains two batches a step), keeping the order of importance."""
    parts: list[list[tuple[Recipe, int]]] = [[] for _ in range(jobs)]
    load = [0] * jobs
    for run in runs:
        j = load.index(min(load))
        parts[j].append(run)
        load[j] += 2 if run[0].audio_only else 1
    return parts


def run_rows(config: PipelineConfig, steps: int, runs: list[tuple[Recipe, int]],
             repeat_sounds: bool = False) -> list[str]:
    names = []
    for recipe, seed in runs:
        group = group_name(steps, recipe.shape)
        cfg = replace(config, seed=seed, student=config.student.rescaled(steps))
        name = f"{group}/{student_dir(cfg, recipe, group).name}"
        if not run_path(cfg, "results", f"{name}.json").is_file():
            print(f"\n== {name} ({steps} steps) ==", flush=True)
            student.run(cfg, recipe, group=group)
            evaluate.evaluate(cfg, name, repeat_sounds=repeat_sounds)
        names.append(name)
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_preset_arguments(parser)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds to train every row with (default: 0)")
    parser.add_argument("--rows", nargs="+", help="only these rows (e.g. none seq_contrastive); default: all")
    parser.add_argument("--shape", choices=STUDENT_SHAPES,
                        help="student architecture of every row (default: the preset's shipped student_shape)")
    parser.add_argument("--jobs", type=int, default=1, help="parallel processes, each with cores/jobs threads")
    parser.add_argument("--repeat-sounds", action="store_true",
                        help="score every row without eacap's no_repeat_sounds rule (to match rows measured before it)")
    parser.add_argument("--part", help=argparse.SUPPRESS)  # "i/J": the i-th of J jobs (set by --jobs)


def main(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    steps = args.steps or config.student.steps
    shape = args.shape or config.student_shape
    runs = plan(args.seeds, args.rows, shape)
    if args.part:
        index, jobs = map(int, args.part.split("/"))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // jobs))
        run_rows(config, steps, split_jobs(runs, jobs)[index], args.repeat_sounds)
        return 0
    if args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
    if args.jobs == 1:
        run_rows(config, steps, runs, args.repeat_sounds)
        return 0
    logs = run_path(config, "students", group_name(steps, shape))
    logs.mkdir(parents=True, exist_ok=True)
    base = [sys.executable, "-m", "train", "ablation", "--preset", config.name, "--run-dir", str(config.run_dir),
            "--steps", str(steps), "--seeds", *map(str, args.seeds), "--shape", shape]
    if args.rows:
        base += ["--rows", *args.rows]
    if config.audio_only_scenes is not None:
        base += ["--audio-only-scenes", str(config.audio_only_scenes)]
    if args.repeat_sounds:
        base += ["--repeat-sounds"]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // args.jobs))}
    procs = []
    for j in range(args.jobs):
        log = open(logs / f"job{j}.log", "a")
        procs.append((subprocess.Popen([*base, "--part", f"{j}/{args.jobs}"], stdout=log, stderr=subprocess.STDOUT,
                                       env=env), log))
        print(f"job {j}: {', '.join(r.name + f'_seed{s}' for r, s in split_jobs(runs, args.jobs)[j])} -> {log.name}")
    codes = [p.wait() for p, _ in procs]
    for _, log in procs:
        log.close()
    if any(codes):
        print(f"error: ablation jobs exited with {codes}: see the logs in {logs}", file=sys.stderr)
        return 1
    print(f"done: `python -m train report --preset {config.name}` writes the table")
    return 0
