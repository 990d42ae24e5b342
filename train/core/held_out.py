"""The cross-source test: real recordings from whole packages never used in training, and a model scored on them.

The scene corpus's own test split shares packages, recording chains and caption grammar with training, so it
cannot tell whether a model hears a *sound* or a *source*. This split is made only of the held-out packages
(`soundbank.held_out_sources()`, built by `python -m train soundbank --held-out` into data/soundbank_heldout), whose
labels come from the reviewed table `train/corpus/soundbank_labels.tsv`:

- **singles**: every held-out clip alone (its first 10 s), at the bank's level;
- **mixes**: pairs of clips of different classes, the second 0-6 dB under the first and starting 0-3 s in, cut to
  10 s. Drawn once from a fixed seed, so the split is the same on every machine.

Scored with what a user notices (`eacap.metrics.sound_naming`): the share of clips whose caption names every sound
in it (any keyword of each class, the event-F1 machinery), event precision/recall, the share of captions that name
one sound twice, and SBERT-sim against plain references written from the class table ("a dog barks while rain
falls"). `score` writes `results/realworld_<model>.json`, which `train report` puts first. Run by
`python -m train realworld` and, after the test split, by `python -m train evaluate`.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from eacap.decoding import DecodingOptions
from eacap.metrics import sbert_sim, sound_naming
from eacap.sounds import keyword_patterns, mentions
from train.core.data import run_path
from train.core.runs import checkpoint_run
from train.corpus.manifest import load_classes, read_manifest

HELD_OUT_BANK = Path("data/soundbank_heldout")
SAMPLE_RATE = 16000
SECONDS = 10.0
MIXES = 80
SEED = 2024


def build_items(bank: Path = HELD_OUT_BANK, mixes: int = MIXES, seed: int = SEED) -> list[dict]:
    """The split's items: {id, kind, clips: [{file, label, offset, gain_db}], events} (files relative to `bank`)."""
    try:
        clips = read_manifest(bank)
    except FileNotFoundError:
        raise FileNotFoundError(f"no held-out sound bank at {bank}: build it with "
                                "`python -m train soundbank --held-out`") from None
    clips = sorted(clips, key=lambda c: c.clip_id)
    items = [{"id": f"single_{c.clip_id}", "kind": "single", "source": c.source_package,
              "clips": [{"file": c.file, "label": c.label, "offset": 0.0, "gain_db": 0.0}], "events": [c.label]}
             for c in clips]
    rng = np.random.default_rng(seed)
    seen = set()
    for _ in range(mixes * 20):
        if len(seen) >= mixes or len({c.label for c in clips}) < 2:
            break
        a, b = (clips[i] for i in rng.choice(len(clips), 2, replace=False))
        if a.label == b.label or (a.clip_id, b.clip_id) in seen:
            continue
        seen.add((a.clip_id, b.clip_id))
        items.append({"id": f"mix_{a.clip_id}_{b.clip_id}", "kind": "mix",
                      "source": "+".join(sorted({a.source_package, b.source_package})),
                      "clips": [{"file": a.file, "label": a.label, "offset": 0.0, "gain_db": 0.0},
                                {"file": b.file, "label": b.label, "offset": round(float(rng.uniform(0, 3)), 2),
                                 "gain_db": round(float(-rng.uniform(0, 6)), 1)}],
                      "events": sorted({a.label, b.label})})
    return items


def render(item: dict, bank: Path = HELD_OUT_BANK) -> np.ndarray:
    """The item's 16 kHz mono audio: its clips added at their offsets and gains, cut to SECONDS."""
    parts = []
    for clip in item["clips"]:
        audio, rate = sf.read(bank / clip["file"], dtype="float32", always_2d=False)
        if rate != SAMPLE_RATE:
            raise ValueError(f"{bank / clip['file']}: {rate} Hz, but the sound bank is {SAMPLE_RATE} Hz; rebuild it")
        start = round(clip["offset"] * SAMPLE_RATE)
        parts.append((start, audio * 10 ** (clip["gain_db"] / 20)))
    length = min(round(SECONDS * SAMPLE_RATE), max(start + len(a) for start, a in parts))
    mix = np.zeros(length, np.float32)
    for start, audio in parts:
        piece = audio[: max(0, length - start)]
        mix[start: start + len(piece)] += piece
    peak = float(np.abs(mix).max())
    return mix / peak * 0.99 if peak > 0.99 else mix  # a peak guard, as the scene mixer has


