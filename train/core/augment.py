"""Recording-chain augmentation: what changes between one recording of a sound and another, applied to training audio.

A model trained on a few thousand recordings learns their microphones, rooms and mastering along with the sounds
(the cross-source split shows it). `augment` re-records a waveform, each step with its own probability:

- **EQ**: a low shelf, a peaking band and a high shelf of +-9 dB at random frequencies (RBJ biquads), or a band
  limit (telephone-like 300-3400 Hz, or a dull 4-8 kHz low-pass);
- **reverb**: convolution with a generated room impulse response (exponentially decaying noise, RT60 0.15-1.2 s,
  a direct path and a 5-40% wet mix);
- **background noise** at 5-30 dB SNR: white, pink or brown;
- **speed**: a 0.92-1.08 resampling, which moves pitch and tempo together as a tape or a different recorder would;
- **gain**: -12 to +6 dB, then a peak guard.

Everything is drawn from the `rng` given, so a training step's batch is the same on every run (`train/core/data.py`).
"""
from __future__ import annotations

import numpy as np
import soxr
from scipy import signal

SAMPLE_RATE = 16000
PROBABILITIES = {"eq": 0.6, "reverb": 0.4, "noise": 0.4, "speed": 0.3, "gain": 0.8}


def _biquad(kind: str, freq: float, gain_db: float, q: float = 0.7) -> np.ndarray:
    """RBJ cookbook shelf/peak biquad as a second-order section [b0 b1 b2 1 a1 a2]."""
    a = 10 ** (gain_db / 40)
    w = 2 * np.pi * freq / SAMPLE_RATE
    cos, alpha = np.cos(w), np.sin(w) / (2 * q)
    if kind == "peak":
        b = [1 + alpha * a, -2 * cos, 1 - alpha * a]
        den = [1 + alpha / a, -2 * cos, 1 - alpha / a]
    else:
        root = 2 * np.sqrt(a) * alpha
        sign = 1 if kind == "low" else -1
        b = [a * ((a + 1) - sign * (a - 1) * cos + root), sign * 2 * a * ((a - 1) - sign * (a + 1) * cos),
             a * ((a + 1) - sign * (a - 1) * cos - root)]
        den = [(a + 1) + sign * (a - 1) * cos + root, -sign * 2 * ((a - 1) + sign * (a + 1) * cos),
               (a + 1) + sign * (a - 1) * cos - root]
    return np.concatenate([np.array(b) / den[0], np.array(den) / den[0]])


def equalise(wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.25:  # a band limit rather than a tilt
        if rng.random() < 0.5:
            sos = signal.butter(4, [300, 3400], btype="bandpass", fs=SAMPLE_RATE, output="sos")
        else:
            sos = signal.butter(4, rng.uniform(4000, 7500), btype="lowpass", fs=SAMPLE_RATE, output="sos")
    else:
        sos = np.stack([_biquad("low", rng.uniform(80, 400), rng.uniform(-9, 9)),
                        _biquad("peak", np.exp(rng.uniform(np.log(300), np.log(5000))), rng.uniform(-9, 9), 1.0),
                        _biquad("high", rng.uniform(3000, 7000), rng.uniform(-9, 9))])
    return signal.sosfilt(sos, wave).astype(np.float32)


def room_impulse(rng: np.random.Generator) -> np.ndarray:
    rt60 = rng.uniform(0.15, 1.2)
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    tail = signal.sosfilt(signal.butter(1, rng.uniform(2000, 7000), fs=SAMPLE_RATE, output="sos"), tail)
    tail[: int(0.003 * SAMPLE_RATE)] = 0.0  # the first reflection arrives after the direct sound
    wet = rng.uniform(0.05, 0.4)
    ir = wet * tail / (np.sqrt(np.sum(tail ** 2)) + 1e-9)
    ir[0] += 1.0 - wet
    return ir.astype(np.float32)


def coloured_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    exponent = rng.choice([0.0, 1.0, 2.0])  # white, pink, brown: power ~ 1 / f^exponent
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1] if n > 1 else 1.0
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2), n)
    return (noise / (np.std(noise) + 1e-12)).astype(np.float32)


def augment(wave: np.ndarray, rng: np.random.Generator, probabilities: dict[str, float] = PROBABILITIES) -> np.ndarray:
    """The waveform as another recording chain might have captured it (same length unless the speed changes)."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.size < 2:
        return wave
    rms = float(np.sqrt(np.mean(wave ** 2))) + 1e-9
    if rng.random() < probabilities["speed"]:
        factor = rng.uniform(0.92, 1.08)
        wave = soxr.resample(wave, SAMPLE_RATE * factor, SAMPLE_RATE).astype(np.float32)
    if rng.random() < probabilities["eq"]:
        wave = equalise(wave, rng)
    if rng.random() < probabilities["reverb"]:
        wave = signal.fftconvolve(wave, room_impulse(rng))[: len(wave)].astype(np.float32)
    if rng.random() < probabilities["noise"]:
        snr_db = rng.uniform(5, 30)
        wave = wave + coloured_noise(len(wave), rng) * rms * 10 ** (-snr_db / 20)
    if rng.random() < probabilities["gain"]:
        wave = wave * 10 ** (rng.uniform(-12, 6) / 20)
    peak = float(np.abs(wave).max())
    return (wave / peak * 0.99 if peak > 0.99 else wave).astype(np.float32)
