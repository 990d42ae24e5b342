"""Audio input: any file, upload or array in, float32 mono 16 kHz out, or one clear error.

Every model in eacap hears the same thing: a 1-D float32 waveform at SAMPLE_RATE, at most
MAX_SECONDS long. `load_audio` is the single door to that. It accepts

- a path (str or os.PathLike) to a WAV, FLAC, OGG or MP3 file,
- bytes (the content of an uploaded file),
- a numpy array or torch tensor with its `sample_rate`,
- a Gradio-style tuple `(rate, array)` as `gr.Audio(type="numpy")` gives it
  (`(array, rate)`, as librosa.load returns it, is accepted too).

Bad input raises `AudioError` (a ValueError) whose message names the input and says what to do.
Things that are odd but still captionable (cut to the window, silence) are not errors: they are
listed in `Audio.warnings` so the caller can show them.

Arrays are (samples,), (samples, channels) or (channels, samples). There is no reliable way to tell
the last two apart from the data, so the channel axis is the smaller dimension (ties count as
(samples, channels), the soundfile/Gradio layout), and it must be at most MAX_CHANNELS long:
a (40, 50) array is refused rather than guessed at.
"""

import io
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16000
MAX_SECONDS = 30.0  # model window
MIN_SECONDS = 0.1  # below this there is too little sound to describe (10 feature frames at a 10 ms hop)
MIN_RATE, MAX_RATE = 8000, 192000  # telephone audio to high-resolution studio audio
MAX_CHANNELS = 32
# Inputs longer than this are refused, not cut: an hour-long file is almost surely the wrong
# file, and captioning only its first 30 s would quietly misrepresent it.
MAX_SOURCE_SECONDS = 3600.0
SILENCE_DBFS = -80.0
SILENCE_CAPTION = "silence: no sound can be heard"

FORMATS_HINT = "convert it to WAV, FLAC, OGG or MP3"


class AudioError(ValueError):
    """The input cannot be turned into audio a model can caption; the message says why and what to do."""


@dataclass
class Audio:
    waveform: np.ndarray  # float32, mono, SAMPLE_RATE, 1-D, finite; levels kept (peak may exceed 1)
    sample_rate: int  # always SAMPLE_RATE
    duration: float  # seconds of `waveform`
    source_duration: float  # seconds before cutting
    source_rate: int
    source_channels: int
    warnings: list[str] = field(default_factory=list)
    name: str = "<array>"  # file name, "<bytes>" or "<array>", for messages


def load_audio(
    source,
    sample_rate: int | None = None,
    *,
    max_seconds: float = MAX_SECONDS,
    name: str | None = None,
) -> Audio:
    """Load `source` as float32 mono SAMPLE_RATE audio, cut to the first `max_seconds`.

    `sample_rate` is the rate of an array or tensor `source` (required for them). Files and
    bytes carry their own rate: leave it out, or it must match the file's.
    `name` replaces the default name used in messages (the file name, "<bytes>", "<array>").
    """
    if not MIN_SECONDS <= max_seconds <= MAX_SOURCE_SECONDS:
        raise ValueError(f"max_seconds must be within {MIN_SECONDS}-{MAX_SOURCE_SECONDS:g} s, got {max_seconds}")
    if source is None:
        raise AudioError(f"{name or 'input'}: no audio was given; upload or record a sound")

    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        name = name or path.name or str(path)
        _check_path(path, name)
        mono, rate, channels, source_frames, warnings = _read(path, name, max_seconds)
        _check_given_rate(sample_rate, rate, name)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        name = name or "<bytes>"
        if len(source) == 0:
            raise AudioError(f"{name}: the data is empty (0 bytes); upload the audio file again")
        mono, rate, channels, source_frames, warnings = _read(io.BytesIO(source), name, max_seconds)
        _check_given_rate(sample_rate, rate, name)
    else:
        name = name or "<array>"
        if isinstance(source, tuple):
            source, sample_rate = _untuple(source, sample_rate, name)
        samples, rate, source_frames = _from_array(source, sample_rate, name, max_seconds)
        mono, channels, warnings = downmix(samples), samples.shape[1], []

    return _finish(mono, channels, rate, source_frames, name, warnings)