def reference(events: list[str], classes: dict[str, dict]) -> str:
    """A plain caption of the item's sounds from the class table: "a dog barks", "a dog barks while rain falls"."""
    phrases = [f"{classes[e]['nouns'][0]} {classes[e]['verbs'][0]}".strip() for e in events]
    return " while ".join(phrases)


def evaluate(model, items: list[dict], options: DecodingOptions, bank: Path = HELD_OUT_BANK,
             batch_size: int = 16) -> dict:
    """Caption every item and score it; returns the metrics, per-kind breakdown and every caption."""
    classes = {k: v for k, v in load_classes().items() if not k.startswith("_")}
    keywords = {name: entry["keywords"] for name, entry in classes.items()}
    start = time.perf_counter()
    captioned = model.caption_many((render(item, bank) for item in items), options, batch_size=batch_size)
    captions = {item["id"]: caption.text for item, caption in zip(items, captioned)}
    seconds = time.perf_counter() - start
    events = {item["id"]: set(item["events"]) for item in items}

    def score(ids: list[str]) -> dict:
        if not ids:
            return {}
        naming = sound_naming({i: captions[i] for i in ids}, {i: events[i] for i in ids}, keywords)
        sbert = sbert_sim([captions[i] for i in ids], [[reference(sorted(events[i]), classes)] for i in ids])
        return {"n": len(ids), "names_all": naming["names_all"], "names_any": naming["names_any"],
                "repeats": naming["repeats"], "event_precision": naming["precision"],
                "event_recall": naming["recall"], "event_f1": naming["f1"], "sbert_sim": sbert}

    ids = [item["id"] for item in items]
    return {"all": score(ids), "single": score([i["id"] for i in items if i["kind"] == "single"]),
            "mix": score([i["id"] for i in items if i["kind"] == "mix"]),
            "sources": sorted({i["source"] for i in items if i["kind"] == "single"}),
            "seconds": seconds, "options": options.__dict__,
            "captions": [{"id": i["id"], "events": i["events"], "caption": captions[i["id"]]} for i in items]}


def score(config, name: str, model, options: DecodingOptions, bank: Path = HELD_OUT_BANK, tag: str = "",
          items: list[dict] | None = None) -> dict:
    """Caption and score the split with `model`, write results/realworld_<run><tag>.json and print the line."""
    result = evaluate(model, items if items is not None else build_items(bank), options, bank)
    label = checkpoint_run(name) or name
    out = run_path(config, "results", f"realworld_{Path(label).name}{tag}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": name, **result}, indent=1) + "\n")
    a = result["all"]
    print(f"{name}: cross-source: names every sound {a['names_all']:.1%} of {a['n']} clips (singles "
          f"{result['single']['names_all']:.1%}, mixes {result['mix'].get('names_all', 0):.1%}), event P/R "
          f"{a['event_precision']:.2f}/{a['event_recall']:.2f}, names one twice {a['repeats']:.1%}, "
          f"SBERT {a['sbert_sim']:.3f} -> {out}")
    return result


def named_every_sound(result: dict) -> dict[str, bool]:
    """Clip id -> whether its caption in a `realworld` result names every sound of the clip."""
    keywords = {name: entry["keywords"] for name, entry in load_classes().items() if not name.startswith("_")}
    patterns, _ = keyword_patterns(keywords)
    return {c["id"]: set(c["events"]) <= {m.sound for m in mentions(c["caption"], patterns)}
            for c in result["captions"]}


def paired(a: dict, b: dict) -> dict:
    """Two `realworld` results over the same clips, clip by clip: how many clips only `a` names fully, only `b`,
    both, neither, and the exact two-sided McNemar p-value (a binomial test on the clips where they differ: the
    chance of a split at least this uneven if neither model were better)."""
    first, second = named_every_sound(a), named_every_sound(b)
    if set(first) != set(second):
        raise ValueError("the two results are not over the same clips: run both on the same held-out bank")
    only_a = sum(first[i] and not second[i] for i in first)
    only_b = sum(second[i] and not first[i] for i in first)
    both = sum(first[i] and second[i] for i in first)
    n, k = only_a + only_b, min(only_a, only_b)
    p = min(1.0, 2 * sum(math.comb(n, j) for j in range(k + 1)) / 2 ** n) if n else 1.0
    return {"clips": len(first), "only_a": only_a, "only_b": only_b, "both": both,
            "neither": len(first) - only_a - only_b - both, "p_value": p}
