"""Scene corpus: splits, determinism, specs that match the rendered audio, the CLI. Fixture bank only (seconds)."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from train.corpus import mixing, scenes
from train.corpus.grammar import mentioned_labels
from train.corpus.manifest import read_manifest
from train.corpus.scenes import (
    FIXTURE_CLASSES,
    SAMPLE_RATE,
    Preset,
    SceneError,
    build_scenes,
    db,
    frame_energy,
    make_fixture_bank,
    render_component,
    render_scene,
)

SMALL = Preset(train=24, val=10, test=10, audio_only=12)


@pytest.fixture(scope="session")
def bank(tmp_path_factory):
    return make_fixture_bank(tmp_path_factory.mktemp("bank"), seed=3)


@pytest.fixture(scope="session")
def corpus(bank, tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    build_scenes(bank, out, SMALL, seed=7, progress=False)
    return out


def read_jsonl(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def test_splits_are_disjoint_by_recording_and_voice(bank, corpus):
    info = json.loads((corpus / "dataset.json").read_text())
    groups = {split: set(info["groups"][split]) for split in ("train", "val", "test")}
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]
    clips = {c.clip_id: c for c in read_manifest(bank)}
    voices = {split: set() for split in scenes.SPLITS}
    for split in scenes.SPLITS:
        allowed = groups["train" if split == "audio_only" else split]
        specs = read_jsonl(corpus / f"{split}.jsonl")
        assert len(specs) == SMALL.counts()[split]
        for spec in specs:
            parts = spec["events"] + ([spec["background"]] if spec["background"] else [])
            for part in parts:
                clip = clips[part["clip_id"]]
                assert clip.group in allowed, (split, spec["scene_id"], clip.group)
                if clip.voice:
                    voices[split].add(clip.voice)
    assert voices["train"] and voices["test"], "the fixture should put speech in both train and test"
    assert not voices["train"] & voices["test"] and not voices["train"] & voices["val"]
    assert voices["audio_only"] <= groups["train"]   # a voice is its own group


def test_every_class_reaches_every_split(corpus):
    # Six recordings per fixture class: the per-class assignment must hold some out for val and test.
    info = json.loads((corpus / "dataset.json").read_text())
    for split in ("val", "test"):
        labels = {g.split("-")[1] for g in info["groups"][split]}
        assert labels == set(FIXTURE_CLASSES)


def test_same_seed_same_specs_and_audio(bank, corpus, tmp_path):
    build_scenes(bank, tmp_path, SMALL, seed=7, progress=False)
    for split in scenes.SPLITS:
        assert (tmp_path / f"{split}.jsonl").read_text() == (corpus / f"{split}.jsonl").read_text()
    spec = read_jsonl(corpus / "train.jsonl")[0]
    assert np.array_equal(render_scene(spec, bank), render_scene(json.loads(json.dumps(spec)), bank))


def test_other_seed_other_scenes_and_index_stability(bank, corpus, tmp_path):
    build_scenes(bank, tmp_path, Preset(4, 1, 1, 1), seed=8, progress=False)
    assert (tmp_path / "train.jsonl").read_text() != (corpus / "train.jsonl").read_text()[:10_000]
    # A scene depends on (seed, split, index) only: a smaller build reproduces the first scenes of a larger one.
    build_scenes(bank, tmp_path, Preset(4, 1, 1, 1), seed=7, progress=False)
    assert read_jsonl(tmp_path / "train.jsonl") == read_jsonl(corpus / "train.jsonl")[:4]


def test_scene_audio_matches_metadata(bank, corpus):
    specs = [s for split in scenes.SPLITS for s in read_jsonl(corpus / f"{split}.jsonl")]
    checked_quiet = 0
    for spec in specs:
        audio = render_scene(spec, bank)
        assert audio.dtype == np.float32 and len(audio) == round(spec["duration"] * SAMPLE_RATE)
        assert np.abs(audio).max() <= mixing.PEAK_LIMIT + 1e-4
        n, gain = len(audio), 10 ** (spec["mix_gain_db"] / 20)
        for event in spec["events"]:
            # The stored level is what the event measures in the final mix.
            alone = render_component(event, n, bank) * gain
            assert mixing.active_level_db(frame_energy(alone)) == pytest.approx(event["level_db"], abs=0.05)
            assert event["onsets"] == sorted(event["onsets"]) and event["offset"] <= spec["duration"] + 1e-6
        assert [e["onsets"][0] for e in spec["events"]] == sorted(e["onsets"][0] for e in spec["events"])
        if spec["background"] is None:
            # Energy where the events are, silence elsewhere.
            inside = np.zeros(n, bool)
            for event in spec["events"]:
                for onset in event["onsets"]:
                    a = int(round(onset * SAMPLE_RATE))
                    inside[a:a + int(round(event["length"] * SAMPLE_RATE))] = True
            if (~inside).sum() > SAMPLE_RATE:
                outside_db = db(np.mean(audio[~inside].astype(np.float64) ** 2))
                inside_db = db(np.mean(audio[inside].astype(np.float64) ** 2))
                assert outside_db < mixing.SILENCE_DB and inside_db > outside_db + 30
                checked_quiet += 1
            lead = spec["silence"]["lead"]
            first = spec["events"][0]["onsets"][0]
            # Nothing sounds before the first event, and the first event is heard within its own span.
            assert first - 0.02 <= lead <= first + spec["events"][0]["length"]
    assert checked_quiet >= 5


def _layout(bank, events, background=None, duration=10.0):
    clips = {}
    for clip in read_manifest(bank):
        clips.setdefault(clip.label, clip)
    def part(label, **kw):
        clip = clips[label]
        return {"label": label, "clip_id": clip.clip_id, "file": clip.file, "start": 0.0} | kw
    layout_events = [part(label, length=min(length, clips[label].duration), onsets=onsets, lowpass_hz=None,
                          drawn_loudness="normal", level_target_db=level)
                     for label, onsets, length, level in events]
    bg = part(background[0], level_target_db=background[1]) if background else None
    return {"duration": duration, "background": bg, "events": layout_events}


def test_masked_event_is_dropped_and_masked_background_not_mentioned(bank):
    # A faint alarm under a loud engine that covers the whole scene cannot be heard: it must leave the spec.
    layout = _layout(bank, [("engine", [0.0, 3.0, 6.0], 3.0, -14.0), ("alarm", [2.0], 0.4, -50.0)],
                     background=("rain", -60.0))
    spec = scenes._measure(layout, bank)
    assert [e["label"] for e in spec["events"]] == ["engine"]
    assert spec["background"]["audible"] is False
    spec |= {"scene_id": "masked", "captions": []}
    captions = scenes_captions(spec)
    for caption in captions:
        assert mentioned_labels(caption, FIXTURE_CLASSES) == {"engine"}, caption


def test_quiet_background_between_events_is_audible(bank):
    layout = _layout(bank, [("bell", [1.0], 1.0, -26.0)], background=("rain", -40.0))
    spec = scenes._measure(layout, bank)
    assert spec["background"]["audible"] is True
    assert spec["events"][0]["loudness"] == "normal" and spec["events"][0]["snr_db"] > 0
    for caption in scenes_captions(spec | {"scene_id": "bg"}):
        assert mentioned_labels(caption, FIXTURE_CLASSES) == {"bell", "rain"}, caption


def scenes_captions(spec):
    from train.corpus.grammar import write_captions
    return write_captions(spec, FIXTURE_CLASSES, np.random.default_rng(0))


def test_label_fraction_subsets_are_nested(corpus):
    import csv
    def ids(name):
        with open(corpus / f"{name}.csv", newline="") as handle:
            return [row["file_name"] for row in csv.DictReader(handle)]
    train, s10, s25, s50 = ids("train"), ids("train_10pct"), ids("train_25pct"), ids("train_50pct")
    assert set(s10) < set(s25) < set(s50) < set(train)
    assert (len(s10), len(s25), len(s50)) == (3, 6, 12)   # ceil of 10/25/50% of 24


def test_cli_fixture_bank_render_and_errors(tmp_path, capsys, monkeypatch):
    parser = argparse.ArgumentParser()
    scenes.add_arguments(parser)
    monkeypatch.setattr(scenes, "PRESETS", {**scenes.PRESETS, "tiny": Preset(3, 2, 2, 2)})
    out = tmp_path / "tiny"
    args = parser.parse_args(["--preset", "tiny", "--fixture-bank", "--out", str(out), "--render",
                              "--label-fraction", "0.5"])
    assert scenes.main(args) == 0
    from train.corpus.datasets import item_waveform, load_caption_set
    items = load_caption_set(out, "test")
    assert len(items) == 2 and all(item.audio_path is not None for item in items)
    rendered = item_waveform(items[0])
    fresh = render_scene(items[0].scene, items[0].bank_root)
    assert len(rendered) == len(fresh) and np.abs(rendered - fresh).max() < 1e-3   # 16-bit FLAC
    assert (out / "train_50pct.csv").is_file() and not (out / "train_10pct.csv").exists()

    assert scenes.main(parser.parse_args(["--preset", "full", "--bank", str(tmp_path / "nope"),
                                          "--out", str(tmp_path / "x")])) == 2
    assert "no sound-bank manifest" in capsys.readouterr().err
    assert scenes.main(parser.parse_args(["--label-fraction", "1.5", "--out", str(tmp_path / "y")])) == 2
    assert "--label-fraction 1.5" in capsys.readouterr().err


def test_extra_preset_mixes_from_the_extra_bank(tmp_path, capsys, monkeypatch):
    """The extra preset: the full counts, from the bank that `soundbank --extra` builds; missing, it says so."""
    assert scenes.PRESETS["extra"].counts() == scenes.PRESETS["full"].counts()
    assert scenes.PRESETS["extra"].bank == scenes.EXTRA_BANK != scenes.PRESETS["full"].bank
    monkeypatch.setattr(scenes, "PRESETS", {**scenes.PRESETS, "extra": Preset(3, 2, 2, 2, bank=tmp_path / "bank")})
    parser = argparse.ArgumentParser()
    scenes.add_arguments(parser)
    assert scenes.main(parser.parse_args(["--preset", "extra", "--out", str(tmp_path / "x")])) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "bank") in err and "python -m train soundbank --extra" in err
    make_fixture_bank(tmp_path / "bank", seed=1)
    assert scenes.main(parser.parse_args(["--preset", "extra", "--out", str(tmp_path / "x")])) == 0
    meta = json.loads((tmp_path / "x" / "dataset.json").read_text())
    assert (tmp_path / "x" / meta["bank"]).resolve() == (tmp_path / "bank").resolve()


def test_a_run_can_keep_a_saved_tokenizer(corpus, tmp_path):
    """tokenizer_from: the run's tokenizer is that file (same ids), if it knows the corpus's words; else an error."""
    from dataclasses import replace

    from eacap.tokenizer import CaptionTokenizer
    from train.core.config import PRESETS
    from train.core.models import build_tokenizer
    captions = [c for spec in read_jsonl(corpus / "train.jsonl") for c in spec["captions"]]
    saved = CaptionTokenizer.train(reversed(captions))
    saved.save(tmp_path / "saved.json")
    config = replace(PRESETS["tiny"], scenes=str(corpus), run_dir=tmp_path / "run",
                     tokenizer_from=str(tmp_path / "saved.json"))
    kept = build_tokenizer(config)
    assert kept.tokenizer.get_vocab() == saved.tokenizer.get_vocab()
    assert (tmp_path / "run" / "tokenizer.json").is_file()
    CaptionTokenizer.train(["a dog barks"]).save(tmp_path / "small.json")
    other = replace(config, run_dir=tmp_path / "run2", tokenizer_from=str(tmp_path / "small.json"))
    with pytest.raises(ValueError, match="small.json does not know"):
        build_tokenizer(other)


def test_unknown_label_is_a_clear_error(bank, tmp_path):
    classes = {k: v for k, v in FIXTURE_CLASSES.items() if k != "bell"}
    with pytest.raises(SceneError, match="bell"):
        build_scenes(bank, tmp_path, SMALL, classes=classes, progress=False)


def test_dataset_card_counts_the_corpus(corpus, tmp_path):
    from train.corpus.datacard import write_card
    text = write_card(corpus, tmp_path / "DATA.md").read_text()
    assert "| train | 24 |" in text and "| audio_only | 12 |" in text and "withheld" in text
    for label in FIXTURE_CLASSES:
        assert f"| {label} |" in text
    vocab = {w for s in read_jsonl(corpus / "train.jsonl") for c in s["captions"] for w in tokens(c)}
    assert f"{len(vocab)} in train" in text
    assert "| synth |" in text and "CC0-1.0" in text


def tokens(caption):
    import re
    return re.findall(r"[a-z']+", caption.lower())
