"""Tests for eacap.metrics: caption metrics against hand-computed and pycocoevalcap values, and event F1.

Tests marked ``slow`` start the METEOR JVM or load the Sentence-BERT model (about 10-20 s each on a busy 2-core
machine); they share one module-scoped run so the whole file stays well under a minute.
"""

import math
import shutil
import subprocess

import numpy as np
import pytest

from eacap import metrics
from eacap.metrics import UNAVAILABLE_NOTE, caption_metrics, event_f1, simple_tokenize

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="needs java (PTB tokenizer / METEOR)")

# A hand-made corpus: 3 clips, 2 references each, with case and punctuation for the tokenizer to remove.
PREDICTIONS = {"c1": "A dog barks while cars pass by.", "c2": "Rain falls on a roof", "c3": "a man speaks"}
REFERENCES = {
    "c1": ["A dog is barking, as cars drive past.", "Cars pass by and a dog barks."],
    "c2": ["Heavy rain falls on a metal roof.", "Rain is pouring onto a roof."],
    "c3": ["A man is talking quietly.", "A person speaks while birds chirp."],
}
# METEOR of the corpus above as pycocoevalcap 1.2 (meteor-1.5.jar, PTB-tokenized input) computes it.
TOY_METEOR = 0.38598


@pytest.fixture
def no_java(monkeypatch):
    """Pretend Java is not installed, and fail loudly if anything still tries to start a process."""
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)

    def no_process(*args, **kwargs):
        raise AssertionError(f"a subprocess was started without java: {args}")

    monkeypatch.setattr(subprocess, "Popen", no_process)


@pytest.fixture(scope="module")
def full_scores():
    """All metrics on the toy corpus, METEOR and SBERT included: the one expensive call of this file."""
    if shutil.which("java") is None:
        pytest.skip("needs java for METEOR")
    return caption_metrics(PREDICTIONS, REFERENCES)


def test_bleu_and_rouge_match_hand_computed_values(no_java):
    # Candidate "a dog barks" (c = 3) against references of 6 and 5 tokens.
    # Every candidate 1-, 2- and 3-gram is in the first reference, so those precisions are 1 and BLEU-1..3 equal the
    # brevity penalty exp(1 - r/c), with r the closest reference length, 5.
    # ROUGE-L (pycocoevalcap): LCS with ref 1 = 3 tokens (P 3/3, R 3/6), with ref 2 = 1 ("dog"; P 1/3, R 1/5); it takes
    # the best P (1) and the best R (1/2) separately, then F_beta with beta 1.2: 2.44 * 0.5 / (0.5 + 1.44) = 1.22/1.94.
    scores = caption_metrics(
        {"only": "A dog barks."},
        {"only": ["a dog barks at a cat", "The dog is barking loudly!"]},
        meteor=False,
        sbert=False,
    )
    brevity_penalty = math.exp(1 - 5 / 3)
    for n in (1, 2, 3):
        assert scores[f"bleu_{n}"] == pytest.approx(brevity_penalty, abs=1e-6)
    # No candidate 4-gram: pycocoevalcap smooths that precision to 1e-9 / 1e-9 * ... ~ 1e-6, so BLEU-4 collapses.
    assert scores["bleu_4"] < 0.05
    assert scores["rouge_l"] == pytest.approx(1.22 / 1.94, abs=1e-9)
    # With one clip the IDF of every n-gram is log(1) = 0; the function says so instead of leaving a silent 0.
    assert scores["cider_d"] == 0.0
    assert any("single clip" in note for note in scores["notes"])


@needs_java
def test_corpus_scores_match_pycocoevalcap():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    scores = caption_metrics(PREDICTIONS, REFERENCES, meteor=False, sbert=False)

    # The reference pipeline: the COCO caption evaluation recipe, PTB-tokenize then score.
    tokenizer = PTBTokenizer()
    res = tokenizer.tokenize({k: [{"caption": v}] for k, v in PREDICTIONS.items()})
    gts = tokenizer.tokenize({k: [{"caption": r} for r in refs] for k, refs in REFERENCES.items()})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    expected = {f"bleu_{n}": bleu[n - 1] for n in (1, 2, 3, 4)}
    expected["rouge_l"] = Rouge().compute_score(gts, res)[0]
    expected["cider_d"] = Cider().compute_score(gts, res)[0]

    for key, value in expected.items():
        assert scores[key] == pytest.approx(value, abs=1e-9), key
    # A real corpus: several clips, so CIDEr-D is informative (and well above 1 for these close captions).
    assert scores["cider_d"] > 1.0
    assert not any("single clip" in note for note in scores["notes"])


