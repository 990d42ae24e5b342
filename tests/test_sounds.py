"""No caption names a sound twice: the metric (`repeated_classes`), the decoding rule (`SoundWords`,
`DecodingOptions.no_repeat_sounds`) and the sound keywords a checkpoint carries."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_tiny_models, tone

from eacap import load_model, save_checkpoint
from eacap.checkpoint import CheckpointError
from eacap.decoding import DecodingOptions
from eacap.metrics import repeated_classes
from eacap.sounds import SoundWords

KEYWORDS = {"dog": ["dog", "barks", "puppy"], "rain": ["rain", "falls"], "birds": ["birds", "chirp"],
            "wind": ["wind", "blows"], "car": ["car", "engine"], "horn": ["horn", "engine"],
            "man": ["man", "speaks"], "woman": ["woman", "talks"], "door": ["door", "closes"],
            "water": ["water", "stream", "flows"]}


@pytest.mark.parametrize("caption, repeated", [
    ("a songbird chirps steadily as a bird is chirping", {"birds"}),       # a synonym in a later clause
    ("a frog croaks multiple times as a toad croaks", {"frog"}),
    ("the sound of a fan humming and a ventilator humming at the same time", {"fan"}),
    ("a rain shower patters in the background while rain pours down", {"rain"}),
    ("the sound of a rooster crowing followed by a cockerel crowing", {"rooster"}),
    ("a dog barks and barks", {"dog"}),                                      # the same keyword twice
    ("the sea breaks on the shore", set()),                                   # two keywords, one clause
    ("a gust of wind howls", set()),
    ("a dog barks while rain falls", set()),
    ("a bird chirps in the background while a cricket chirps", set()),        # one verb, two sounds
])
def test_repeated_classes_counts_a_sound_named_in_two_clauses(caption, repeated):
    from train.corpus.manifest import load_classes

    keywords = {name: entry["keywords"] for name, entry in load_classes().items() if not name.startswith("_")}
    assert repeated_classes(caption, keywords) == repeated


def test_block_named_bans_a_named_sound_after_a_clause_word():
    vocab = {w: i for i, w in enumerate("<pad> a dog puppy barks while rain falls engine wind".split())}
    words = SoundWords.build(vocab, KEYWORDS)
    assert words.token_class[vocab["engine"]] == -1   # two classes own it: it names neither
    assert bool(words.clause[vocab["while"]]) and not bool(words.clause[vocab["dog"]])

    def banned(*caption: str) -> set[str]:
        history = torch.tensor([[vocab[w] for w in caption]])
        logp = words.block_named(torch.zeros(1, len(vocab)), history)
        return {w for w, i in vocab.items() if logp[0, i] == float("-inf")}

    assert banned("a", "dog") == {"dog"}                           # same clause: a second keyword may follow
    assert banned("a", "dog", "barks", "while", "a") == {"dog", "puppy", "barks"}   # a new clause: the dog is named
    assert banned("rain", "falls", "while", "a", "dog") == {"rain", "falls", "dog"}
    assert banned("a", "engine", "while") == set()
    empty = words.block_named(torch.zeros(2, len(vocab)), torch.zeros(2, 0, dtype=torch.long))
    assert not torch.isinf(empty).any()


@pytest.mark.parametrize("beam_size", [1, 3])
def test_captions_never_name_a_sound_twice(beam_size):
    _, student = make_tiny_models(seed=3)
    student.sound_keywords = KEYWORDS
    waves = [tone(2.0, freq=f) for f in (200, 700, 3000)] + [0.1 * np.random.default_rng(1).standard_normal(32000)]
    free = DecodingOptions(beam_size=beam_size, max_length=24, no_repeat_ngram_size=0, no_repeat_sounds=False)
    ruled = DecodingOptions(beam_size=beam_size, max_length=24, no_repeat_ngram_size=0)
    before = [c.text for c in student.caption_batch(waves, free)]
    after = [c.text for c in student.caption_batch(waves, ruled)]
    assert not any(repeated_classes(text, KEYWORDS) for text in after), after
    # A random tiny model babbles: without the rule it names sounds again, so the rule did something.
    assert any(repeated_classes(text, KEYWORDS) for text in before), before
    student.sound_keywords = None  # no keywords: the rule has nothing to go on and changes nothing
    assert [c.text for c in student.caption_batch(waves, ruled)] == before


def test_checkpoints_carry_the_sound_keywords(tmp_path):
    _, student = make_tiny_models()
    plain = load_model(save_checkpoint(student, tmp_path / "plain"))
    assert plain.sound_keywords is None and plain.sound_words is None
    student.sound_keywords = KEYWORDS
    folder = save_checkpoint(student, tmp_path / "with")
    loaded = load_model(folder)
    assert loaded.sound_keywords == KEYWORDS and loaded.sound_words.classes == tuple(sorted(KEYWORDS))
    config = json.loads((folder / "config.json").read_text())
    config["sound_keywords"] = {"dog": "dog"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"sound keywords of 'dog' must be a list.*re-export"):
        load_model(folder)
    with pytest.raises(ValueError, match="must map each class"):
        student.sound_keywords = ["dog"]


def test_shipped_checkpoints_carry_the_class_table_keywords():
    from pathlib import Path

    from train.core.config import PRESETS
    from train.core.data import class_keywords

    for role in ("teacher", "student"):
        path = Path("checkpoints") / role / "config.json"
        if not path.is_file():
            pytest.skip("no shipped checkpoints")
        assert json.loads(path.read_text())["sound_keywords"] == class_keywords(PRESETS["full"])
