"""Caption timelines: a recording of any length (up to the 1-hour limit) as captioned segments with start/end times.

The models hear windows of `window` seconds (the 10 s the scene corpus trains on), `hop` seconds apart (half a
window by default, so every moment is heard in the middle of some window). Each window owns the stretch of time
nearest its centre: the boundary between two neighbours is halfway between their centres, the first window owns
from 0 and the last until the end; the last window is aligned to end with the recording, so it is as long as the
others. Neighbouring windows whose captions say the same (equal after case and punctuation are dropped) merge
into one segment. Silent windows are captioned `SILENCE_CAPTION` by the model's own silence rule.

Files are streamed: only `batch_size` windows are in memory at a time (`eacap.audio.open_stream`), so an hour
costs the memory of a batch. Windows are captioned in batches through `CaptionModel.caption_batch`, the same
decoding as every other caption.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable

from .audio import open_stream
from .decoding import DecodingOptions

if TYPE_CHECKING:
    from .models import CaptionModel

WINDOW_SECONDS = 10.0
FORMATS = ("text", "json", "srt", "vtt")


@dataclass
class Segment:
    start: float     # seconds
    end: float
    text: str
    score: float     # mean of the merged windows' length-normalised log-probabilities
    windows: int     # how many windows said this
    silent: bool = False


@dataclass
class Timeline:
    name: str
    duration: float             # seconds of audio captioned
    segments: list[Segment]
    model: str                  # where the model was loaded from (`CaptionModel.source`)
    role: str                   # teacher or student
    window: float
    hop: float
    seconds: float              # wall time: decoding the file and captioning every window
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["segments"] = [asdict(s) for s in self.segments]
        return data


def window_starts(duration: float, window: float, hop: float) -> list[float]:
    """Window start times covering [0, duration]; the last window ends at `duration` (one window if shorter)."""
    if duration <= window:
        return [0.0]
    starts, start = [], 0.0
    while start + window < duration - 1e-9:
        starts.append(start)
        start += hop
    starts.append(duration - window)
    return starts


def owned_spans(starts: list[float], window: float, duration: float) -> list[tuple[float, float]]:
    """The stretch of time each window speaks for: from halfway to its left neighbour's centre to halfway to its
    right neighbour's."""
    centres = [min(s + window / 2, (s + min(s + window, duration)) / 2) for s in starts]
    bounds = [0.0] + [(a + b) / 2 for a, b in zip(centres, centres[1:])] + [duration]
    return list(zip(bounds[:-1], bounds[1:]))


def _normalised(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _same(a: str, b: str) -> bool:
    return _normalised(a) == _normalised(b)


def merge_segments(spans: list[tuple[float, float]], captions: list) -> list[Segment]:
    """One segment per run of neighbouring windows that say the same."""
    segments: list[Segment] = []
    for (start, end), caption in zip(spans, captions):
        last = segments[-1] if segments else None
        if last is not None and _same(last.text, caption.text):
            last.score = (last.score * last.windows + caption.score) / (last.windows + 1)
            last.end, last.windows = end, last.windows + 1
        else:
            segments.append(Segment(start, end, caption.text, caption.score, 1, caption.silent))
    return segments


def caption_timeline(model: CaptionModel, source, options: DecodingOptions = DecodingOptions(), *,
                     window: float = WINDOW_SECONDS, hop: float | None = None, batch_size: int = 8,
                     progress: Callable[[int, int], None] | None = None) -> Timeline:
    """Caption `source` (a path, bytes, an array with its rate, anything `load_audio` takes) window by window.

    `progress(done, total)` is called after each batch of windows. Raises `AudioError` for unusable audio and
    ValueError for a window/hop that makes no sense.
    """
    hop = window / 2 if hop is None else hop
    if not 1.0 <= window <= 30.0:
        raise ValueError(f"window must be 1-30 s (the models hear at most 30 s), got {window:g}")
    if not 0 < hop <= window:
        raise ValueError(f"hop must be more than 0 and at most the window ({window:g} s), got {hop:g}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    clock = time.perf_counter()
    with open_stream(source) as stream:
        starts = window_starts(stream.duration, window, hop)
        windows = (stream.read(start, min(window, stream.duration - start)) for start in starts)
        report = None if progress is None else (lambda done: progress(done, len(starts)))
        captions = model.caption_many(windows, options, batch_size, report)
        warnings = list(stream.warnings)
        duration, name = stream.duration, stream.name
    segments = merge_segments(owned_spans(starts, window, duration), captions)
    return Timeline(name, duration, segments, model.source, model.role, window, hop,
                    time.perf_counter() - clock, warnings)


# -- output formats ---------------------------------------------------------------------------------------------

def clock_time(seconds: float, *, millis: str | None = None) -> str:
    """mm:ss, or h:mm:ss past an hour; with `millis`, hh:mm:ss plus that separator and milliseconds ("," is SRT's,
    "." WebVTT's)."""
    if millis is not None:
        hours, rest = divmod(round(seconds * 1000), 3_600_000)
        minutes, rest = divmod(rest, 60_000)
        secs, ms = divmod(rest, 1000)
        return f"{hours:02d}:{minutes:02d}:{secs:02d}{millis}{ms:03d}"
    hours, rest = divmod(int(seconds + 0.5), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def to_text(timeline: Timeline) -> str:
    return "".join(f"{clock_time(s.start)}-{clock_time(s.end)}\t{s.text}\n" for s in timeline.segments)


def to_srt(timeline: Timeline) -> str:
    blocks = [f"{i}\n{clock_time(s.start, millis=',')} --> {clock_time(s.end, millis=',')}\n{s.text}\n"
              for i, s in enumerate(timeline.segments, 1)]
    return "\n".join(blocks)


def to_vtt(timeline: Timeline) -> str:
    cues = [f"{clock_time(s.start, millis='.')} --> {clock_time(s.end, millis='.')}\n{s.text}\n"
            for s in timeline.segments]
    return "WEBVTT\n\n" + "\n".join(cues)


def to_jsonl(timeline: Timeline) -> str:
    """One JSON object per segment, each with the file and model it belongs to."""
    return "".join(json.dumps({"file": timeline.name, "model": timeline.model, **asdict(s)}, ensure_ascii=False) + "\n"
                   for s in timeline.segments)


def render(timeline: Timeline, fmt: str) -> str:
    writers = {"text": to_text, "json": to_jsonl, "srt": to_srt, "vtt": to_vtt}
    if fmt not in writers:
        raise ValueError(f"unknown timeline format {fmt!r}: use one of {', '.join(FORMATS)}")
    return writers[fmt](timeline)