def test_identical_captions_score_one(no_java):
    caption = "birds are chirping loudly in the morning"
    scores = caption_metrics({"a": caption, "b": "a car engine idles"},
                             {"a": [caption], "b": ["A car engine idles."]}, meteor=False, sbert=False)
    for n in (1, 2, 3, 4):
        assert scores[f"bleu_{n}"] == pytest.approx(1.0, abs=1e-6)
    assert scores["rouge_l"] == pytest.approx(1.0)


def test_empty_prediction_scores_zero_rather_than_failing(no_java):
    scores = caption_metrics({"a": "", "b": "rain falls"}, {"a": ["a dog barks"], "b": ["rain falls"]},
                             meteor=False, sbert=False)
    assert scores["rouge_l"] == pytest.approx(0.5)  # mean of 0 (empty) and 1 (exact)


def test_without_java_meteor_is_skipped_with_a_note(no_java):
    scores = caption_metrics(PREDICTIONS, REFERENCES, sbert=False)
    assert "meteor" not in scores
    notes = " ".join(scores["notes"])
    assert "METEOR skipped: java not found" in notes
    assert "apt-get install default-jre-headless" in notes
    assert "pure-Python" in notes  # the tokenizer fallback is reported too
    assert {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider_d"} <= scores.keys()


def test_meteor_and_sbert_can_be_switched_off(no_java):
    scores = caption_metrics(PREDICTIONS, REFERENCES, meteor=False, sbert=False)
    assert "meteor" not in scores and "sbert_sim" not in scores
    assert any("meteor=False" in note for note in scores["notes"])
    assert any("sbert=False" in note for note in scores["notes"])
    assert scores["notes"][-1] == UNAVAILABLE_NOTE


def test_ptb_failure_falls_back_to_python_tokenizer(monkeypatch):
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    def read_only_install(self, captions):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: "/usr/bin/java")
    monkeypatch.setattr(PTBTokenizer, "tokenize", read_only_install)
    scores = caption_metrics(PREDICTIONS, REFERENCES, meteor=False, sbert=False)
    assert any("PTB tokenizer failed (PermissionError" in note for note in scores["notes"])
    assert 0.0 < scores["bleu_1"] <= 1.0


@needs_java
def test_simple_tokenize_matches_ptb_on_typical_captions():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    captions = [
        "A dog's barking, then a car passes by.",
        "Rain falls on a tin roof; thunder rumbles!",
        "People don't talk -- a high-pitched whistle, twice.",
        'A man speaks "loudly" at 3.5 kHz & a bird chirps...',
        "Water   drips\ninto a sink",
        "It's a cat's meow, isn't it? They're, we've, I'll, he'd, I'm",
        "Someone can't stop; 100% sure",
        "O'clock bells ring 12 times; two men\u2019s voices",
        "Cars' horns honk: beep/beep",
        "",
    ]
    ptb = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
    for i, caption in enumerate(captions):
        assert simple_tokenize(caption) == ptb[i][0], caption


def test_simple_tokenize_hand_examples():
    assert simple_tokenize("A Dog's barking -- LOUDLY!") == "a dog 's barking loudly"
    assert simple_tokenize("Birds don't stop.") == "birds do n't stop"


@pytest.mark.parametrize(
    "predictions, references, error",
    [
        ({"a": "x"}, {"b": ["x"]}, "same clip ids"),
        ({}, {}, "empty"),
        ({"a": "x"}, {"a": []}, "at least one caption"),
        ({"a": "x"}, {"a": ["fine", "  "]}, "no empty ones"),
    ],
)
def test_caption_input_errors_name_the_problem(predictions, references, error):
    with pytest.raises(ValueError, match=error):
        caption_metrics(predictions, references, meteor=False, sbert=False)


def test_references_must_be_lists_not_strings():
    with pytest.raises(TypeError, match=r"references\['a'\] must be a list"):
        caption_metrics({"a": "a dog"}, {"a": "a dog"}, meteor=False, sbert=False)


@pytest.mark.slow
def test_meteor_matches_pycocoevalcap(full_scores):
    assert full_scores["meteor"] == pytest.approx(TOY_METEOR, abs=1e-4)
    # Only the offline-impossible metrics are reported as missing.
    assert full_scores["notes"] == [UNAVAILABLE_NOTE]


