"""Caption data sets behind one interface: this project's scene corpus, Clotho and AudioCaps.

    items = load_caption_set("tiny", "train")                 # data/scenes/tiny, rendered on the fly
    items = load_caption_set("data/clotho", "train")          # clotho_captions_development.csv + audio folder
    items = load_caption_set("data/audiocaps", "val")         # val.csv (audiocap_id, youtube_id, ...) + audio
    wave = item_waveform(items[0])                            # float32 mono 16 kHz

Layouts recognised in a folder, for a split name such as "train":
- scene corpus (`python -m train scenes`): `dataset.json` + `<split>.csv` (file_name, caption_1..5) +
  `<split>.jsonl` (specs). A scene's audio is `audio/<split>/<file_name>` when rendered, else rendered from its
  spec. Splits: train, val, test, audio_only (captions withheld) and the nested subsets `train_<pct>pct`.
- Clotho: `clotho_captions_<name>.csv` (file_name, caption_1..caption_5), where train/val/test map to
  development/validation/evaluation; audio in `<name>/`, `clotho_audio_<name>/` or `audio/<name>/`.
- AudioCaps: `<split>.csv` (audiocap_id, youtube_id, start_time, caption; one row per caption, so several rows
  per clip); audio named `<youtube_id>_<start_time>`, `Y<youtube_id>`, `<youtube_id>` or `<audiocap_id>` with
  any of .wav/.flac/.ogg/.mp3, in `<split>/`, `audio/<split>/`, `audio/` or the folder itself. Clips whose
  audio is missing (AudioCaps videos disappear from YouTube) are skipped with a warning.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from train.corpus.mixing import render_scene

SCENES_ROOT = Path("data/scenes")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
SPLITS = ("train", "val", "test", "audio_only")   # the scene corpus's splits
CAPTIONED_SPLITS = ("train", "val", "test")
CLOTHO_SPLITS = {"train": "development", "val": "validation", "test": "evaluation"}


class DatasetError(ValueError):
    """A caption set cannot be read; the message names the file and the fix."""


@dataclass(frozen=True)
class CaptionItem:
    """One audio clip and its reference captions. Picklable, so it can go to DataLoader workers."""
    audio_id: str                       # file name without folder (unique within a split)
    captions: tuple[str, ...]           # empty for audio-only (unlabelled) items
    events: frozenset[str] = frozenset()  # class labels heard (scene corpus only; empty when unknown/withheld)
    audio_path: Path | None = None      # a real file, when there is one
    scene: dict | None = field(default=None, compare=False, repr=False)  # spec to render otherwise
    bank_root: Path | None = None       # the sound bank `scene` refers to

    @property
    def duration(self) -> float | None:
        return self.scene["duration"] if self.scene else None


def item_waveform(item: CaptionItem) -> np.ndarray:
    """The item's audio as float32 mono 16 kHz (files longer than 30 s are cut, as the models' window)."""
    if item.audio_path is not None:
        from eacap.audio import load_audio  # eacap imports torch; the corpus stages run without it

        return load_audio(item.audio_path).waveform
    if item.scene is None:
        raise DatasetError(f"item {item.audio_id} has neither an audio file nor a scene spec")
    return render_scene(item.scene, item.bank_root)


def label_subset(ids: list[str], fraction: float, seed: int = 0) -> list[str]:
    """A deterministic `fraction` of `ids` (rounded up, at least one), in their original order.

    Ids are ranked by a hash of (seed, id) and the first ones kept, so subsets are nested: the 10% subset is
    inside the 25% subset for the same seed, and an id's membership does not depend on the others."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    if not ids:
        return []
    ranked = sorted(ids, key=lambda i: hashlib.sha1(f"{seed}:{i}".encode()).hexdigest())
    keep = set(ranked[:max(1, math.ceil(fraction * len(ids)))])
    return [i for i in ids if i in keep]


