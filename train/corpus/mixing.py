"""Rendering and measuring a scene: the audio of a scene spec (`render_scene`, a pure function of the spec and the
sound bank, so scenes are rendered on the fly instead of stored) and the measurements the builder captions from
(levels, bursts, masking, silence). The thresholds are shared by the builder and the tests, which re-measure rendered
audio with them.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000
FRAME = 320                     # 20 ms analysis frames for levels, masking and silence

# Measurement thresholds: shared by the builder and the tests, which re-measure rendered audio with them.
ACTIVE_RANGE_DB = 30.0      # a frame counts toward a clip's level when within this of its loudest frame
AUDIBLE_LOCAL_SNR_DB = 0.0  # an event frame is unmasked when the event is at least as strong as the rest
AUDIBLE_FRACTION = 0.5      # ... in this fraction of its active frames,
AUDIBLE_SECONDS = 0.3       # ... or for at least this long
BACKGROUND_AUDIBLE_SECONDS = 2.0
AUDIBILITY_FLOOR_DB = -55.0  # quieter than this (dBFS active level) is not mentioned at all
SILENCE_DB = -60.0           # a frame quieter than this (dBFS) is silent
SILENCE_MIN_SECONDS = 2.0    # leading/trailing silence worth describing
LOUD_MIN_DB = -22.0          # "loudly": at least this loud, and LOUD_MARGIN_DB above everything else
LOUD_MARGIN_DB = 6.0
FAINT_MAX_DB = -38.0         # "faintly": at most this loud, or FAINT_MARGIN_DB under something else
FAINT_MARGIN_DB = 10.0
PEAK_LIMIT = 0.891           # -1 dBFS: the mix is scaled down (never up) to stay below it
FADE_SECONDS = 0.01          # fades on crops, so cutting a long clip never clicks
LOOP_CROSSFADE = 0.1


class SceneError(ValueError):
    """The inputs cannot make a scene corpus; the message names the problem and the fix."""


# ---------------------------------------------------------------------------------------------- clips


class _ClipCache:
    """Decoded clips, least recently used dropped first, bounded in bytes (the bank is ~1 GB as float32)."""

    def __init__(self, max_bytes: int = 768 << 20):
        self.max_bytes = max_bytes
        self.items: OrderedDict[str, np.ndarray] = OrderedDict()
        self.bytes = 0
        self.lock = threading.Lock()   # the trainer renders batches in a background thread

    def get(self, path: Path) -> np.ndarray:
        key = str(path)
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        audio = _read_clip(path)
        with self.lock:
            if key not in self.items:
                self.items[key] = audio
                self.bytes += audio.nbytes
            while self.bytes > self.max_bytes and len(self.items) > 1:
                _, old = self.items.popitem(last=False)
                self.bytes -= old.nbytes
        return audio


def _read_clip(path: Path) -> np.ndarray:
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise SceneError(f"cannot read sound-bank clip {path}: {err}; rebuild the bank with "
                         "`python -m train soundbank`") from None
    audio = audio.mean(axis=1)
    if rate != SAMPLE_RATE:  # the bank is 16 kHz by contract; a hand-added clip may not be
        audio = librosa.resample(audio, orig_sr=rate, target_sr=SAMPLE_RATE)
    return np.ascontiguousarray(audio, dtype=np.float32)


_CACHE = _ClipCache()


def load_clip(bank_root: str | Path, file: str) -> np.ndarray:
    path = Path(bank_root) / file
    if not path.is_file():
        raise SceneError(f"sound-bank clip {path} is missing: the scene specs were built from a different bank; "
                         "rebuild the bank or the scenes (`python -m train scenes`)")
    return _CACHE.get(path)


# --------------------------------------------------------------------------------------------- render


def _fade(segment: np.ndarray) -> np.ndarray:
    n = min(int(FADE_SECONDS * SAMPLE_RATE), len(segment) // 2)
    if n > 0:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        segment[:n] *= ramp
        segment[-n:] *= ramp[::-1]
    return segment


def _lowpass(segment: np.ndarray, cutoff_hz: float) -> np.ndarray:
    from scipy.signal import butter, sosfilt  # slow to import, and only low-passed components need it

    sos = butter(2, cutoff_hz, fs=SAMPLE_RATE, output="sos")
    return sosfilt(sos, segment).astype(np.float32)


def _loop(clip: np.ndarray, start: int, n: int) -> np.ndarray:
    """`n` samples of `clip` from `start`, wrapping around with a crossfade so the seam does not click."""
    if len(clip) - start >= n:
        return clip[start:start + n].copy()
    xf = min(int(LOOP_CROSSFADE * SAMPLE_RATE), len(clip) // 4)
    out = clip[start:].copy()
    while len(out) < n:
        nxt = clip.copy()
        k = min(xf, len(out))   # the first piece may be shorter than the crossfade when `start` is near the end
        if k:
            ramp = np.linspace(0.0, 1.0, k, dtype=np.float32)
            out[-k:] = out[-k:] * ramp[::-1] + nxt[:k] * ramp
            nxt = nxt[k:]
        out = np.concatenate([out, nxt])
    return out[:n]


def event_segment(component: dict, bank_root: str | Path) -> np.ndarray:
    """One occurrence of a foreground event at unit gain: the crop, distance filter and fades."""
    clip = load_clip(bank_root, component["file"])
    start = int(round(component["start"] * SAMPLE_RATE))
    length = int(round(component["length"] * SAMPLE_RATE))
    segment = clip[start:start + length].copy()
    if component.get("lowpass_hz"):
        segment = _lowpass(segment, component["lowpass_hz"])
    return _fade(segment)


def render_component(component: dict, n: int, bank_root: str | Path, background: bool = False) -> np.ndarray:
    """One component of a scene at its gain (before the scene's peak guard), `n` samples long."""
    gain = np.float32(10.0 ** (component["gain_db"] / 20.0))
    if background:
        clip = load_clip(bank_root, component["file"])
        start = int(round(component["start"] * SAMPLE_RATE)) % max(len(clip), 1)
        return _fade(_loop(clip, start, n)) * gain
    out = np.zeros(n, dtype=np.float32)
    segment = event_segment(component, bank_root) * gain
    for onset in component["onsets"]:
        at = int(round(onset * SAMPLE_RATE))
        take = min(len(segment), n - at)
        if take > 0:
            out[at:at + take] += segment[:take]
    return out


def render_scene(spec: dict, bank_root: str | Path) -> np.ndarray:
    """The scene's audio, float32 mono 16 kHz: a pure function of `spec` and the bank (no randomness)."""
    n = int(round(spec["duration"] * SAMPLE_RATE))
    mix = np.zeros(n, dtype=np.float32)
    if spec.get("background"):
        mix += render_component(spec["background"], n, bank_root, background=True)
    for event in spec["events"]:
        mix += render_component(event, n, bank_root)
    mix *= np.float32(10.0 ** (spec["mix_gain_db"] / 20.0))
    return mix


# ------------------------------------------------------------------------------------------ measuring


def frame_energy(signal: np.ndarray) -> np.ndarray:
    """Mean square per 20 ms frame (the last partial frame is padded with zeros)."""
    n = -(-len(signal) // FRAME) * FRAME
    padded = np.zeros(n, dtype=np.float32)
    padded[:len(signal)] = signal
    frames = padded.reshape(-1, FRAME)
    # einsum squares and sums in one pass: no float64 copy of every scene component, the build's hot spot.
    return np.einsum("ij,ij->i", frames, frames).astype(np.float64) / FRAME


def db(power: np.ndarray | float) -> np.ndarray | float:
    return 10.0 * np.log10(np.maximum(power, 1e-12))


def active_level_db(energy: np.ndarray) -> float:
    """Level of the frames that carry the sound (within ACTIVE_RANGE_DB of the loudest), so silence padding
    in a clip does not make it look quieter than it sounds."""
    if energy.max() <= 1e-12:
        return -120.0
    active = energy[db(energy) >= db(energy.max()) - ACTIVE_RANGE_DB]
    return float(db(active.mean()))


def count_bursts(energy: np.ndarray) -> int:
    """Separate bursts in a crop: runs above (peak - 20 dB) split by >= 120 ms below it. A clip of three barks
    counts 3, so a scene that places it once is not captioned "barks once"."""
    above = db(energy) >= db(energy.max()) - 20.0
    bursts, gap, inside = 0, 0, False
    for flag in above:
        if flag:
            if not inside:
                bursts += 1
            inside, gap = True, 0
        else:
            gap += 1
            if gap * FRAME / SAMPLE_RATE >= 0.12:
                inside = False
    return bursts


def silence_runs(mix: np.ndarray) -> tuple[float, float]:
    """Seconds of silence at the start and at the end of the mix."""
    quiet = db(frame_energy(mix)) < SILENCE_DB
    if quiet.all():
        return len(quiet) * FRAME / SAMPLE_RATE, 0.0
    lead = int(np.argmin(quiet))
    tail = int(np.argmin(quiet[::-1]))
    return lead * FRAME / SAMPLE_RATE, tail * FRAME / SAMPLE_RATE


def audibility(target: np.ndarray, others: np.ndarray) -> tuple[float, float]:
    """(fraction, seconds) of the target's active frames where it is not masked by `others` (frame energies)."""
    if target.max() <= 1e-12:
        return 0.0, 0.0
    active = db(target) >= db(target.max()) - 20.0
    unmasked = db(target[active]) - db(others[active] + 1e-12) >= AUDIBLE_LOCAL_SNR_DB
    return float(unmasked.mean()), float(unmasked.sum() * FRAME / SAMPLE_RATE)
