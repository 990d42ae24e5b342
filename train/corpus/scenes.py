"""Scene corpus: mix sound-bank clips into captioned 10 s scenes, `python -m train scenes --preset full|tiny`.

A scene is an optional background texture (looped under the whole scene) plus 1-3 foreground events, each
placed at an onset, possibly repeated, in sequence with or overlapping the previous one, at a drawn loudness.
Everything random is drawn once, from `SeedSequence([seed, split, index, attempt])`, into a JSON *spec*; the
audio is a pure function of the spec and the bank (`render_scene`), so scenes can be rendered on the fly by the
training data loader instead of being stored (17.5k scenes of 10 s would be ~3 GB of FLAC; specs are ~30 MB).

The spec also carries what was *measured* on the rendered components: each event's level, whether it is
audible (not masked by the rest of the mix), how many bursts its crop holds, leading/trailing silence. The
captions (`train/corpus/grammar.py`) are written from those measurements only, so they never mention a masked event
or a background drowned by the foreground, and loudness words match the levels in the audio.

Splits are disjoint by source recording (`Clip.group`: the voice for speech), assigned per class so that every
class with enough recordings reaches val and test. The audio-only pool is made of fresh mixtures of *train*
recordings; its captions are withheld (the loader returns none), standing in for unlabelled audio.

Outputs under `data/scenes/<preset>/`: `<split>.csv` (Clotho layout: file_name, caption_1..caption_5),
`<split>.jsonl` (one spec + metadata + captions per line), `dataset.json` (parameters, counts, bank path),
`train_<pct>pct.csv` nested label-fraction subsets, and with `--render` the FLAC files in `audio/<split>/`.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from train.corpus.datacard import write_card
from train.corpus.datasets import CAPTIONED_SPLITS, SPLITS, label_subset
from train.corpus.grammar import CaptionError, write_captions
from train.corpus.manifest import CLASSES_PATH, MANIFEST_NAME, Clip, load_classes, read_manifest, write_manifest
from train.corpus.mixing import (
    AUDIBILITY_FLOOR_DB,
    AUDIBLE_FRACTION,
    AUDIBLE_LOCAL_SNR_DB,
    AUDIBLE_SECONDS,
    BACKGROUND_AUDIBLE_SECONDS,
    FAINT_MARGIN_DB,
    FAINT_MAX_DB,
    FRAME,
    LOUD_MARGIN_DB,
    LOUD_MIN_DB,
    PEAK_LIMIT,
    SAMPLE_RATE,
    SceneError,
    active_level_db,
    audibility,
    count_bursts,
    db,
    event_segment,
    frame_energy,
    render_component,
    render_scene,
    silence_runs,
)

SPEC_VERSION = 1
DEFAULT_BANK = Path("data/soundbank")
DEFAULT_OUT = Path("data/scenes")
FIXTURE_DIR = "fixture_bank"


@dataclass(frozen=True)
class Preset:
    train: int
    val: int
    test: int
    audio_only: int
    bank: Path = DEFAULT_BANK   # the sound bank this preset mixes from unless --bank names another

    def counts(self) -> dict[str, int]:
        return {"train": self.train, "val": self.val, "test": self.test, "audio_only": self.audio_only}


# Full: the shipped corpus. Rendering a scene is cheap next to a training step, so the size is bounded by
# training time on 2 CPU cores, not by building; specs make a larger pool nearly free on disk.
# Extra: the full sizes, mixed from the bank with the extra sources (`python -m train soundbank --extra`, 190 more
# recordings of the cross-source test's classes): the corpus of the `base_extra` teacher (train/core/config.py).
EXTRA_BANK = Path("data/soundbank_extra")
PRESETS = {"full": Preset(8000, 500, 1000, 8000), "tiny": Preset(40, 20, 20, 30),
           "extra": Preset(8000, 500, 1000, 8000, bank=EXTRA_BANK)}


@dataclass(frozen=True)
class MixConfig:
    """How scenes are drawn. Levels are active-RMS dBFS before the final peak guard."""
    duration: float = 10.0
    short_scene_prob: float = 0.15      # some scenes are 5-10 s, so models see lengths other than 10 s
    min_duration: float = 5.0
    background_prob: float = 0.6
    n_events_probs: tuple[float, float, float] = (0.45, 0.4, 0.15)   # 1, 2 or 3 foreground events
    overlap_prob: float = 0.4           # an event overlaps the previous one, else follows it
    normal_db: float = -28.0            # a "normal" event; loud and faint are offsets from it
    normal_spread_db: float = 3.0
    loud_db: float = -16.0
    faint_db: float = -42.0
    loud_prob: float = 0.15
    faint_prob: float = 0.15
    background_below_db: tuple[float, float] = (6.0, 18.0)   # background this far under a normal event
    distant_lowpass_hz: float = 1800.0  # distance dulls high frequencies as well as level
    repeat_probs: tuple[float, ...] = (0.45, 0.25, 0.15, 0.1, 0.05)  # 1..5 occurrences of a repeatable event
    repeat_max_crop: float = 2.0        # only crops this short are repeated
    event_max_crop: float = 4.0         # crop of a repeatable (discrete) event
    texture_crop: tuple[float, float] = (3.0, 8.0)   # crop of a non-repeatable event (speech, engine, ...)
    min_background_clip: float = 1.5    # shorter clips would loop audibly
    max_attempts: int = 20


MIX = MixConfig()

# --------------------------------------------------------------------------------------------- splits


def _stable_hash(*parts) -> int:
    return int(hashlib.sha1(":".join(map(str, parts)).encode()).hexdigest()[:12], 16)


def assign_splits(clips: list[Clip], seed: int, fractions=(0.7, 0.1, 0.2)) -> dict[str, str]:
    """group -> "train" | "val" | "test", disjoint by construction (a group gets exactly one split).

    Per class, its groups are shuffled by a stable hash and cut 70/10/20, with at least one group in test when
    a class has two and in val when it has three, so small classes are still evaluated. Classes are handled
    rarest first; a group shared by two classes keeps its first assignment.
    """
    groups_by_label: dict[str, set[str]] = defaultdict(set)
    for clip in clips:
        groups_by_label[clip.label].add(clip.group)
    assignment: dict[str, str] = {}
    for label in sorted(groups_by_label, key=lambda name: (len(groups_by_label[name]), name)):
        free = sorted((g for g in groups_by_label[label] if g not in assignment),
                      key=lambda g: _stable_hash(seed, "split", g))
        n = len(free)
        n_test = max(1 if n >= 2 else 0, int(round(fractions[2] * n)))
        n_val = max(1 if n >= 3 else 0, int(round(fractions[1] * n)))
        for i, group in enumerate(free):
            assignment[group] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return assignment


# ---------------------------------------------------------------------------------------------- specs


@dataclass
class _Pool:
    """The clips a split may draw from (label -> group -> clips) and the labels that can be a background."""
    by_label: dict[str, dict[str, list[Clip]]]
    background_labels: list[str]


def _make_pool(clips: list[Clip], classes: dict) -> _Pool:
    by_label: dict[str, dict[str, list[Clip]]] = defaultdict(lambda: defaultdict(list))
    for clip in clips:
        by_label[clip.label][clip.group].append(clip)
    background = sorted(label for label, groups in by_label.items() if classes[label].get("background")
                        and any(c.duration >= MIX.min_background_clip for g in groups.values() for c in g))
    return _Pool({k: dict(v) for k, v in sorted(by_label.items())}, background)


def _pick_clip(rng: np.random.Generator, groups: dict[str, list[Clip]], min_duration: float = 0.0) -> Clip | None:
    """Uniform over recordings, then over the recording's clips: a 60-take recording is not 60x as likely."""
    eligible = {g: [c for c in cs if c.duration >= min_duration] for g, cs in groups.items()}
    eligible = {g: cs for g, cs in eligible.items() if cs}
    if not eligible:
        return None
    names = sorted(eligible)
    group = eligible[names[rng.integers(len(names))]]
    return group[rng.integers(len(group))]