@pytest.mark.slow
def test_sbert_sim_is_mean_cosine_over_references_then_clips(full_scores):
    model = metrics._sbert_model()  # cached by the fixture's call, so no second load
    per_clip = []
    per_clip_best = []
    for clip, candidate in PREDICTIONS.items():
        embeddings = model.encode([candidate, *REFERENCES[clip]])
        cand, refs = embeddings[0], embeddings[1:]
        cosines = refs @ cand / (np.linalg.norm(refs, axis=1) * np.linalg.norm(cand))
        per_clip.append(cosines.mean())
        per_clip_best.append(cosines.max())
    assert full_scores["sbert_sim"] == pytest.approx(float(np.mean(per_clip)), abs=1e-5)
    # The aac-metrics definition (mean over references), not the best-reference variant.
    assert full_scores["sbert_sim"] < float(np.mean(per_clip_best)) - 1e-3
    assert 0.5 < full_scores["sbert_sim"] < 1.0  # close paraphrases


@pytest.mark.slow
def test_sbert_sim_of_identical_captions_is_one(no_java):
    caption = "a dog barks twice in a quiet room"
    scores = caption_metrics({"a": caption}, {"a": [caption, caption]}, meteor=False)
    assert scores["sbert_sim"] == pytest.approx(1.0, abs=1e-5)


# Event F1 ---------------------------------------------------------------------------------------------------------

KEYWORDS = {
    "dog": ["dog", "dogs", "barking", "barks"],
    "car": ["car", "cars", "engine"],
    "car_horn": ["car horn", "horn", "honks"],
    "rain": ["Rain", "raining"],  # keywords are lower-cased, like captions
    "bird": ["bird", "birds", "chirping"],
    "insect": ["insect", "cricket", "chirping"],  # "chirping" is ambiguous: bird or insect
    "speech": ["man speaks", "talking"],
    "wind": ["wind"],  # never in truth nor predicted: left out of macro-F1
}


def test_event_f1_hand_made_case():
    predictions = {
        "c1": "A dog is barking while a car horn honks.",  # dog, car_horn; "car" inside "car horn" is not car
        "c2": "Rain falls and cars pass by",  # rain (TP), car (FP); bird missed
        "c3": "Something is chirping in a catalogue of dogsled sounds",  # ambiguous + no whole-word match: nothing
        "c4": "a man   speaks as birds sing",  # phrase across several spaces
    }
    events = {"c1": {"dog", "car_horn"}, "c2": {"rain", "bird"}, "c3": {"insect"}, "c4": {"speech", "bird"}}
    result = event_f1(predictions, events, KEYWORDS)

    # TP: dog, car_horn, rain, speech, bird (c4) = 5; FP: car (c2) = 1; FN: bird (c2), insect (c3) = 2.
    assert result["precision"] == pytest.approx(5 / 6)
    assert result["recall"] == pytest.approx(5 / 7)
    assert result["f1"] == pytest.approx(10 / 13)
    # Per-class F1 over the 7 classes that occur: dog, car_horn, rain, speech 1; bird 2/3; car 0; insect 0.
    assert result["macro_f1"] == pytest.approx((4 + 2 / 3) / 7)
    assert result["per_class"]["bird"] == {
        "tp": 1, "fp": 0, "fn": 1, "support": 2, "precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3)
    }
    assert result["per_class"]["car"] == {
        "tp": 0, "fp": 1, "fn": 0, "support": 0, "precision": 0.0, "recall": 0.0, "f1": 0.0
    }
    assert result["per_class"]["insect"]["fn"] == 1
    assert result["per_class"]["wind"] == {
        "tp": 0, "fp": 0, "fn": 0, "support": 0, "precision": 0.0, "recall": 0.0, "f1": 0.0
    }
    assert result["n_clips"] == 4
    assert result["ambiguous_keywords"] == ["chirping"]


def test_event_f1_perfect_and_empty():
    perfect = event_f1({"a": "Raining; a DOG barks"}, {"a": {"rain", "dog"}}, KEYWORDS)
    assert (perfect["precision"], perfect["recall"], perfect["f1"], perfect["macro_f1"]) == (1.0, 1.0, 1.0, 1.0)
    # Nothing to find and nothing named: zero denominators give 0, not NaN.
    silent = event_f1({"a": "silence"}, {"a": set()}, KEYWORDS)
    assert (silent["precision"], silent["recall"], silent["f1"], silent["macro_f1"]) == (0.0, 0.0, 0.0, 0.0)


def test_event_f1_errors():
    with pytest.raises(ValueError, match="no keywords"):
        event_f1({"a": "a dog"}, {"a": {"dog", "siren"}}, KEYWORDS)
    with pytest.raises(ValueError, match="same clip ids"):
        event_f1({"a": "a dog"}, {"b": {"dog"}}, KEYWORDS)
    with pytest.raises(TypeError, match="list of keywords"):
        event_f1({"a": "a dog"}, {"a": {"dog"}}, {"dog": "dog"})
