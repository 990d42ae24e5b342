"""Caption-set loaders: the scene corpus, Clotho and AudioCaps layouts, label fractions, clear errors."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import soundfile as sf

from train.corpus.datasets import DatasetError, item_waveform, label_subset, load_caption_set
from train.corpus.scenes import Preset, build_scenes, make_fixture_bank


def tone(path, seconds=1.0, rate=44100, channels=2):
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * 440 * t)
    sf.write(path, np.stack([wave] * channels, axis=1) if channels > 1 else wave, rate)


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    bank = make_fixture_bank(tmp_path_factory.mktemp("bank"), seed=2)
    out = tmp_path_factory.mktemp("scenes")
    build_scenes(bank, out, Preset(train=20, val=4, test=4, audio_only=6), seed=1, progress=False)
    return out


def test_scene_corpus_items_render_on_the_fly(corpus):
    items = load_caption_set(corpus, "train")
    assert len(items) == 20
    item = items[0]
    assert item.audio_path is None and len(item.captions) == 5 and item.events
    wave = item_waveform(item)
    assert wave.dtype == np.float32 and wave.ndim == 1 and len(wave) == round(item.duration * 16000)
    assert np.abs(wave).max() > 0.01


def test_audio_only_items_have_no_labels(corpus):
    items = load_caption_set(corpus, "audio_only")
    assert len(items) == 6
    assert all(item.captions == () and item.events == frozenset() for item in items)
    assert item_waveform(items[0]).size > 0


def test_label_fraction_is_nested_and_matches_the_written_subsets(corpus):
    full = load_caption_set(corpus, "train")
    ids = {f: {i.audio_id for i in load_caption_set(corpus, "train", label_fraction=f)} for f in (0.1, 0.25, 0.5)}
    assert ids[0.1] < ids[0.25] < ids[0.5] < {i.audio_id for i in full}
    assert [len(ids[f]) for f in (0.1, 0.25, 0.5)] == [math.ceil(f * 20) for f in (0.1, 0.25, 0.5)]
    # The subset files the scenes stage writes are the same subsets, readable as splits.
    assert {i.audio_id for i in load_caption_set(corpus, "train_25pct")} == ids[0.25]
    assert load_caption_set(corpus, "train_25pct")[0].scene is not None


def test_label_subset_membership_does_not_depend_on_the_others():
    ids = [f"clip{i}" for i in range(200)]
    small = set(label_subset(ids, 0.1, seed=3))
    grown = set(label_subset(ids + [f"new{i}" for i in range(50)], 0.1, seed=3))
    assert len(small) == 20 and len(small & grown) >= 15
    assert set(label_subset(ids, 0.1, seed=4)) != small
    with pytest.raises(ValueError, match="label fraction"):
        label_subset(ids, 0.0)


def test_clotho_layout(tmp_path):
    (tmp_path / "development").mkdir()
    tone(tmp_path / "development" / "a b.wav")
    tone(tmp_path / "development" / "c.wav", seconds=0.5, rate=16000, channels=1)
    write_csv(tmp_path / "clotho_captions_development.csv", ["file_name"] + [f"caption_{i}" for i in range(1, 6)],
              [["a b.wav"] + [f"a tone sounds steadily number {i}" for i in range(5)],
               ["c.wav"] + [f"a short tone number {i}" for i in range(5)]])
    items = load_caption_set(tmp_path, "train")      # train -> development
    assert [i.audio_id for i in items] == ["a b.wav", "c.wav"]
    assert items[0].captions[4] == "a tone sounds steadily number 4" and items[0].events == frozenset()
    wave = item_waveform(items[0])
    assert wave.dtype == np.float32 and abs(len(wave) - 16000) <= 1   # 44.1 kHz stereo -> 16 kHz mono


def test_audiocaps_layout_groups_rows_and_skips_missing_audio(tmp_path):
    (tmp_path / "val").mkdir()
    tone(tmp_path / "val" / "abc_30.wav")
    tone(tmp_path / "val" / "Ydef.flac", rate=16000, channels=1)
    write_csv(tmp_path / "val.csv", ["audiocap_id", "youtube_id", "start_time", "caption"],
              [[1, "abc", 30, "a tone plays"], [2, "abc", 30, "a steady beep"], [3, "def", 10, "a hum"],
               [4, "gone", 0, "this video was deleted"]])
    with pytest.warns(UserWarning, match="1 of 3 clips have no audio"):
        items = load_caption_set(tmp_path, "val")
    assert [(i.audio_id, i.captions) for i in items] == [("abc_30.wav", ("a tone plays", "a steady beep")),
                                                          ("Ydef.flac", ("a hum",))]
    assert item_waveform(items[1]).shape == (16000,)


def test_all_audio_missing_is_an_error(tmp_path):
    (tmp_path / "test").mkdir()
    write_csv(tmp_path / "test.csv", ["audiocap_id", "youtube_id", "start_time", "caption"], [[1, "x", 0, "hi"]])
    with pytest.raises(DatasetError, match="audio_dir"):
        load_caption_set(tmp_path, "test")


def test_bad_inputs_name_the_problem(tmp_path, corpus):
    with pytest.raises(DatasetError, match="no such folder"):
        load_caption_set(tmp_path / "missing", "train")
    with pytest.raises(DatasetError, match="no caption file for split 'train'"):
        load_caption_set(tmp_path, "train")
    write_csv(tmp_path / "train.csv", ["name", "caption_1"], [["x.wav", "hello there"]])
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetError, match="no file_name column"):
        load_caption_set(tmp_path, "train")
    with pytest.raises(DatasetError, match="no split 'dev'"):
        load_caption_set(corpus, "dev")