def load_caption_set(path_or_preset: str | Path, split: str, *, label_fraction: float | None = None,
                     seed: int = 0, audio_dir: str | Path | None = None,
                     bank_root: str | Path | None = None) -> list[CaptionItem]:
    """Items of `split` from a scene corpus, Clotho or AudioCaps folder (see the module doc).

    `path_or_preset`: a folder, or a scene preset name ("tiny", "full") meaning data/scenes/<preset>.
    `label_fraction`: keep a deterministic nested subset of the items (see `label_subset`).
    `audio_dir`: where the audio files are, when not in one of the usual places.
    `bank_root`: the sound bank of a scene corpus, when it moved since the corpus was built.
    """
    root = Path(path_or_preset)
    if not root.exists() and (SCENES_ROOT / str(path_or_preset)).is_dir():
        root = SCENES_ROOT / str(path_or_preset)
    if not root.is_dir():
        raise DatasetError(f"caption set {path_or_preset}: no such folder (nor {SCENES_ROOT / str(path_or_preset)});"
                           " build scenes with `python -m train scenes --preset tiny` or give a data set folder")
    if (root / "dataset.json").is_file():
        items = _load_scenes(root, split, audio_dir, bank_root)
    elif (root / f"clotho_captions_{CLOTHO_SPLITS.get(split, split)}.csv").is_file():
        items = _load_clotho(root, CLOTHO_SPLITS.get(split, split), audio_dir)
    elif (root / f"{split}.csv").is_file():
        items = _load_plain_csv(root, split, audio_dir)
    else:
        raise DatasetError(f"{root}: no caption file for split {split!r}: expected dataset.json + {split}.csv "
                           f"(scene corpus), clotho_captions_{CLOTHO_SPLITS.get(split, split)}.csv (Clotho) or "
                           f"{split}.csv (AudioCaps / Clotho-style)")
    if label_fraction is not None:
        kept = set(label_subset([item.audio_id for item in items], label_fraction, seed))
        items = [item for item in items if item.audio_id in kept]
    return items


# ------------------------------------------------------------------------------------------- layouts


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    # utf-8-sig: Clotho's CSVs are edited in spreadsheets and sometimes carry a byte-order mark.
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        return [f.strip() for f in reader.fieldnames or []], rows


def _caption_columns(fields: list[str], path: Path) -> list[str]:
    columns = sorted((f for f in fields if f.startswith("caption_")), key=lambda f: int(f.split("_")[1]))
    if "file_name" not in fields:
        raise DatasetError(f"{path}: no file_name column (columns: {', '.join(fields)}); a Clotho-style file "
                           "needs file_name, caption_1..caption_5")
    return columns


def _find_audio_dir(root: Path, names: list[str], audio_dir, path: Path) -> Path:
    if audio_dir is not None:
        if not Path(audio_dir).is_dir():
            raise DatasetError(f"audio folder {audio_dir} for {path} does not exist")
        return Path(audio_dir)
    candidates = [root / n for n in names]
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise DatasetError(f"no audio folder for {path}: tried {', '.join(str(c) for c in candidates)}; "
                       "pass audio_dir=")


def _load_clotho(root: Path, name: str, audio_dir) -> list[CaptionItem]:
    path = root / f"clotho_captions_{name}.csv"
    fields, rows = _read_csv(path)
    columns = _caption_columns(fields, path)
    folder = _find_audio_dir(root, [name, f"clotho_audio_{name}", f"clotho_audio_{name}/{name}",
                                    f"audio/{name}"], audio_dir, path)
    return _with_audio(path, [(row["file_name"], [row[c].strip() for c in columns if row.get(c, "").strip()])
                              for row in rows], folder)


def _load_plain_csv(root: Path, split: str, audio_dir) -> list[CaptionItem]:
    path = root / f"{split}.csv"
    fields, rows = _read_csv(path)
    folder = _find_audio_dir(root, [split, f"audio/{split}", "audio", "."], audio_dir, path)
    if {"youtube_id", "caption"} <= set(fields):
        return _audiocaps(path, rows, folder)
    columns = _caption_columns(fields, path)
    return _with_audio(path, [(row["file_name"], [row[c].strip() for c in columns if row.get(c, "").strip()])
                              for row in rows], folder)