class AudioStream:
    """A recording read a stretch at a time, for captioning files longer than the model's window.

    `open_stream(source)` checks what `load_audio` checks of the whole file (format, rate, channels, the 1-hour
    limit) without decoding it; `read(start, seconds)` then decodes, downmixes and resamples just that stretch, so
    memory does not grow with the length of the file. Arrays and bytes already in memory are loaded whole.
    Use it as a context manager: it holds the file open.
    """

    def __init__(self, source, sample_rate: int | None = None, *, name: str | None = None):
        self._file = self._audio = None
        self.warnings: list[str] = []
        if isinstance(source, (str, os.PathLike)):
            path = Path(source).expanduser()
            self.name = name or path.name or str(path)
            _check_path(path, self.name)
            _check_given_rate(sample_rate, self._open(path), self.name)
        else:
            self._audio = load_audio(source, sample_rate, max_seconds=MAX_SOURCE_SECONDS, name=name)
            self.name, self.duration = self._audio.name, self._audio.duration
            self.source_rate = self._audio.source_rate
            self.warnings = [w for w in self._audio.warnings if not w.startswith("the audio is silent")]

    def _open(self, path: Path) -> int:
        try:
            self._file = sf.SoundFile(path)
        except sf.LibsndfileError as err:
            raise AudioError(f"{self.name}: not readable as audio ({err.error_string.rstrip('.')}); "
                             f"{FORMATS_HINT}") from err
        except (sf.SoundFileError, OSError) as err:
            raise AudioError(f"{self.name}: cannot read the file ({err}); {FORMATS_HINT}") from err
        rate, frames = self._file.samplerate, self._file.frames
        try:
            _check_rate(rate, self.name)
            _check_channels(self._file.channels, self.name)
            _check_not_too_long(frames, rate, self.name)
            if frames / rate < MIN_SECONDS:
                raise AudioError(f"{self.name}: only {frames / rate:.3g} s of audio; record at least {MIN_SECONDS:g} s")
        except AudioError:
            self.close()
            raise
        self.source_rate, self.duration = rate, frames / rate
        warning = truncation_warning(promised_frames(path, frames, self._file.format == "MPEG"), frames, rate)
        self.warnings += [warning] if warning else []
        return rate

    def read(self, start: float, seconds: float) -> np.ndarray:
        """float32 mono SAMPLE_RATE audio of [start, start + seconds) (shorter at the end of the file)."""
        if self._audio is not None:
            wave = self._audio.waveform
            return wave[round(start * SAMPLE_RATE): round((start + seconds) * SAMPLE_RATE)]
        rate = self.source_rate
        if not 0 <= start < self.duration:
            raise ValueError(f"start {start:g} s is outside the {self.duration:.1f} s of {self.name}")
        try:
            self._file.seek(round(start * rate))
            mono = _read_mono(self._file, round(seconds * rate), keep_partial=False)
        except (sf.LibsndfileError, sf.SoundFileError, OSError, RuntimeError) as err:
            raise AudioError(f"{self.name}: decoding failed at {start:.1f} s ({err}); the file may be damaged, "
                             f"{FORMATS_HINT} again") from err
        short = len(mono) < round(seconds * rate) - max(1, rate // 100)
        if short and not any("shorter" in w for w in self.warnings):
            self.warnings.append(f"the file ended early: nothing could be read after "
                                 f"{start + len(mono) / rate:.1f} s of the {self.duration:.1f} s its header gives; "
                                 "it may be cut off")
        if len(mono) == 0:
            return np.zeros(round(MIN_SECONDS * SAMPLE_RATE), dtype=np.float32)  # heard (and captioned) as silence
        if not np.isfinite(mono).all():  # a NaN or infinity in any channel is one in the mix
            raise AudioError(f"{self.name}: it contains NaN or infinite samples near {start:.1f} s; re-export it")
        if rate != SAMPLE_RATE:
            mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
        return np.ascontiguousarray(mono, dtype=np.float32)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "AudioStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_stream(source, sample_rate: int | None = None, *, name: str | None = None) -> AudioStream:
    """An `AudioStream` over anything `load_audio` takes (files are streamed, the rest is loaded whole)."""
    if source is None:
        raise AudioError(f"{name or 'input'}: no audio was given; upload or record a sound")
    return AudioStream(source, sample_rate, name=name)


def _check_path(path: Path, name: str) -> None:
    # libsndfile reports all of these as "System error" or "Format not recognised"; say what is wrong.
    if not path.exists():
        raise AudioError(f"{name}: no such file: {path}; check the path")
    if not path.is_file():
        raise AudioError(f"{name}: {path} is not a file; pass an audio file, not a folder")
    if path.stat().st_size == 0:
        raise AudioError(f"{name}: the file is empty (0 bytes); record or export it again")


def _read(file, name: str, max_seconds: float) -> tuple[np.ndarray, int, int, int, list[str]]:
    """Decode at most the first window of a file, after checking its header: (mono, rate, channels, source frames,
    warnings), the mono mix float32 at the file's own rate.

    The header is checked first so that an hour-long or 400 kHz file is refused before a byte of
    audio is decoded, and only the window is read, so a long file costs no more than a short one. The window is
    decoded a block at a time and each block is downmixed at once, so memory follows the window's length at the
    file's rate, not also its channel count (32 channels at 192 kHz would be 25 MB per second of audio).
    """
    try:
        with sf.SoundFile(file) as f:
            rate, channels, frames, mp3 = f.samplerate, f.channels, f.frames, f.format == "MPEG"
            _check_rate(rate, name)
            _check_channels(channels, name)
            _check_not_too_long(frames, rate, name)
            window = round(max_seconds * rate)
            mono = _read_mono(f, min(frames, window), keep_partial=True)
    except sf.LibsndfileError as err:
        raise AudioError(f"{name}: not readable as audio ({err.error_string.rstrip('.')}); {FORMATS_HINT}") from err
    except (sf.SoundFileError, OSError) as err:
        raise AudioError(f"{name}: cannot read the file ({err}); {FORMATS_HINT}") from err
    # Headers can overstate the length (truncated files, MP3 estimates): trust what was decoded,
    # unless the read stopped at the window, in which case the rest was never looked at.
    source_frames = frames if len(mono) == window else len(mono)
    warning = truncation_warning(promised_frames(file, frames, mp3), source_frames, rate)
    return mono, rate, channels, source_frames, [warning] if warning else []


def promised_frames(file, frames: int, mp3: bool) -> int:
    """The length a file's header promises. libsndfile quietly shortens a WAV's length to the bytes that are there,
    so the WAV header's own data size is read; a FLAC or OGG whose stream ends early decodes fewer frames than the
    `frames` its header gives. MP3 lengths are estimates, so an MP3 is taken at its decoded length."""
    declared = _wav_header_frames(file)
    if declared is not None:
        return declared
    return 0 if mp3 else frames


def _read_mono(f: sf.SoundFile, frames: int, *, keep_partial: bool) -> np.ndarray:
    """Up to `frames` frames from the file's position, downmixed to float32 mono, read and downmixed a second at a
    time: only one block of all the channels is in memory at once (at most MAX_CHANNELS x MAX_RATE x 4 bytes, 25 MB).

    With `keep_partial`, a stream that breaks off (a FLAC cut in half loses sync) gives what was decoded before the
    break, and the length check then warns; a stream of which nothing decodes raises libsndfile's error. Without it,
    any decoding error is raised."""
    blocks, left = [], frames
    while left > 0:
        try:
            block = f.read(min(left, f.samplerate), dtype="float32", always_2d=True)
        except sf.LibsndfileError:
            if not blocks or not keep_partial:
                raise
            break
        if len(block) == 0:
            break
        blocks.append(downmix(block))
        del block  # free it before the next read allocates one
        left -= len(blocks[-1])
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def downmix(samples: np.ndarray) -> np.ndarray:
    """(frames, channels) float32 -> (frames,) float32: the mean of the channels. Averaging keeps the level of a
    channel that is the same everywhere (e.g. dual-mono). Row by row, so downmixing block by block gives exactly
    what downmixing the whole does."""
    return samples[:, 0].copy() if samples.shape[1] == 1 else samples.mean(axis=1, dtype=np.float32)


def truncation_warning(promised: int, decoded_frames: int, rate: int) -> str | None:
    """A warning when a file holds less audio than its header promises (a file cut off in a copy or a download)."""
    if promised <= decoded_frames + max(1, rate // 100):  # within 10 ms: rounding, not loss
        return None
    return (f"the file is shorter than its header says: {decoded_frames / rate:.1f} s of {promised / rate:.1f} s "
            f"could be read ({100 * decoded_frames / promised:.0f}%); it may be cut off, so only that part is heard")


def _wav_header_frames(file) -> int | None:
    """Frames a RIFF/WAVE header's data chunk declares, or None (not a WAV, or no declared length)."""
    try:
        if isinstance(file, (str, os.PathLike)):
            with open(file, "rb") as handle:
                head = handle.read(1 << 16)
        else:
            position = file.tell()
            file.seek(0)
            head = file.read(1 << 16)
            file.seek(position)
    except OSError:
        return None
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    offset, block_align = 12, 0
    while offset + 8 <= len(head):
        chunk, size = head[offset: offset + 4], int.from_bytes(head[offset + 4: offset + 8], "little")
        if chunk == b"fmt " and offset + 22 <= len(head):
            block_align = int.from_bytes(head[offset + 20: offset + 22], "little")
        elif chunk == b"data":
            if not block_align or size in (0, 0xFFFFFFFF):
                return None
            return size // block_align
        offset += 8 + size + (size & 1)
    return None


def _check_given_rate(given, actual: int, name: str) -> None:
    if given is not None and given != actual:
        raise AudioError(
            f"{name}: sample_rate={given} was given, but the file says {actual} Hz; "
            "files carry their own rate, so leave sample_rate out"
        )


def _untuple(source: tuple, sample_rate, name: str):
    if len(source) != 2:
        raise AudioError(f"{name}: a tuple must be (sample_rate, array), got {len(source)} items")
    first, second = source
    # Whichever item is a plain number is the rate: Gradio gives (rate, array), librosa (array, rate).
    rate, array = (first, second) if isinstance(first, numbers.Number) else (second, first)
    if sample_rate is not None and sample_rate != rate:
        raise AudioError(f"{name}: sample_rate={sample_rate} disagrees with the tuple's rate {rate}; pass only one")
    return array, rate


def array_to_mono(array, sample_rate, name: str = "audio") -> tuple[np.ndarray, int]:
    """A numpy array or torch tensor of any layout `load_audio` takes as (float32 mono samples at its own rate, the
    rate): the same checks and conversions, without resampling, silence or length rules. For audio that arrives
    in pieces (a microphone's chunks), which `eacap.live` resamples as one continuous signal."""
    samples, rate, _ = _from_array(array, sample_rate, name, MAX_SOURCE_SECONDS)
    return downmix(samples), rate


def _from_array(array, sample_rate, name: str, max_seconds: float) -> tuple[np.ndarray, int, int]:
    if hasattr(array, "detach") and hasattr(array, "numpy"):  # a torch tensor, without importing torch
        array = array.detach().cpu()
        if array.is_floating_point():
            array = array.float()  # bfloat16 has no numpy equivalent
        array = array.numpy()
    elif not isinstance(array, np.ndarray):
        raise AudioError(
            f"{name}: cannot load a {type(array).__name__}; pass a file path, bytes, "
            "a numpy array or torch tensor with sample_rate, or a (sample_rate, array) tuple"
        )
    if sample_rate is None:
        raise AudioError(f"{name}: an array has no sample rate of its own; pass sample_rate= (in Hz)")
    rate = _check_rate(sample_rate, name)

    shape = array.shape
    if array.size == 0:
        raise AudioError(f"{name}: the array is empty (shape {shape}); pass at least {MIN_SECONDS:g} s of samples")
    if array.ndim == 1:
        array = array[:, None]
    elif array.ndim == 2 and min(shape) <= MAX_CHANNELS:
        if shape[0] < shape[1]:
            array = array.T
    else:
        raise AudioError(
            f"{name}: an array of shape {shape} is not one clip of audio; pass (samples,), "
            f"(samples, channels) or (channels, samples) with at most {MAX_CHANNELS} channels"
        )

    frames = array.shape[0]
    _check_not_too_long(frames, rate, name)
    # Cut before converting, so a long array costs only its window.
    samples = _to_float32(array[: round(max_seconds * rate)], name)
    return samples, rate, frames


def _to_float32(array: np.ndarray, name: str) -> np.ndarray:
    kind, size = array.dtype.kind, array.dtype.itemsize
    if kind == "f":
        return array.astype(np.float32)
    # Integer PCM is scaled to [-1, 1) the way soundfile reads it, so arrays and files agree.
    if kind == "i" and size in (1, 2, 4):
        return (array.astype(np.float64) / 2.0 ** (8 * size - 1)).astype(np.float32)
    if kind == "u" and size == 1:
        return ((array.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    raise AudioError(
        f"{name}: samples of type {array.dtype} are not audio; use float, int16, int32, int8 or uint8 samples"
    )


def _check_rate(rate, name: str) -> int:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not float(rate).is_integer():
        raise AudioError(f"{name}: sample rate {rate!r} is not a whole number of Hz; pass e.g. sample_rate=44100")
    rate = int(rate)
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(
            f"{name}: sample rate {rate} Hz is outside the supported {MIN_RATE}-{MAX_RATE} Hz; "
            f"check it is given in Hz (not kHz), or resample to {SAMPLE_RATE} Hz first"
        )
    return rate


def _check_channels(channels: int, name: str) -> None:
    if channels > MAX_CHANNELS:
        raise AudioError(f"{name}: {channels} channels is more than {MAX_CHANNELS}; downmix it first, to stereo "
                         "or mono (e.g. `ffmpeg -i IN -ac 2 OUT.flac`)")


def _check_not_too_long(frames: int, rate: int, name: str) -> None:
    if frames / rate > MAX_SOURCE_SECONDS:
        raise AudioError(
            f"{name}: {frames / rate / 60:.0f} min of audio is over the {MAX_SOURCE_SECONDS / 60:.0f} min limit; "
            "trim it to the part you want captioned"
        )


def silence_level(waveform: np.ndarray) -> str | None:
    """None when there is sound; otherwise how the silence reads ("digital silence", "-95 dBFS", "a constant ...").

    Sound is change: a constant offset (DC) carries none however large it is, so the level is the peak of the
    waveform around its mean. This is the one rule for silence: `CaptionModel.caption_batch` captions such a
    clip as `SILENCE_CAPTION` instead of letting a model invent a sound, and `load_audio` warns about it.
    """
    waveform = np.asarray(waveform, dtype=np.float32)
    offset = float(waveform.mean(dtype=np.float64)) if waveform.size else 0.0
    peak = float(np.abs(waveform - offset).max()) if waveform.size else 0.0
    if peak >= 10 ** (SILENCE_DBFS / 20):
        return None
    level = f"{20 * math.log10(peak):.0f} dBFS" if peak > 0 else "digital silence"
    if abs(offset) >= 10 ** (SILENCE_DBFS / 20):
        level = f"a constant offset of {offset:+.3g} with no sound on it, {level}"
    return level


def _finish(mono: np.ndarray, channels: int, rate: int, source_frames: int, name: str, warnings: list[str]) -> Audio:
    """Validate and resample the decoded window, downmixed to mono (`downmix`) at `rate` from `channels`."""
    frames = len(mono)
    if frames == 0:
        raise AudioError(f"{name}: there are no samples in it; record or export it again")
    if frames / rate < MIN_SECONDS:
        raise AudioError(f"{name}: only {frames / rate:.3g} s of audio; record at least {MIN_SECONDS:g} s")
    if not np.isfinite(mono).all():  # a NaN or infinity in any channel is one in the mix
        raise AudioError(
            f"{name}: it contains NaN or infinite samples; the recording or the code that produced it is broken, "
            "re-export it or fix the array"
        )

    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    waveform = np.ascontiguousarray(mono, dtype=np.float32)

    source_duration = source_frames / rate
    warnings = list(warnings)
    if source_frames > frames:
        warnings.append(
            f"cut to the first {frames / rate:.1f} s of {source_duration:.1f} s (the model's window); "
            "caption the whole recording as a timeline (CLI `caption --timeline`, the app's Timeline)"
        )
    # Checked after downmixing: out-of-phase channels can cancel, and the model hears the mix.
    silence = silence_level(waveform)
    if silence is not None:
        warnings.append(f"the audio is silent ({silence}, below {SILENCE_DBFS:.0f} dBFS); it is captioned as "
                        "silence: check the microphone or the recording level")
    return Audio(
        waveform=waveform,
        sample_rate=SAMPLE_RATE,
        duration=len(waveform) / SAMPLE_RATE,
        source_duration=source_duration,
        source_rate=rate,
        source_channels=channels,
        warnings=warnings,
        name=name,
    )
