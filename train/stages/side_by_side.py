"""`python -m train real-sounds`: teacher and student captions side by side, of real recordings never heard in
training (unscored; the scored test on recordings from unheard sources is `train realworld`).

The app's examples (mixes of recordings from the corpus *test* split only), speech recorded here with TTS engines
in sentences no training clip says, and music played here by fluidsynth: new melodies and a drum groove, with the
instruments of a soundfont the sound bank never used (TimGM6mb, the one Debian's fluidsynth package pulls in; the
training clips come from FluidR3 GM). Captions come from the exported checkpoints through the same
`eacap.compare` the app uses; `results/real_sounds.json` feeds the "Real sounds" part of `train report`.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from eacap import load_model
from eacap.compare import compare
from train.core.config import PipelineConfig, add_preset_arguments, config_from_args
from train.core.data import run_path
from train.core.runs import checkpoints_dir
from train.corpus.soundbank_generate import drum_pattern, melody, render_midi, write_midi

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# (engine, voice, text): sentences unlike the IVR prompts and TTS lines of the sound bank
RECORDINGS = [
    ("espeak-ng", "en+m3", "The train to the coast leaves in ten minutes from platform four."),
    ("espeak-ng", "en+f4", "Could you bring some bread and milk on your way home tonight?"),
    ("flite", "kal16", "Welcome back. The weather tomorrow will be cold and windy."),
]


# (file stem, General MIDI program or None for the drum kit, what it is); seeds differ from the sound bank's
MUSIC = [("piano", 0, "piano melody"), ("trumpet", 56, "trumpet melody"), ("violin", 40, "violin melody"),
         ("drums", None, "drum groove")]
SOUNDFONTS = [Path("/usr/share/sounds/sf2/TimGM6mb.sf2"), Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")]


def play(folder: Path) -> list[tuple[Path, str]]:
    """Music rendered by fluidsynth from generated MIDI; skipped with a note when fluidsynth or a soundfont is
    missing."""
    soundfont = next((path for path in SOUNDFONTS if path.is_file()), None)
    if shutil.which("fluidsynth") is None or soundfont is None:
        print("note: fluidsynth or a GM soundfont missing, skipping the music (apt-get install fluidsynth)")
        return []
    made = []
    for i, (stem, program, what) in enumerate(MUSIC):
        rng = np.random.default_rng([7, i])
        events = [] if program is None else [(0.0, bytes([0xC0, program]))]
        t = 0.3
        while t < 7.0:  # phrases until about 7 s, then the piece is cut at 10 s
            notes, t = drum_pattern(rng, t) if program is None else melody(rng, t, 0)
            events += notes
        midi, wav = folder / f"{stem}.mid", folder / f"fluidsynth_{stem}.wav"
        write_midi(midi, events)
        render_midi(soundfont, midi, wav)
        audio, rate = sf.read(str(wav), dtype="float32")
        sf.write(str(wav), audio[: 10 * rate], rate)
        made.append((wav, f"fluidsynth, {soundfont.name} (never used in training): a new {what}"))
    return made


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
    checkpoints = checkpoints or checkpoints_dir(config)
    teacher, student = load_model(checkpoints / "teacher"), load_model(checkpoints / "student")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sources = [(p, "example from held-out sources (examples/ATTRIBUTION.md)")
                   for p in sorted(EXAMPLES.glob("*.flac"))]
        sources += record(Path(tmp)) + play(Path(tmp))
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
    parser.add_argument("--checkpoints", type=Path,
                        help="folder with teacher/ and student/ (default: the exported ones)")


def main(args: argparse.Namespace) -> int:
    print(f"real sounds captioned -> {run(config_from_args(args), args.checkpoints)}")
    return 0