def _audiocaps(path: Path, rows: list[dict], folder: Path) -> list[CaptionItem]:
    """Group AudioCaps' one-caption-per-row layout by clip, and find each clip's file by the usual names."""
    clips: OrderedDict[tuple[str, str], list[str]] = OrderedDict()
    ids: dict[tuple[str, str], str] = {}
    for row in rows:
        key = (row["youtube_id"].strip(), row.get("start_time", "").strip())
        clips.setdefault(key, []).append(row["caption"].strip())
        ids.setdefault(key, row.get("audiocap_id", "").strip())
    files = {p.stem: p for p in folder.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS}
    items, missing = [], 0
    for (youtube_id, start), captions in clips.items():
        start_int = start.split(".")[0] if start else ""
        names = [f"{youtube_id}_{start}", f"{youtube_id}_{start_int}", f"{youtube_id}_{start_int}000",
                 f"Y{youtube_id}", youtube_id, ids[(youtube_id, start)]]
        found = next((files[n] for n in names if n and n in files), None)
        if found is None:
            missing += 1
            continue
        items.append(CaptionItem(found.name, tuple(captions), audio_path=found))
    _report_missing(path, folder, missing, len(clips), "<youtube_id>_<start_time>.wav")
    return items


def _with_audio(path: Path, rows: list[tuple[str, list[str]]], folder: Path) -> list[CaptionItem]:
    items, missing = [], 0
    for file_name, captions in rows:
        audio = folder / file_name
        if not audio.is_file():
            missing += 1
            continue
        items.append(CaptionItem(file_name, tuple(captions), audio_path=audio))
    _report_missing(path, folder, missing, len(rows), "the file_name column")
    return items


def _report_missing(path: Path, folder: Path, missing: int, total: int, naming: str) -> None:
    if missing == total and total:
        raise DatasetError(f"none of the {total} clips listed in {path} has audio in {folder} (files named as "
                           f"{naming}); point audio_dir= at the audio folder")
    if missing:
        warnings.warn(f"{path}: {missing} of {total} clips have no audio in {folder}; skipped", stacklevel=3)


def _load_scenes(root: Path, split: str, audio_dir, bank_root) -> list[CaptionItem]:
    with open(root / "dataset.json", encoding="utf-8") as handle:
        info = json.load(handle)
    base = info.get("subsets", {}).get(split, {}).get("split", split)
    csv_path, jsonl_path = root / f"{split}.csv", root / f"{base}.jsonl"
    if not csv_path.is_file() or not jsonl_path.is_file():
        known = ", ".join(list(info.get("splits", {})) + list(info.get("subsets", {})))
        raise DatasetError(f"{root}: no split {split!r} (known: {known})")
    bank = Path(bank_root) if bank_root is not None else (root / info["bank"]).resolve()
    specs = {}
    with open(jsonl_path, encoding="utf-8") as handle:
        for line in handle:
            spec = json.loads(line)
            specs[spec["scene_id"]] = spec
    folder = Path(audio_dir) if audio_dir is not None else root / "audio" / base
    fields, rows = _read_csv(csv_path)
    columns = _caption_columns(fields, csv_path)
    withheld = base == "audio_only"
    if not folder.is_dir() and not (bank / "manifest.csv").is_file():
        raise DatasetError(f"{root}: scenes are not rendered ({folder} is missing) and their sound bank {bank} is "
                           "gone; rebuild the bank, pass bank_root=, or build with --render")
    items = []
    for row in rows:
        scene_id = Path(row["file_name"]).stem
        spec = specs.get(scene_id)
        if spec is None:
            raise DatasetError(f"{csv_path}: scene {scene_id} has no spec in {jsonl_path}; rebuild the corpus")
        audio = folder / row["file_name"]
        heard = frozenset(e["label"] for e in spec["events"] if e["audible"])
        if spec.get("background") and spec["background"].get("audible"):
            heard |= {spec["background"]["label"]}
        items.append(CaptionItem(
            row["file_name"],
            () if withheld else tuple(row[c] for c in columns if row.get(c)),
            frozenset() if withheld else heard,   # withheld like the captions: unlabelled means unlabelled
            audio_path=audio if audio.is_file() else None,
            scene=spec, bank_root=bank))
    return items
