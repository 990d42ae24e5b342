"""Captions: correct English, five different ones, only and all of what is audible, learnable words."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from train.corpus.grammar import CaptionError, caption_problems, mentioned_labels, write_captions
from train.corpus.scenes import FIXTURE_CLASSES, Preset, build_scenes, make_fixture_bank

ARTICLES_OK = {"a", "an", "the", "and", "of", "in", "on", "at", "to", "is", "it", "by"}


@pytest.fixture(scope="module")
def specs(tmp_path_factory):
    bank = make_fixture_bank(tmp_path_factory.mktemp("bank"), seed=5)
    out = tmp_path_factory.mktemp("scenes")
    build_scenes(bank, out, Preset(train=60, val=15, test=15, audio_only=0), seed=11, progress=False)
    rows = []
    for split in ("train", "val", "test"):
        with open(out / f"{split}.jsonl", encoding="utf-8") as handle:
            rows += [json.loads(line) for line in handle]
    return rows


def heard(spec):
    labels = {e["label"] for e in spec["events"] if e["audible"]}
    if spec["background"] and spec["background"]["audible"]:
        labels.add(spec["background"]["label"])
    return labels


def tokens(caption):
    return re.findall(r"[a-z']+", caption.lower())


def test_five_distinct_captions_of_8_to_20_words(specs):
    for spec in specs:
        assert len(spec["captions"]) == 5 and len(set(spec["captions"])) == 5, spec["captions"]
        for caption in spec["captions"]:
            assert 8 <= len(tokens(caption)) <= 20, caption
            assert caption[0].isupper() and caption.endswith(".") and "  " not in caption and " ," not in caption


def test_no_repeated_content_word(specs):
    for spec in specs:
        for caption in spec["captions"]:
            content = [w for w in tokens(caption) if w not in ARTICLES_OK]
            assert len(content) == len(set(content)), caption


def test_articles_match_the_next_sound(specs):
    for spec in specs:
        for caption in spec["captions"]:
            words = tokens(caption)
            for article, nxt in zip(words, words[1:]):
                if article == "a":
                    assert nxt[0] not in "aeiou", caption
                if article == "an":
                    assert nxt[0] in "aeiou", caption


# The fixture table's subjects with the verb forms they take, written out by hand (not by train.grammar).
SUBJECT_VERBS = {
    "coins": ["jingle", "clink", "jingling", "clinking"],
    "a handful of coins": ["jingles", "clinks", "jingling", "clinking"],
}


def test_subjects_agree_with_their_verbs(specs):
    # Every noun phrase of the table is followed by one of its own verbs in the right number (or a gerund),
    # and no base form ("a bell ring", "rain fall") appears anywhere.
    base_forms = {"speak", "talk", "ring", "beep", "fall", "pour", "hum", "idle", "knock"}
    plural_seen = singular_coins_seen = 0
    for spec in specs:
        for caption in spec["captions"]:
            text = caption.lower()
            assert not base_forms & set(tokens(caption)), caption
            for label in heard(spec):
                entry = FIXTURE_CLASSES[label]
                taken: list[tuple[int, int]] = []
                for noun in sorted(entry["nouns"], key=len, reverse=True):
                    for match in re.finditer(rf"\b{re.escape(noun)}\b", text):
                        if any(a <= match.start() < b for a, b in taken):
                            continue   # "coins" inside "a handful of coins"
                        taken.append(match.span())
                        rest = text[match.end():].lstrip()
                        allowed = SUBJECT_VERBS.get(noun, entry["verbs"] + entry["gerunds"])
                        assert any(rest.startswith(v + " ") or rest.startswith(v + ".") or
                                   rest.startswith(v + ",") for v in allowed), caption
                        plural_seen += noun == "coins"
                        singular_coins_seen += noun == "a handful of coins"
                assert taken, (label, caption)
    assert plural_seen and singular_coins_seen


def test_captions_mention_exactly_what_is_audible(specs):
    # Masked backgrounds and events are exercised directly in test_scenes; here every caption of every scene
    # names all heard classes and no other.
    for spec in specs:
        audible = heard(spec)
        for caption in spec["captions"]:
            assert mentioned_labels(caption, FIXTURE_CLASSES) == audible, (caption, audible)
    assert sum(1 for s in specs if s["background"]) > 10


def _spec(events, background=None, lead=0.0, tail=0.0, duration=10.0):
    full = []
    for label, onsets, length, loudness, distant, count in events:
        full.append({"label": label, "onsets": onsets, "length": length, "offset": onsets[-1] + length,
                     "loudness": loudness, "distant": distant, "count": count, "audible": True})
    from train.corpus.scenes import temporal_order
    return {"scene_id": "t", "duration": duration, "events": full, "order": temporal_order(full),
            "background": background, "silence": {"lead": lead, "tail": tail}}


def test_counts_loudness_and_order_words():
    spec = _spec([("bell", [1.0, 2.5], 1.0, "loud", False, 2), ("alarm", [6.0], 0.4, "faint", True, 1)],
                 lead=1.0, tail=3.0)
    for caption in write_captions(spec, FIXTURE_CLASSES, np.random.default_rng(1)):
        low = caption.lower()
        assert "twice" in low or "two times" in low, caption
        assert any(w in low for w in ("loudly", "nearby", "close by")), caption
        assert any(w in low for w in ("faintly", "quietly", "softly", "in the distance", "far away")), caption
        # the bell comes first: any order word must put it first
        bell = min(low.find(w) for w in ("bell", "chime") if w in low)
        assert bell < low.index("alarm"), caption
        assert not ("while" in low or " as " in low or "same time" in low), caption   # they do not overlap


def test_overlap_words_and_many_repetitions():
    spec = _spec([("engine", [0.0], 8.5, "normal", False, None), ("knock", [2.0, 3.0, 4.0, 5.0], 0.4,
                                                                   "normal", False, 4)])
    for caption in write_captions(spec, FIXTURE_CLASSES, np.random.default_rng(2)):
        low = caption.lower()
        assert any(w in low for w in ("while", " as ", "same time", "accompanied", " and ")), caption
        assert any(w in low for w in ("repeatedly", "several times", "multiple times")), caption
        assert "then" not in tokens(caption), caption


def test_background_named_only_when_audible():
    bell = [("bell", [1.0], 1.0, "normal", False, 1)]
    heard_bg = _spec(bell, background={"label": "rain", "audible": True})
    masked_bg = _spec(bell, background={"label": "rain", "audible": False}, lead=1.0, tail=8.0)
    for caption in write_captions(heard_bg, FIXTURE_CLASSES, np.random.default_rng(3)):
        assert "rain" in caption.lower() and "silen" not in caption.lower(), caption
    for caption in write_captions(masked_bg, FIXTURE_CLASSES, np.random.default_rng(3)):
        assert "rain" not in caption.lower(), caption


def test_inaudible_event_never_named():
    spec = _spec([("bell", [1.0], 1.0, "normal", False, 1), ("alarm", [1.2], 0.4, "faint", False, 1)], tail=7.0)
    spec["events"][1]["audible"] = False
    for caption in write_captions(spec, FIXTURE_CLASSES, np.random.default_rng(4)):
        assert "alarm" not in caption.lower(), caption


def test_nothing_to_say_is_an_error():
    spec = _spec([("bell", [1.0], 1.0, "normal", False, 1)])
    spec["events"][0]["audible"] = False
    with pytest.raises(CaptionError, match="no audible event"):
        write_captions(spec, FIXTURE_CLASSES, np.random.default_rng(0))


@pytest.mark.parametrize("caption, problem", [
    ("A alarm beeps twice while heavy rain falls outside.", "should be 'an alarm'"),
    ("An bell rings twice while heavy rain falls outside.", "should be 'a bell'"),
    ("A bell rings while a bell rings and rain falls.", "repeats 'bell'"),
    ("The sound of an alarm sounding while rain falls.", "repeats 'sounding'"),
    ("A chime chimes twice while heavy rain falls outside.", "repeats 'chimes'"),
    ("With drums drumming in the background, a dog barks twice.", "repeats 'drumming'"),
    ("A heartbeat beats steadily while a dog barks twice outside.", "repeats 'beats'"),
    ("Glass breaks and more glasses break while rain falls.", "repeats 'glasses'"),
    ("A bell rings.", "3 words"),
])
def test_caption_problems_are_named(caption, problem):
    assert any(problem in p for p in caption_problems(caption)), caption_problems(caption)


def test_good_caption_has_no_problems():
    assert caption_problems("An hour of rain falls while a bell rings once in the distance.") == []