def _draw_layout(rng: np.random.Generator, pool: _Pool, classes: dict, cfg: MixConfig) -> dict:
    """Draw a scene's structure (no audio yet): background, events, crops, onsets, loudness targets."""
    duration = cfg.duration
    if rng.random() < cfg.short_scene_prob:
        duration = round(float(rng.uniform(cfg.min_duration, cfg.duration)), 1)
    background = None
    if pool.background_labels and rng.random() < cfg.background_prob:
        label = pool.background_labels[rng.integers(len(pool.background_labels))]
        clip = _pick_clip(rng, pool.by_label[label], cfg.min_background_clip)
        background = {"label": label, "clip_id": clip.clip_id, "file": clip.file,
                      "start": round(float(rng.uniform(0, clip.duration)), 3),
                      "level_target_db": cfg.normal_db - float(rng.uniform(*cfg.background_below_db))}
    labels = [name for name in pool.by_label if not background or name != background["label"]]
    n_events = int(rng.choice([1, 2, 3], p=cfg.n_events_probs))
    chosen = [labels[i] for i in rng.permutation(len(labels))[:n_events]]
    loudness = ["normal"] * len(chosen)
    # At most one loud and one faint event per scene: two "loudly"s would say the same thing twice.
    if len(chosen) and rng.random() < cfg.loud_prob:
        loudness[int(rng.integers(len(chosen)))] = "loud"
    if rng.random() < cfg.faint_prob:
        normal = [i for i, value in enumerate(loudness) if value == "normal"]
        if normal:
            loudness[normal[int(rng.integers(len(normal)))]] = "faint"

    events, cursor, previous = [], float(rng.uniform(0.0, 3.0)), None
    for label, level in zip(chosen, loudness):
        entry = classes[label]
        clip = _pick_clip(rng, pool.by_label[label])
        repeatable = bool(entry.get("repeatable"))
        max_crop = cfg.event_max_crop if repeatable else float(rng.uniform(*cfg.texture_crop))
        length = min(clip.duration, max_crop)
        start = float(rng.uniform(0.0, clip.duration - length)) if clip.duration > length else 0.0
        n_occ = 1
        if repeatable and length <= cfg.repeat_max_crop:
            n_occ = int(rng.choice(np.arange(1, len(cfg.repeat_probs) + 1), p=cfg.repeat_probs))
        gaps = [float(rng.uniform(0.1, 0.8)) for _ in range(n_occ - 1)]
        if previous is not None and rng.random() < cfg.overlap_prob and previous[1] - previous[0] > 0.5:
            onset = float(rng.uniform(previous[0], previous[1] - 0.3))
        elif previous is not None:
            onset = previous[1] + float(rng.uniform(0.1, 1.5))
        else:
            onset = cursor
        # Fit into the scene: drop repetitions first, then pull the event earlier, else leave it out.
        while n_occ > 1 and onset + n_occ * length + sum(gaps[:n_occ - 1]) > duration:
            n_occ -= 1
        span = n_occ * length + sum(gaps[:n_occ - 1])
        if onset + span > duration:
            onset = duration - span
            if onset < 0 or (previous is not None and onset < previous[0]):
                continue
        onsets, t = [], onset
        for i in range(n_occ):
            onsets.append(round(t, 3))
            t += length + (gaps[i] if i < n_occ - 1 else 0.0)
        target = {"loud": cfg.loud_db, "faint": cfg.faint_db}.get(level, cfg.normal_db)
        target += float(rng.uniform(-1, 1)) * (cfg.normal_spread_db if level == "normal" else 2.0)
        events.append({"label": label, "clip_id": clip.clip_id, "file": clip.file, "start": round(start, 3),
                       "length": round(length, 3), "onsets": onsets,
                       "lowpass_hz": cfg.distant_lowpass_hz if level == "faint" else None,
                       "drawn_loudness": level, "level_target_db": target})
        previous = (onset, onsets[-1] + length)
    return {"duration": duration, "background": background, "events": events}


