"""The sound bank's records: one manifest row per kept clip, the class vocabulary table, and what the bank's
builders hand each other (a `Task`: one file to decode and label; the build `Context`).

The sound bank (`train/corpus/soundbank.py`, with its generators in `soundbank_generate.py`) writes
`data/soundbank/manifest.csv`; the scene builder (`train/corpus/scenes.py`) reads it. Keeping the schema here means
every side agrees on it without importing each other.
"""
from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

MANIFEST_NAME = "manifest.csv"
SAMPLE_RATE = 16_000       # every clip in the bank
CLASSES_PATH = Path(__file__).with_name("classes.json")


@dataclass(frozen=True)
class Clip:
    clip_id: str          # md5 of the 16 kHz audio (first 12 hex digits): also the dedup key
    label: str            # class name, a key of classes.json
    file: str             # path relative to the sound-bank root, e.g. "clips/dog/3f2a9c1b7d10.flac"
    source_package: str   # Debian/PyPI package name, or "espeak-ng"/"fluidsynth"/"synth" for generated clips
    source_path: str      # path inside the package (or generator + parameters), for attribution and splits
    licence: str          # licence of this clip, from the package's copyright file / METADATA
    duration: float       # seconds, after trimming
    synthetic: bool = False   # True for clips synthesised here (not TTS/fluidsynth renders of real samples)
    recording: str = ""   # id of the original recording; clips cut from one recording share it (split key)
    voice: str = ""       # speaker/voice id for speech (splits are disjoint by voice)
    transcript: str = ""  # words spoken, for speech clips

    @property
    def group(self) -> str:
        """The unit that must never straddle two splits: the voice for speech, else the recording."""
        return self.voice or self.recording or self.clip_id


def write_manifest(root: str | Path, clips: list[Clip]) -> Path:
    path = Path(root) / MANIFEST_NAME
    names = [f.name for f in fields(Clip)]
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        for clip in sorted(clips, key=lambda c: (c.label, c.clip_id)):
            row = asdict(clip)
            row["synthetic"] = int(clip.synthetic)
            writer.writerow(row)
    tmp.replace(path)  # atomic: a killed run never leaves half a manifest
    return path


def read_manifest(root: str | Path) -> list[Clip]:
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no sound-bank manifest at {path}: build it with `python -m train soundbank`")
    clips = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            row["duration"] = float(row["duration"])
            row["synthetic"] = row["synthetic"] in ("1", "True", "true")
            clips.append(Clip(**row))
    return clips


def load_classes(path: str | Path = CLASSES_PATH) -> dict[str, dict]:
    """The class table: name -> caption vocabulary (see classes.json's "_schema" entry)."""
    with open(path, encoding="utf-8") as handle:
        table = json.load(handle)
    return {name: entry for name, entry in table.items() if not name.startswith("_")}


class SoundBankError(RuntimeError):
    """A source, tool or input the sound bank cannot use; the message names it and the fix."""


@dataclass
class Task:
    path: str               # file on disk
    source_path: str        # path inside the package (manifest)
    label: str
    licence: str
    package: str
    synthetic: bool = False
    voice: str = ""
    transcript: str = ""
    recording: str = ""


@dataclass
class Context:
    """What generators may read: the real clips built so far (for the synthetic minority rule)."""
    root: Path
    real_counts: dict[str, int] = field(default_factory=dict)
