"""Live captions: caption a stream as it plays, with one or both models, and say which model keeps up.

    captioner = LiveCaptioner([teacher, student], window=8.0, hop=1.0)
    for chunk in chunks:                       # float32 mono 16 kHz, any size
        for caption in captioner.feed(chunk):  # the captions finished since the last call
            print(caption.model, caption.end, caption.text)
    captioner.finish()                         # waits for the windows in flight
    print(captioner.stats())

Audio goes into a ring buffer that holds one window. Every `hop` seconds of audio, the last `window` seconds (less at
the start of the stream) are offered to each model. A model still busy with its previous window does not take the
new one: the window is skipped for that model, so a slow model captions less often instead of falling further
behind, and a fast one captions every hop. Each model works in a thread of its own, so the student's captions never
wait for the teacher's. A quiet window is captioned as silence without running the model (the silence rule of
`eacap.audio.silence_level`). Nothing grows with the stream's length: the buffer is one window, the statistics are
running sums, and only the last `history` captions per model are kept.

Lag is the wall time from the moment a window's last sample was fed to the moment its caption was ready: on a live
source, how far the caption trails the sound. The real-time factor is a model's mean compute time per window divided
by the hop: below 1 it can caption every hop.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np
import soxr
import torch

from .audio import MIN_SECONDS, SAMPLE_RATE, SILENCE_CAPTION, AudioError, array_to_mono, open_stream, silence_level
from .compare import warm_up
from .decoding import DecodingOptions

WINDOW_SECONDS = 8.0
HOP_SECONDS = 1.0


@dataclass
class LiveCaption:
    model: str            # the model's name (its checkpoint or Hub id, else its role)
    role: str             # "teacher" | "student"
    text: str
    start: float          # stream seconds the window covers
    end: float
    lag: float            # seconds from the window's last sample being fed to this caption being ready
    compute: float        # seconds the model took (0 for a silent window)
    silent: bool
    changed: bool         # the text differs from this model's previous caption

    def to_dict(self) -> dict:
        return {"model": self.model, "role": self.role, "text": self.text, "start": round(self.start, 3),
                "end": round(self.end, 3), "lag": round(self.lag, 4), "compute": round(self.compute, 4),
                "silent": self.silent, "changed": self.changed}


@dataclass
class ModelStats:
    """Running figures of one model over a stream."""
    hop: float
    windows: int = 0            # captioned (silent ones included)
    skipped: int = 0            # offered while the model was still busy
    compute_seconds: float = 0.0
    lag_seconds: float = 0.0
    last_lag: float = 0.0

    @property
    def compute_per_window(self) -> float:
        return self.compute_seconds / self.windows if self.windows else 0.0

    @property
    def real_time_factor(self) -> float:
        return self.compute_per_window / self.hop

    @property
    def mean_lag(self) -> float:
        return self.lag_seconds / self.windows if self.windows else 0.0

    def to_dict(self) -> dict:
        return {"windows": self.windows, "skipped": self.skipped,
                "compute_per_window": round(self.compute_per_window, 4),
                "real_time_factor": round(self.real_time_factor, 4), "mean_lag": round(self.mean_lag, 4),
                "last_lag": round(self.last_lag, 4)}


class RingBuffer:
    """The last `capacity` samples of a stream, in a fixed array."""

    def __init__(self, capacity: int):
        self.data = np.zeros(capacity, dtype=np.float32)
        self.filled = 0   # valid samples, up to capacity
        self.head = 0     # where the next sample goes

    def write(self, samples: np.ndarray) -> None:
        capacity = len(self.data)
        if len(samples) >= capacity:
            self.data[:] = samples[-capacity:]
            self.head, self.filled = 0, capacity
            return
        first = min(len(samples), capacity - self.head)
        self.data[self.head: self.head + first] = samples[:first]
        self.data[: len(samples) - first] = samples[first:]
        self.head = (self.head + len(samples)) % capacity
        self.filled = min(capacity, self.filled + len(samples))

    def last(self, count: int) -> np.ndarray:
        """The most recent `count` samples (at most what is held), oldest first, as a new array."""
        count = min(count, self.filled)
        start = (self.head - count) % len(self.data)
        if start + count <= len(self.data):
            return self.data[start: start + count].copy()
        return np.concatenate([self.data[start:], self.data[: self.head]])


class _Worker:
    """One model's captioning thread: takes one window at a time and reports each caption when done."""

    def __init__(self, model, options: DecodingOptions, hop: float, history: int, threaded: bool):
        self.model, self.options = model, options
        self.name = getattr(model, "source", "") or model.role
        self.stats = ModelStats(hop)
        self.recent: deque[LiveCaption] = deque(maxlen=history)
        self.done: deque[LiveCaption] = deque()
        self.threaded = threaded
        self.idle = threading.Event()
        self.idle.set()
        self.error: Exception | None = None

    def offer(self, waveform: np.ndarray, start: float, end: float, fed_at: float) -> None:
        if not self.idle.is_set():
            self.stats.skipped += 1
            return
        self.idle.clear()
        if self.threaded:
            threading.Thread(target=self._run, args=(waveform, start, end, fed_at), daemon=True).start()
        else:
            self._run(waveform, start, end, fed_at)

    def _run(self, waveform: np.ndarray, start: float, end: float, fed_at: float) -> None:
        try:
            began = time.perf_counter()
            if silence_level(waveform):
                text, silent = SILENCE_CAPTION, True
            else:
                with torch.inference_mode():
                    text, silent = self.model.caption_batch([waveform], self.options)[0].text, False
            compute = 0.0 if silent else time.perf_counter() - began
            previous = self.recent[-1].text if self.recent else None
            caption = LiveCaption(self.name, self.model.role, text, start, end, time.perf_counter() - fed_at,
                                  compute, silent, text != previous)
            self.stats.windows += 1
            self.stats.compute_seconds += compute
            self.stats.lag_seconds += caption.lag
            self.stats.last_lag = caption.lag
            self.recent.append(caption)
            self.done.append(caption)
        except Exception as error:  # whatever failed is raised to the caller by the next `feed` or `finish`
            self.error = error
        finally:
            self.idle.set()

    def take(self) -> list[LiveCaption]:
        if self.error is not None:
            error, self.error = self.error, None
            raise RuntimeError(f"{self.name}: captioning a window failed: {error}") from error
        taken = []
        while self.done:
            taken.append(self.done.popleft())
        return taken