def _measure(layout: dict, bank_root: Path) -> dict | None:
    """Set gains from the targets, render the components, drop masked events and measure what remains.

    Returns the finished spec, or None when no event survives (the caller draws again)."""
    n = int(round(layout["duration"] * SAMPLE_RATE))
    components: list[tuple[dict, np.ndarray, np.ndarray]] = []   # (component, signal, frame energy)
    for event in layout["events"]:
        unit = event_segment(event | {"gain_db": 0.0}, bank_root)
        seg_energy = frame_energy(unit)
        event["gain_db"] = round(event.pop("level_target_db") - active_level_db(seg_energy), 2)
        event["bursts_per_occurrence"] = count_bursts(seg_energy)
        signal = render_component(event, n, bank_root)
        components.append((event, signal, frame_energy(signal)))
    background = layout["background"]
    bg_signal = bg_energy = None
    if background:
        unit = render_component(background | {"gain_db": 0.0}, n, bank_root, background=True)
        background["gain_db"] = round(background.pop("level_target_db") - active_level_db(frame_energy(unit)), 2)
        bg_signal = unit * np.float32(10.0 ** (background["gain_db"] / 20.0))
        bg_energy = frame_energy(bg_signal)

    # Drop masked events one at a time, most masked first: removing one can unmask another.
    while components:
        total = sum(e for _, _, e in components) + (bg_energy if bg_energy is not None else 0.0)
        scores = [audibility(e, total - e) for _, _, e in components]
        masked = [i for i, (frac, secs) in enumerate(scores)
                  if frac < AUDIBLE_FRACTION and secs < AUDIBLE_SECONDS]
        if not masked:
            break
        components.pop(min(masked, key=lambda i: scores[i][0]))
    if not components:
        return None

    mix = sum(s for _, s, _ in components) + (bg_signal if bg_signal is not None else 0.0)
    peak = float(np.abs(mix).max())
    # Rounded down, so the stored (2-decimal) gain never lets the peak past the limit.
    mix_gain_db = math.floor(min(0.0, 20.0 * math.log10(PEAK_LIMIT / peak)) * 100) / 100 if peak > 0 else 0.0
    mix_gain = 10.0 ** (mix_gain_db / 20.0)
    lead, tail = silence_runs(mix * mix_gain)

    levels = [active_level_db(e) + mix_gain_db for _, _, e in components]
    bg_level = active_level_db(bg_energy) + mix_gain_db if bg_energy is not None else None
    events = []
    for i, (event, _, energy) in enumerate(components):
        others = [lv for j, lv in enumerate(levels) if j != i] + ([bg_level] if bg_level is not None else [])
        level = levels[i]
        loudest_other = max(others) if others else None
        if level >= LOUD_MIN_DB and (loudest_other is None or level >= loudest_other + LOUD_MARGIN_DB):
            loudness = "loud"
        elif level <= FAINT_MAX_DB or (loudest_other is not None and level <= loudest_other - FAINT_MARGIN_DB):
            loudness = "faint"
        else:
            loudness = "normal"
        drawn = event.pop("drawn_loudness")
        event.update({
            "level_db": round(level, 2),
            "loudness": loudness,
            # "in the distance" also needs the distance filter, so the word matches a duller sound.
            "distant": drawn == "faint" and loudness == "faint",
            "snr_db": round(level - bg_level, 2) if bg_level is not None else None,
            "offset": round(event["onsets"][-1] + event["length"], 3),
            "count": len(event["onsets"]),
            "audible": level >= AUDIBILITY_FLOOR_DB,
        })
        events.append(event)
    if not any(e["audible"] for e in events):
        return None
    events.sort(key=lambda e: e["onsets"][0])

    if background:
        fg_energy = sum(e for _, _, e in components)
        # A background is heard where the foreground does not cover it, for long enough to be recognised.
        unmasked = (db(bg_energy) - db(fg_energy + 1e-12) >= AUDIBLE_LOCAL_SNR_DB).sum() * FRAME / SAMPLE_RATE
        background.update({"level_db": round(bg_level, 2),
                           "audible": bool(unmasked >= BACKGROUND_AUDIBLE_SECONDS
                                           and bg_level >= AUDIBILITY_FLOOR_DB)})
    return {"duration": layout["duration"], "background": background, "events": events,
            "order": temporal_order(events), "mix_gain_db": mix_gain_db,
            "silence": {"lead": round(lead, 2), "tail": round(tail, 2)}}


