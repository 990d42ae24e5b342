"""train/core/ensemble.py: two captioners read as one, and the evaluation stages' reading options."""
from __future__ import annotations

import argparse

import numpy as np
import pytest

from eacap import CaptionModel, CaptionTokenizer
from eacap.decoding import DecodingOptions
from eacap.models.presets import teacher_config
from tests.conftest import make_tiny_models, tone
from train.core.config import PRESETS
from train.core.ensemble import Ensemble, add_reading_arguments, load_reading


@pytest.fixture(scope="module")
def pair():
    first, _ = make_tiny_models(seed=0)
    second, _ = make_tiny_models(seed=1)  # same captions, so the same tokenizer; other weights
    return first, second


def clips() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [tone(1.0, freq=300), (0.1 * rng.standard_normal(24000)).astype(np.float32), tone(0.6, freq=2000)]


def texts(captions) -> list[tuple[str, float]]:
    return [(c.text, round(c.score, 4)) for c in captions]


@pytest.mark.parametrize("beam", [1, 3])
def test_weights_zero_and_one_give_each_model_alone(pair, beam):
    first, second = pair
    options = DecodingOptions(beam_size=beam, max_length=12)
    alone_first = texts(first.caption_batch(clips(), options))
    alone_second = texts(second.caption_batch(clips(), options))
    assert alone_first != alone_second  # otherwise the test could not tell the two apart
    assert texts(Ensemble(first, second, 0.0).caption_batch(clips(), options)) == alone_first
    assert texts(Ensemble(first, second, 1.0).caption_batch(clips(), options)) == alone_second


def test_a_model_with_itself_is_the_model_and_a_mixture_scores_between(pair):
    first, second = pair
    options = DecodingOptions(beam_size=3, max_length=12)
    alone = texts(first.caption_batch(clips(), options))
    assert texts(Ensemble(first, first, 0.5).caption_batch(clips(), options)) == alone
    mixed = Ensemble(first, second, 0.5).caption_many(clips(), options, batch_size=2)
    assert len(mixed) == 3 and all(c.tokens and np.isfinite(c.score) for c in mixed)
    assert mixed[0].duration == pytest.approx(1.0)


def test_an_ensemble_needs_one_vocabulary_and_a_weight_in_range(pair):
    first, _ = pair
    other = CaptionTokenizer.train(["a cat meows", "a bell rings twice"])
    stranger = CaptionModel(teacher_config(other.vocab_size, "tiny"), other).eval()
    with pytest.raises(ValueError, match="same tokenizer"):
        Ensemble(first, stranger, 0.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        Ensemble(first, first, 1.5)


def test_reading_options_name_the_results_and_refuse_tokens_without_a_tagger(tiny_checkpoints):
    teacher, student = tiny_checkpoints
    parser = argparse.ArgumentParser()
    add_reading_arguments(parser)
    model, suffix = load_reading(PRESETS["full"], teacher, parser.parse_args([]))
    assert isinstance(model, CaptionModel) and suffix == ""
    model, suffix = load_reading(PRESETS["full"], teacher, parser.parse_args(
        ["--ensemble-with", teacher, "--ensemble-weight", "0.25"]))
    assert isinstance(model, Ensemble) and model.weight == 0.25 and suffix == "_with_teacher_w0.25"
    with pytest.raises(SystemExit, match="has no tagger"):
        load_reading(PRESETS["full"], student, parser.parse_args(["--tokens-only"]))