@dataclass
class LiveCaptioner:
    """Captions a stream fed in chunks; see the module docstring. `threaded=False` captions each window inline
    (no skipping, deterministic: for tests and for files read faster than they play)."""
    models: Sequence
    window: float = WINDOW_SECONDS
    hop: float = HOP_SECONDS
    options: DecodingOptions = field(default_factory=DecodingOptions)
    threaded: bool = True
    history: int = 10

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("live captions need at least one model")
        check_timing(self.window, self.hop)
        self.buffer = RingBuffer(round(self.window * SAMPLE_RATE))
        self.received = 0                                   # samples fed so far
        self.next_hop = round(self.hop * SAMPLE_RATE)       # the sample count at which the next window is offered
        # A model's first caption pays one-off costs (traces, plans, allocations): paid here, before the stream, so
        # the first window's lag and compute time are the model's own.
        noise = 0.05 * np.random.default_rng(0).standard_normal(SAMPLE_RATE).astype(np.float32)
        for model in self.models:
            if hasattr(model, "warmed_up"):
                warm_up(model, noise, self.options)
        self.workers = [_Worker(m, self.options, self.hop, self.history, self.threaded) for m in self.models]
        self.closed = False

    @property
    def seconds(self) -> float:
        """Stream time: the seconds of audio fed so far."""
        return self.received / SAMPLE_RATE

    def feed(self, samples) -> list[LiveCaption]:
        """Add a chunk of 16 kHz mono float samples (any length, empty included); returns the captions finished
        since the last call, oldest first."""
        if self.closed:
            raise ValueError("this live captioner is finished: start a new one")
        chunk = check_chunk(samples)
        hop = round(self.hop * SAMPLE_RATE)
        while len(chunk):
            # Feed up to the next hop boundary, offer the window there, go on with the rest of the chunk.
            part = chunk[: self.next_hop - self.received]
            chunk = chunk[len(part):]
            self.buffer.write(part)
            self.received += len(part)
            if self.received >= self.next_hop:
                self._offer()
                self.next_hop += hop
        return self._collect()

    def finish(self, timeout: float | None = 60.0) -> list[LiveCaption]:
        """No more audio: waits for the windows in flight (at most `timeout` seconds each) and returns their
        captions. The captioner takes no more audio after this."""
        self.closed = True
        for worker in self.workers:
            worker.idle.wait(timeout)
        return self._collect()

    def stats(self) -> dict[str, dict]:
        return {worker.name: worker.stats.to_dict() for worker in self.workers}

    def recent(self) -> dict[str, list[LiveCaption]]:
        """Each model's last `history` captions, oldest first."""
        return {worker.name: list(worker.recent) for worker in self.workers}

    def _offer(self) -> None:
        held = self.buffer.last(self.buffer.filled)
        if len(held) < MIN_SECONDS * SAMPLE_RATE:
            return
        end = self.seconds
        fed_at = time.perf_counter()
        for worker in self.workers:
            worker.offer(held, end - len(held) / SAMPLE_RATE, end, fed_at)

    def _collect(self) -> list[LiveCaption]:
        captions = [caption for worker in self.workers for caption in worker.take()]
        return sorted(captions, key=lambda caption: (caption.end, caption.role))


def check_timing(window: float, hop: float) -> None:
    """A ValueError naming the setting unless `window` is 1-30 s and `hop` from 0.1 s to the window."""
    if not 1.0 <= window <= 30.0:
        raise ValueError(f"window must be 1-30 s (the models hear at most 30 s), got {window:g}")
    if not 0.1 <= hop <= window:
        raise ValueError(f"hop must be from 0.1 s to the window ({window:g} s), got {hop:g}")