def temporal_order(events: list[dict]) -> list[list[int]]:
    """Indices of events (sorted by onset) grouped into runs that overlap in time: [[0], [1, 2]] means event 0,
    then events 1 and 2 together. Overlaps under 0.25 s are heard as a sequence."""
    groups: list[list[int]] = []
    group_end = -1.0
    for i, event in enumerate(events):
        if groups and event["onsets"][0] < group_end - 0.25:
            groups[-1].append(i)
            group_end = max(group_end, event["offset"])
        else:
            groups.append([i])
            group_end = event["offset"]
    return groups


def make_scene(scene_id: str, split: str, index: int, seed: int, pool: _Pool, classes: dict, bank_root: Path,
               cfg: MixConfig = MIX, with_captions: bool = True) -> dict:
    """One scene spec, deterministic in (seed, split, index): draws again until every mentioned event is
    audible and the grammar can write five valid captions."""
    for attempt in range(cfg.max_attempts):
        rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), index, attempt]))
        spec = _measure(_draw_layout(rng, pool, classes, cfg), bank_root)
        if spec is None:
            continue
        spec = {"scene_id": scene_id, "split": split, "version": SPEC_VERSION, "seed": seed, "index": index,
                "attempt": attempt, "sample_rate": SAMPLE_RATE} | spec
        spec["captions"] = []
        if with_captions:
            try:
                spec["captions"] = write_captions(spec, classes, rng)
            except CaptionError:
                continue
        return spec
    raise SceneError(f"could not draw a valid scene {scene_id} in {cfg.max_attempts} attempts: the {split} "
                     "pool is too small or its clips too quiet; check the bank's clips for this split")


