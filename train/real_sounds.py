"""`python -m train real-sounds`: teacher vs student captions of real recordings never heard in training.

The app's examples (mixes of recordings from the corpus *test* split only) plus speech recorded here with TTS
engines in sentences no training clip says. Captions come from the exported checkpoints through the same
`eacap.compare` the app uses; `results/real_sounds.json` feeds the "Real sounds" part of `train report`.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from eacap import load_model
from eacap.compare import compare
from train.config import PipelineConfig, add_preset_arguments, config_from_args
from train.data import run_path
from train.export import default_out

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# (engine, voice, text): sentences unlike the IVR prompts and TTS lines of the sound bank
RECORDINGS = [
    ("espeak-ng", "en+m3", "The train to the coast leaves in ten minutes from platform four."),
    ("espeak-ng", "en+f4", "Could you bring some bread and milk on your way home tonight?"),
    ("flite", "kal16", "Welcome back. The weather tomorrow will be cold and windy."),
]


def record(folder: Path) -> list[tuple[Path, str]]:
    """Speech from the TTS engines that are installed; a missing engine is skipped with a note."""
    made = []
    for engine, voice, text in RECORDINGS:
        if shutil.which(engine) is None:
            print(f"note: {engine} not installed, skipping its recording (apt-get install {engine})")
            continue
        path = folder / f"{engine}_{voice.replace('+', '_')}.wav"
        command = ([engine, "-v", voice, "-w", str(path), text] if engine == "espeak-ng"
                   else [engine, "-voice", voice, "-t", text, "-o", str(path)])
        subprocess.run(command, check=True, capture_output=True)
        made.append((path, f"{engine} voice {voice}: \"{text}\""))
    return made


def run(config: PipelineConfig, checkpoints: Path | None = None) -> Path:
    checkpoints = checkpoints or default_out(config)
    teacher, student = load_model(checkpoints / "teacher"), load_model(checkpoints / "student")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sources = [(p, "example mix of test-split recordings (examples/ATTRIBUTION.md)") for p in sorted(EXAMPLES.glob("*.flac"))]
        sources += record(Path(tmp))
        for path, what in sources:
            result = compare(path, teacher, student)
            rows.append({"file": path.name, "source": what, "duration": round(result.duration, 2),
                         "teacher": result.teacher.caption, "student": result.student.caption,
                         "teacher_ms": round(result.teacher.seconds["total"] * 1000, 1),
                         "student_ms": round(result.student.seconds["total"] * 1000, 1),
                         "clip_cosine": round(result.clip_cosine, 3)})
            print(f"{path.name}: teacher: {result.teacher.caption} | student: {result.student.caption}")
    out = run_path(config, "results", "real_sounds.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_preset_arguments(parser)
    parser.add_argument("--checkpoints", type=Path, help="folder with teacher/ and student/ (default: the exported ones)")


def main(args: argparse.Namespace) -> int:
    run(config_from_args(args), args.checkpoints)
    return 0