def check_chunk(samples) -> np.ndarray:
    """A chunk of a live stream at 16 kHz as float32 mono, or an AudioError saying what is wrong with it."""
    if torch.is_tensor(samples):
        samples = samples.detach().cpu().numpy()
    chunk = np.asarray(samples)
    if chunk.ndim != 1:
        raise AudioError(f"a live chunk must be mono samples (1-D), got shape {chunk.shape}: downmix it first")
    if chunk.size == 0:
        return np.zeros(0, dtype=np.float32)
    chunk, _ = array_to_mono(chunk, SAMPLE_RATE, "a live chunk")
    if not np.isfinite(chunk).all():
        raise AudioError("a live chunk holds NaN or infinite samples")
    return chunk


class Resampler:
    """Chunks at any rate and channel count, as a browser's microphone sends them, to 16 kHz mono float32,
    resampled as one continuous signal (per-chunk resampling would click at every chunk's edges)."""

    def __init__(self):
        self.rate: int | None = None
        self.stream = None

    def __call__(self, rate, samples) -> np.ndarray:
        if np.asarray(samples).size == 0:
            return np.zeros(0, dtype=np.float32)
        mono, rate = array_to_mono(samples, rate, "the microphone")
        if rate != self.rate:  # a new stream, or the device changed its rate
            self.rate = rate
            self.stream = None if rate == SAMPLE_RATE else soxr.ResampleStream(rate, SAMPLE_RATE, 1, "float32")
        return mono if self.stream is None else self.stream.resample_chunk(mono)


# -- a live source on a byte stream (stdin) ----------------------------------------------------------------------

PCM_FORMATS = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}
CONTAINERS = {b"RIFF": "WAV", b"fLaC": "FLAC", b"OggS": "OGG", b"ID3": "MP3", b"\xff\xfb": "MP3", b"\xff\xf3": "MP3"}
CONVERT_HINT = "ffmpeg -i SOURCE -f s16le -ac 1 -ar 16000 - | python -m eacap stream"


def byte_stream_chunks(binary: BinaryIO, sample_format: str = "s16le", chunk_seconds: float = 0.25,
                       warnings: list[str] | None = None) -> Iterator[np.ndarray]:
    """float32 mono 16 kHz chunks from a byte stream: raw PCM (`sample_format` s16le or f32le, little-endian, mono,
    16 kHz) as it arrives, or, when the stream starts with a WAV/FLAC/OGG/MP3 header, that file's audio (read whole,
    up to an hour, and cut into chunks). Raises AudioError for a stream that is not audio; a stream that stops in
    the middle of a sample drops the partial sample with a line in `warnings`."""
    if sample_format not in PCM_FORMATS:
        raise ValueError(f"sample format must be one of {', '.join(PCM_FORMATS)}, got {sample_format!r}")
    dtype = PCM_FORMATS[sample_format]
    size = max(dtype.itemsize, round(chunk_seconds * SAMPLE_RATE) * dtype.itemsize)
    data = binary.read(size)
    if not data:
        raise AudioError("the input ended before any audio arrived: pipe raw 16 kHz mono PCM into it "
                         f"({CONVERT_HINT}) or an audio file")
    container = next((kind for magic, kind in CONTAINERS.items() if data.startswith(magic)), None)
    if container is not None:
        yield from _file_chunks(data + binary.read(), container, chunk_seconds)
        return
    _check_pcm_start(data, sample_format)
    pending = b""
    while data:
        data = pending + data
        whole = len(data) - len(data) % dtype.itemsize
        pending = data[whole:]
        if whole:
            chunk = np.frombuffer(data[:whole], dtype=dtype)
            yield chunk.astype(np.float32) / 32768.0 if dtype.kind == "i" else _finite(chunk.astype(np.float32))
        data = binary.read(size)
    if pending and warnings is not None:
        warnings.append(f"the stream stopped in the middle of a sample: its last {len(pending)} byte(s) were "
                        "dropped")


def _file_chunks(data: bytes, container: str, chunk_seconds: float) -> Iterator[np.ndarray]:
    with open_stream(data, name=f"the {container} file on the input") as stream:
        start = 0.0
        while start < stream.duration:
            yield stream.read(start, min(chunk_seconds, stream.duration - start))
            start += chunk_seconds


def _check_pcm_start(data: bytes, sample_format: str) -> None:
    head = data[:4096]
    if len(head) >= 64 and all(byte in b"\t\n\r" or 32 <= byte < 127 for byte in head):
        raise AudioError(f"the input looks like text, not audio: pipe raw 16 kHz mono {sample_format} PCM "
                         f"({CONVERT_HINT}) or an audio file")
    if sample_format == "f32le":
        usable = len(head) - len(head) % 4
        values = np.frombuffer(head[:usable], dtype="<f4")
        if usable and (not np.isfinite(values).all() or np.abs(values).max() > 100):
            raise AudioError("the input is not float32 PCM in -1..1 (its first samples are out of range): "
                             "if it is 16-bit PCM, pass --sample-format s16le")


def _finite(chunk: np.ndarray) -> np.ndarray:
    if not np.isfinite(chunk).all():
        raise AudioError("the input holds NaN or infinite samples: it is not float32 PCM")
    return chunk