# -------------------------------------------------------------------------------------------- fixture


FIXTURE_CLASSES = {
    "bell": {"category": "things", "nouns": ["a bell", "a chime"], "verbs": ["rings", "chimes"],
             "gerunds": ["ringing", "chiming"], "background": False, "repeatable": True,
             "keywords": ["bell", "chime", "rings", "ringing", "chimes", "chiming"]},
    "knock": {"category": "domestic", "nouns": ["someone", "a person"], "verbs": ["knocks on a door",
              "knocks at a door"], "gerunds": ["knocking on a door"], "background": False, "repeatable": True,
              "keywords": ["knock", "knocks", "knocking"]},
    "alarm": {"category": "alarms", "nouns": ["an alarm", "an electronic alarm"], "verbs": ["beeps", "sounds"],
              "gerunds": ["beeping", "sounding"], "background": False, "repeatable": True,
              "keywords": ["alarm", "beeps", "beeping", "beep"]},
    "rain": {"category": "nature", "nouns": ["rain", "heavy rain"], "verbs": ["falls", "pours down"],
             "gerunds": ["falling", "pouring down"], "background": True, "repeatable": False,
             "keywords": ["rain", "falls", "falling", "pours", "pouring"]},
    "engine": {"category": "vehicles", "nouns": ["an engine", "a motor"], "verbs": ["hums", "runs", "idles"],
               "gerunds": ["humming", "running", "idling"], "background": True, "repeatable": False,
               "keywords": ["engine", "motor", "hums", "humming", "idles", "idling"]},
    "coins": {"category": "household", "nouns": ["coins", "a handful of coins"], "verbs": ["jingle", "clink"],
              "gerunds": ["jingling", "clinking"], "background": False, "repeatable": True,
              "keywords": ["coins", "jingle", "jingling", "clink", "clinking", "jingles", "clinks"]},
    "man_speaking": {"category": "speech", "nouns": ["a man"], "verbs": ["speaks", "talks"],
                     "gerunds": ["speaking", "talking"], "background": False, "repeatable": False,
                     "keywords": ["man", "male"]},
    "woman_speaking": {"category": "speech", "nouns": ["a woman"], "verbs": ["speaks", "talks"],
                       "gerunds": ["speaking", "talking"], "background": False, "repeatable": False,
                       "keywords": ["woman", "female"]},
}


