"""`python -m train all --preset tiny|full`: every stage in order, skipping what is finished.

scenes -> teacher-init (full) -> cache -> teacher -> pseudo -> student (the shipped recipe: seq-KD + contrastive
encoder KD + audio-only data; with the preset's `student_init`, first that shape's student, then the shipped one
started from it) -> evaluate (teacher, student) -> export -> report. Each stage is idempotent and
resumable on its own, so re-running `all` after a kill continues where it stopped.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

from train.core import runs
from train.core.config import PipelineConfig, add_preset_arguments, config_from_args
from train.core.data import run_path
from train.corpus import scenes
from train.corpus.datasets import SCENES_ROOT
from train.stages import cache, evaluate, export, pseudo, report, student, teacher, teacher_init  # what `all` runs


def stage(name: str):
    print(f"\n== {name} ==", flush=True)
    return time.time()


def run(config: PipelineConfig, teacher_steps: int | None = None, student_steps: int | None = None) -> dict:
    timings = {}
    tic = stage("scenes")
    if not (SCENES_ROOT / config.scenes / "dataset.json").is_file():
        parser = argparse.ArgumentParser()
        scenes.add_arguments(parser)
        if scenes.main(parser.parse_args(["--preset", config.scenes, "--seed", str(config.seed)])) != 0:
            raise RuntimeError("building the scene corpus failed (see above)")
    timings["scenes"] = time.time() - tic
    if config.teacher_init == "whisper":
        tic = stage("teacher-init")
        parser = argparse.ArgumentParser()
        teacher_init.add_arguments(parser)
        if teacher_init.main(parser.parse_args([])) != 0:
            raise RuntimeError("converting Whisper tiny.en failed (see above)")
        if config.teacher_tagger and teacher_init.main(parser.parse_args(["--yamnet"])) != 0:
            raise RuntimeError("converting YAMNet failed (see above)")
        timings["teacher-init"] = time.time() - tic
    tic = stage("cache")
    cache.run(config)
    timings["cache"] = time.time() - tic
    tic = stage("teacher")
    teacher.run(config, steps=teacher_steps)
    timings["teacher"] = time.time() - tic
    tic = stage("pseudo")
    pseudo.run(config)
    timings["pseudo"] = time.time() - tic
    tic = stage("student")
    recipe = runs.shipped_recipe(config)
    if config.student_init:  # the shipped student starts from this shape's trained student, pruned
        student.run(config, runs.shipped_recipe(config, config.student_init), steps=student_steps)
        if config.student_init_lr:
            config = replace(config, student=replace(config.student, lr=config.student_init_lr))
    student.run(config, recipe, steps=student_steps)
    timings["student"] = time.time() - tic
    tic = stage("evaluate")
    for name in ("teacher", runs.student_dir(config, recipe).name):
        if not run_path(config, "results", f"{name}.json").is_file():
            evaluate.evaluate(config, name)
    timings["evaluate"] = time.time() - tic
    tic = stage("export")
    export.export(config)
    timings["export"] = time.time() - tic
    stage("report")
    report.report(config)
    print("\nstage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    return timings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_preset_arguments(parser)
    parser.add_argument("--teacher-steps", type=int, help="override the teacher's step budget")
    parser.add_argument("--student-steps", type=int, help="override the student's step budget")


def main(args: argparse.Namespace) -> int:
    run(config_from_args(args), args.teacher_steps, args.student_steps)
    return 0
