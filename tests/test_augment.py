"""Recording-chain augmentation: deterministic, same length (but for speed), finite, bounded, and wired into batches."""
import dataclasses

import numpy as np
import pytest
from conftest import tone

from train.core import augment as aug


def test_augment_is_deterministic_and_bounded():
    wave = tone(3.0)
    a = aug.augment(wave, np.random.default_rng(5))
    b = aug.augment(wave, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    for seed in range(30):
        out = aug.augment(wave, np.random.default_rng(seed))
        assert out.dtype == np.float32 and np.isfinite(out).all() and np.abs(out).max() <= 0.99 + 1e-6
        assert abs(len(out) - len(wave)) <= 0.09 * len(wave)


def test_each_step_changes_the_sound():
    wave = tone(2.0, freq=1000)
    only = lambda name: {k: float(k == name) for k in aug.PROBABILITIES}  # noqa: E731
    for name in ("eq", "reverb", "noise", "gain"):
        out = aug.augment(wave, np.random.default_rng(1), only(name))
        assert len(out) == len(wave) and not np.allclose(out, wave, atol=1e-4), name
    fast = aug.augment(wave, np.random.default_rng(1), only("speed"))
    assert len(fast) != len(wave)
    assert np.array_equal(aug.augment(wave, np.random.default_rng(1), only("none")), wave)


def test_room_impulse_and_noise():
    ir = aug.room_impulse(np.random.default_rng(0))
    assert ir[0] > 0.5 and np.isfinite(ir).all()
    noise = aug.coloured_noise(16000, np.random.default_rng(0))
    assert noise.std() == pytest.approx(1.0, rel=1e-3)


def test_audio_batch_augments_the_configured_share(monkeypatch):
    from train.core import data
    from train.core.config import PRESETS
    from train.corpus.datasets import CaptionItem

    waves = {f"c{i}": tone(1.0, freq=300 + 100 * i) for i in range(8)}
    monkeypatch.setattr(data, "item_waveform", lambda item: waves[item.audio_id])
    items = [CaptionItem(audio_id=k, captions=("x",)) for k in waves]
    config = PRESETS["tiny"]
    clean = data.audio_batch(items, np.arange(8), config, 0, 64, 160)["waveforms"]
    mixed = data.audio_batch(items, np.arange(8), dataclasses.replace(config, augment=1.0), 0, 64, 160)["waveforms"]
    n = min(clean.shape[1], mixed.shape[1])
    changed = [not np.allclose(clean[i, :n].numpy(), mixed[i, :n].numpy()) for i in range(8)]
    assert sum(changed) >= 6  # every clip was re-recorded; a draw may leave one nearly as it was