def _fixture_audio(label: str, rng: np.random.Generator, voice_f0: float) -> np.ndarray:
    """Cheap synthetic stand-ins with the right *shape* (burst, texture, harmonic voice) for each class."""
    sr = SAMPLE_RATE

    def t(seconds):
        return np.arange(int(seconds * sr)) / sr

    if label == "bell":
        x = t(rng.uniform(0.6, 1.2))
        f = rng.uniform(600, 1200)
        sig = sum(np.sin(2 * np.pi * f * r * x) / (k + 1) for k, r in enumerate((1.0, 2.76, 5.4)))
        return sig * np.exp(-x * rng.uniform(3, 6))
    if label == "knock":
        hits = int(rng.integers(1, 4))
        out = np.zeros(int(0.15 * sr * hits + 0.2 * sr))
        for h in range(hits):
            burst = rng.standard_normal(int(0.05 * sr)) * np.exp(-np.arange(int(0.05 * sr)) / (0.01 * sr))
            at = int(h * 0.25 * sr)
            out[at:at + len(burst)] += np.convolve(burst, np.ones(8) / 8, mode="same")
        return out
    if label == "alarm":
        x = t(rng.uniform(0.3, 0.6))
        return np.sign(np.sin(2 * np.pi * rng.uniform(1500, 3000) * x)) * 0.5
    if label == "coins":
        out = np.zeros(int(rng.uniform(0.3, 0.6) * sr))
        for at in np.sort(rng.integers(0, len(out) - 400, 6)):
            out[at:at + 400] += np.sin(2 * np.pi * rng.uniform(3000, 6000) * np.arange(400) / sr) * np.exp(
                -np.arange(400) / 60.0)
        return out
    if label == "rain":
        noise = rng.standard_normal(int(rng.uniform(4, 8) * sr))
        drops = (rng.random(len(noise)) < 0.002) * rng.standard_normal(len(noise)) * 4
        return np.convolve(noise + drops, np.ones(3) / 3, mode="same")
    if label == "engine":
        x = t(rng.uniform(3, 6))
        f = rng.uniform(40, 80)
        sig = sum(np.sin(2 * np.pi * f * h * x) / h for h in range(1, 8))
        return sig * (1 + 0.2 * np.sin(2 * np.pi * 6 * x)) + 0.05 * rng.standard_normal(len(x))
    # speech-like: a harmonic source with syllable-rate amplitude modulation and drifting pitch
    x = t(rng.uniform(1.5, 3.0))
    f0 = voice_f0 * (1 + 0.05 * np.sin(2 * np.pi * 0.7 * x))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    sig = sum(np.sin(h * phase) / h for h in range(1, 12))
    syllables = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * x), 0, None)
    return sig * syllables


def make_fixture_bank(root: str | Path, seed: int = 0, groups_per_label: int = 6, clips_per_group: int = 2) -> Path:
    """Write a small synthetic sound bank (tones, noise bursts, hums, voice-like harmonics) with its own
    `classes.json` and `manifest.csv`, in the real bank's layout. For tests and the CI tiny preset only: these
    are not real sounds, and nothing trained on them should be shipped."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    clips = []
    for label in FIXTURE_CLASSES:
        (root / "clips" / label).mkdir(parents=True, exist_ok=True)
        for g in range(groups_per_label):
            speech = label.endswith("_speaking")
            voice_f0 = (110 if label.startswith("man") else 210) * (1 + 0.08 * g)
            for c in range(clips_per_group):
                audio = _fixture_audio(label, rng, voice_f0)
                audio = (0.5 * audio / max(np.abs(audio).max(), 1e-9)).astype(np.float32)
                clip_id = hashlib.md5(audio.tobytes()).hexdigest()[:12]
                file = f"clips/{label}/{clip_id}.flac"
                sf.write(root / file, audio, SAMPLE_RATE)
                clips.append(Clip(clip_id=clip_id, label=label, file=file, source_package="synth",
                                  source_path=f"fixture:{label}:{g}:{c}", licence="CC0-1.0",
                                  duration=round(len(audio) / SAMPLE_RATE, 3), synthetic=True,
                                  recording=f"fixture-{label}-{g}",
                                  voice=f"fixture-{label}-voice{g}" if speech else "",
                                  transcript=""))
    with open(root / "classes.json", "w", encoding="utf-8") as handle:
        json.dump(FIXTURE_CLASSES, handle, indent=1)
    write_manifest(root, clips)
    return root


# ------------------------------------------------------------------------------------------- building


def check_bank(clips: list[Clip], classes: dict, classes_path: Path) -> None:
    unknown = sorted({c.label for c in clips} - set(classes))
    if unknown:
        raise SceneError(f"manifest labels missing from the class table {classes_path}: {', '.join(unknown)}; "
                         "add them to the table or rebuild the bank with the current table")
    for label in sorted({c.label for c in clips}):
        entry = classes[label]
        missing = [key for key in ("nouns", "verbs", "gerunds") if not entry.get(key)]
        if missing:
            raise SceneError(f"class {label!r} in {classes_path} has no {', '.join(missing)}: captions need at "
                             "least one of each (mass nouns such as 'rain' are written without an article)")


def resolve_classes_path(bank: Path, explicit: str | None) -> Path:
    """The class table that names the bank's labels: explicit, else the bank's own (fixture banks carry one),
    else the project's `train/corpus/classes.json`."""
    if explicit:
        return Path(explicit)
    own = bank / "classes.json"
    return own if own.is_file() else CLASSES_PATH


def build_scenes(bank: Path, out: Path, preset: str | Preset, seed: int = 0, classes: dict | None = None,
                 classes_path: Path | None = None, render: bool = False, label_fractions=(0.1, 0.25, 0.5),
                 cfg: MixConfig = MIX, progress: bool = True) -> dict:
    """Build every split's specs (and captions) into `out`; returns the summary written to dataset.json."""
    counts = (PRESETS[preset] if isinstance(preset, str) else preset).counts()
    classes_path = classes_path or resolve_classes_path(bank, None)
    classes = classes if classes is not None else load_classes(classes_path)
    clips = read_manifest(bank)
    if not clips:
        raise SceneError(f"the sound-bank manifest {bank / MANIFEST_NAME} lists no clips; rebuild the bank")
    check_bank(clips, classes, classes_path)
    groups = assign_splits(clips, seed)
    split_clips = {s: [c for c in clips if groups[c.group] == s] for s in ("train", "val", "test")}
    split_clips["audio_only"] = split_clips["train"]   # new mixtures of train recordings, captions withheld
    for split, n in counts.items():
        if n and not split_clips[split]:
            raise SceneError(f"no recordings reach the {split} split: every class has a single recording; add "
                             f"recordings to the bank (see {bank / MANIFEST_NAME}) or ask for 0 {split} scenes")

    out.mkdir(parents=True, exist_ok=True)
    summary = {"version": SPEC_VERSION, "preset": preset if isinstance(preset, str) else "custom", "seed": seed,
               "bank": os.path.relpath(bank.resolve(), out.resolve()),
               "classes": os.path.relpath(Path(classes_path).resolve(), out.resolve()),
               "sample_rate": SAMPLE_RATE, "rendered": render, "splits": {}, "subsets": {},
               "groups": {s: sorted({c.group for c in split_clips[s]}) for s in ("train", "val", "test")}}
    started = time.perf_counter()
    for split, n in counts.items():
        pool = _make_pool(split_clips[split], classes)
        specs, t0 = [], time.perf_counter()
        for index in range(n):
            specs.append(make_scene(f"{split}_{index:06d}", split, index, seed, pool, classes, bank, cfg,
                                    with_captions=split in CAPTIONED_SPLITS))
            if progress and (index + 1) % 500 == 0:
                print(f"  {split}: {index + 1}/{n} scenes ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        _write_split(out, split, specs)
        if render:
            _render_split(out, split, specs, bank)
        summary["splits"][split] = {"scenes": len(specs), "seconds": round(sum(s["duration"] for s in specs), 1),
                                    "build_seconds": round(time.perf_counter() - t0, 1)}
        if progress:
            print(f"{split}: {len(specs)} scenes in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        if split == "train":
            for fraction in label_fractions:
                name = f"train_{round(fraction * 100):d}pct"
                # Ranked by file name with the loader's default seed, so these files are exactly
                # load_caption_set(out, "train", label_fraction=fraction).
                kept = set(label_subset([s["scene_id"] + ".flac" for s in specs], fraction))
                _write_csv(out / f"{name}.csv", [s for s in specs if s["scene_id"] + ".flac" in kept], captions=True)
                summary["subsets"][name] = {"split": "train", "fraction": fraction, "scenes": len(kept)}
    summary["build_seconds"] = round(time.perf_counter() - started, 1)
    with open(out / "dataset.json", "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=1)
    return summary


def _write_csv(path: Path, specs: list[dict], captions: bool) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name"] + ([f"caption_{i}" for i in range(1, 6)] if captions else []))
        for spec in specs:
            writer.writerow([spec["scene_id"] + ".flac"] + (spec["captions"] if captions else []))
    tmp.replace(path)


def _write_split(out: Path, split: str, specs: list[dict]) -> None:
    _write_csv(out / f"{split}.csv", specs, captions=split in CAPTIONED_SPLITS)
    tmp = out / f"{split}.jsonl.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        for spec in specs:
            handle.write(json.dumps(spec, separators=(",", ":")) + "\n")
    tmp.replace(out / f"{split}.jsonl")


def _render_split(out: Path, split: str, specs: list[dict], bank: Path) -> None:
    folder = out / "audio" / split
    folder.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        sf.write(folder / f"{spec['scene_id']}.flac", render_scene(spec, bank), SAMPLE_RATE, subtype="PCM_16")


# ------------------------------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                        help="scene counts per split: full (train 8000, val 500, test 1000, audio-only 8000), "
                             "extra (the full counts from the bank with --extra sources, "
                             f"{EXTRA_BANK}) or tiny (40/20/20/30, for CI)")
    parser.add_argument("--bank", type=Path, default=None,
                        help=f"sound-bank root with {MANIFEST_NAME} (default: the preset's, {DEFAULT_BANK} or "
                             f"{EXTRA_BANK}; the tiny preset falls back to a generated fixture bank when it is "
                             "missing)")
    parser.add_argument("--fixture-bank", action="store_true",
                        help="build from a generated synthetic fixture bank (tones, noise) instead of the real one")
    parser.add_argument("--classes", default=None,
                        help="class table JSON (default: the bank's classes.json, else train/corpus/classes.json)")
    parser.add_argument("--out", type=Path, default=None, help=f"output folder (default {DEFAULT_OUT}/<preset>)")
    parser.add_argument("--seed", type=int, default=0, help="everything random derives from this (default 0)")
    parser.add_argument("--render", action="store_true",
                        help="also write every scene as 16-bit FLAC under <out>/audio/<split>/ (default: specs "
                             "only, rendered on the fly by train/corpus/datasets.py)")
    parser.add_argument("--label-fraction", type=float, nargs="+", default=[0.1, 0.25, 0.5], metavar="F",
                        help="write nested train subsets train_<pct>pct.csv for these fractions (default 0.1 "
                             "0.25 0.5)")
    parser.add_argument("--card", type=Path, default=None,
                        help="write the dataset card here (default train/DATA.md for the full preset, none for tiny)")


def main(args: argparse.Namespace) -> int:
    for fraction in args.label_fraction:
        if not 0.0 < fraction <= 1.0:
            print(f"error: --label-fraction {fraction} is outside (0, 1]; give fractions such as 0.1 0.25",
                  file=sys.stderr)
            return 2
    out = args.out or DEFAULT_OUT / args.preset
    bank = args.bank or PRESETS[args.preset].bank
    if args.fixture_bank or (args.bank is None and args.preset == "tiny" and not (bank / MANIFEST_NAME).is_file()):
        if not args.fixture_bank:
            print(f"note: no sound bank at {bank}; using a generated synthetic fixture bank (build the real one "
                  "with `python -m train soundbank`)", file=sys.stderr)
        bank = out / FIXTURE_DIR
        if not (bank / MANIFEST_NAME).is_file():
            make_fixture_bank(bank, seed=args.seed)
    if not (bank / MANIFEST_NAME).is_file():
        build = "soundbank --extra" if args.bank is None and args.preset == "extra" else "soundbank"
        print(f"error: no sound-bank manifest at {bank / MANIFEST_NAME}; build the bank with `python -m train "
              f"{build}`, point --bank at one, or use --fixture-bank for a synthetic test bank", file=sys.stderr)
        return 2
    classes_path = resolve_classes_path(bank, args.classes)
    if not classes_path.is_file():
        print(f"error: class table {classes_path} not found; pass --classes PATH", file=sys.stderr)
        return 2
    try:
        summary = build_scenes(bank, out, args.preset, seed=args.seed, classes_path=classes_path,
                               render=args.render, label_fractions=tuple(args.label_fraction))
    except SceneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    card = args.card or (Path(__file__).resolve().parents[1] / "DATA.md" if args.preset == "full" else None)
    if card:
        write_card(out, card)
        print(f"dataset card: {card}", file=sys.stderr)
    splits = ", ".join(f"{k} {v['scenes']}" for k, v in summary["splits"].items())
    print(f"scenes in {out}: {splits} ({summary['build_seconds']} s)")
    return 0
