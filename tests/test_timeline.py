"""Timelines of long recordings, silence captioned as silence, and files shorter than their headers."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import tone

from eacap import load_audio, load_model
from eacap.audio import SILENCE_CAPTION, AudioError, open_stream, silence_level
from eacap.decoding import DecodingOptions
from eacap.models.caption_model import Caption
from eacap.timeline import Timeline, caption_timeline, clock_time, merge_segments, owned_spans, render, window_starts

ROOT = Path(__file__).resolve().parents[1]
FAST = DecodingOptions(beam_size=1, max_length=6)


def caption(text: str, score: float = -1.0) -> Caption:
    return Caption(text, [], score, 10.0)


# -- windows and merging -----------------------------------------------------------------------------------------

def test_windows_cover_the_recording_and_the_last_ends_with_it():
    assert window_starts(4.0, 10.0, 5.0) == [0.0]
    assert window_starts(10.0, 10.0, 5.0) == [0.0]
    assert window_starts(23.0, 10.0, 5.0) == [0.0, 5.0, 10.0, 13.0]
    starts = window_starts(600.0, 10.0, 5.0)
    assert len(starts) == 119 and starts[-1] == 590.0
    assert all(b - a <= 5.0 for a, b in zip(starts, starts[1:]))


def test_each_window_owns_the_time_nearest_its_centre():
    spans = owned_spans([0.0, 5.0, 10.0, 13.0], 10.0, 23.0)
    assert spans == [(0.0, 7.5), (7.5, 12.5), (12.5, 16.5), (16.5, 23.0)]
    assert owned_spans([0.0], 10.0, 4.0) == [(0.0, 4.0)]


def test_neighbours_that_say_the_same_merge():
    spans = [(0.0, 7.5), (7.5, 12.5), (12.5, 17.5), (17.5, 25.0)]
    captions = [caption("A dog barks.", -1.0), caption("a dog barks", -3.0), caption("rain falls"),
                caption("a dog barks")]
    segments = merge_segments(spans, captions)
    assert [(s.start, s.end, s.windows) for s in segments] == [(0.0, 12.5, 2), (12.5, 17.5, 1), (17.5, 25.0, 1)]
    assert segments[0].text == "A dog barks." and segments[0].score == pytest.approx(-2.0)


# -- output formats --------------------------------------------------------------------------------------------

@pytest.fixture
def timeline() -> Timeline:
    segments = merge_segments([(0.0, 7.5), (7.5, 3700.25)], [caption("a dog barks"), caption("rain, then thunder")])
    return Timeline("walk.wav", 3700.25, segments, "models/student", "student", 10.0, 5.0, 1.0)


def test_clock_times():
    assert clock_time(7.5) == "00:08" and clock_time(65.2) == "01:05" and clock_time(3700.25) == "1:01:40"
    assert clock_time(3700.25, millis=",") == "01:01:40,250" and clock_time(0.0, millis=".") == "00:00:00.000"


def test_text_and_json_lines(timeline):
    assert render(timeline, "text") == "00:00-00:08\ta dog barks\n00:08-1:01:40\train, then thunder\n"
    rows = [json.loads(line) for line in render(timeline, "json").splitlines()]
    assert [(r["file"], r["start"], r["end"], r["text"]) for r in rows] == [
        ("walk.wav", 0.0, 7.5, "a dog barks"), ("walk.wav", 7.5, 3700.25, "rain, then thunder")]
    with pytest.raises(ValueError, match="unknown timeline format 'ass'"):
        render(timeline, "ass")


def test_srt_parses_as_subtitles(timeline):
    srt = pytest.importorskip("srt", reason="pip install -r requirements-test.txt")
    subtitles = list(srt.parse(render(timeline, "srt")))
    assert [(s.index, s.start.total_seconds(), s.end.total_seconds(), s.content) for s in subtitles] == [
        (1, 0.0, 7.5, "a dog barks"), (2, 7.5, 3700.25, "rain, then thunder")]


def test_webvtt_parses_as_captions(timeline, tmp_path):
    webvtt = pytest.importorskip("webvtt", reason="pip install -r requirements-test.txt")
    path = tmp_path / "walk.vtt"
    path.write_text(render(timeline, "vtt"))
    cues = webvtt.read(str(path))
    assert [(c.start, c.end, c.text) for c in cues] == [("00:00:00.000", "00:00:07.500", "a dog barks"),
                                                        ("00:00:07.500", "01:01:40.250", "rain, then thunder")]


# -- captioning long files ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def student(tiny_checkpoints):
    return load_model(tiny_checkpoints[1])


def long_recording(path: Path, rate: int = 22050) -> Path:
    """35 s: 15 s of a tone, 12 s of digital silence, 8 s of noise."""
    rng = np.random.default_rng(0)
    audio = np.concatenate([tone(15.0, rate=rate), np.zeros(12 * rate, np.float32),
                            0.1 * rng.standard_normal(8 * rate).astype(np.float32)])
    sf.write(path, audio, rate)
    return path


def test_caption_timeline_streams_a_long_file_in_batches(student, tmp_path):
    path = long_recording(tmp_path / "long.flac")
    calls = []
    timeline = caption_timeline(student, path, FAST, batch_size=2, progress=lambda d, t: calls.append((d, t)))
    assert timeline.duration == pytest.approx(35.0)
    assert calls == [(2, 6), (4, 6), (6, 6)]  # windows at 0, 5, 10, 15, 20, 25 s
    assert timeline.segments[0].start == 0.0 and timeline.segments[-1].end == pytest.approx(35.0)
    assert all(a.end == b.start for a, b in zip(timeline.segments, timeline.segments[1:]))
    assert sum(s.windows for s in timeline.segments) == 6
    # The window of 15-25 s is all silence: stated, not described.
    silent = [s for s in timeline.segments if s.silent]
    assert len(silent) == 1 and silent[0].text == SILENCE_CAPTION and silent[0].start <= 20.0 <= silent[0].end
    # Captions of the windows are the model's captions of those stretches.
    whole = load_audio(path, max_seconds=3600).waveform
    first = student.caption_batch([whole[: 10 * 16000]], FAST)[0]
    assert timeline.segments[0].text == first.text


def test_timeline_of_arrays_and_bad_settings(student, tmp_path):
    timeline = caption_timeline(student, (16000, tone(3.0)), FAST)
    assert len(timeline.segments) == 1 and timeline.segments[0].end == pytest.approx(3.0)
    for kwargs, message in (({"window": 40.0}, "window must be 1-30 s"), ({"hop": 0.0}, "hop must be more than 0"),
                            ({"hop": 12.0}, "at most the window")):
        with pytest.raises(ValueError, match=message):
            caption_timeline(student, (16000, tone(3.0)), FAST, **kwargs)
    (tmp_path / "notes.wav").write_text("not audio")
    with pytest.raises(AudioError, match="notes.wav: not readable as audio"):
        caption_timeline(student, tmp_path / "notes.wav", FAST)


def test_stream_reads_the_same_audio_as_load_audio(tmp_path):
    path = long_recording(tmp_path / "long.wav", rate=44100)
    whole = load_audio(path, max_seconds=3600).waveform
    with open_stream(path) as stream:
        assert stream.duration == pytest.approx(35.0) and stream.warnings == []
        part = stream.read(20.0, 5.0)
    assert len(part) == 5 * 16000
    # Resampled separately, the stretch matches the whole file's resampling away from its edges.
    np.testing.assert_allclose(part[800:-800], whole[20 * 16000 + 800: 25 * 16000 - 800], atol=2e-3)


# -- silence -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("waveform, says", [
    (np.zeros(16000), "digital silence"),
    (np.full(16000, 0.5), "a constant offset of +0.5"),
    (np.full(16000, -0.2) + 1e-6 * np.random.default_rng(0).standard_normal(16000), "a constant offset of -0.2"),
    (1e-6 * np.random.default_rng(0).standard_normal(16000), "dBFS"),
])
def test_silence_includes_a_constant_signal(waveform, says):
    assert says in silence_level(waveform)


def test_sound_is_not_silence():
    assert silence_level(tone(1.0, amplitude=0.01)) is None
    assert silence_level(0.5 + tone(1.0, amplitude=0.01)) is None


def test_silent_and_dc_clips_are_captioned_as_silence(student):
    silent, dc, sound = np.zeros(5 * 16000), np.full(5 * 16000, 0.5), tone(5.0)
    captions = student.caption_batch([silent, dc, sound], FAST)
    assert [c.text for c in captions[:2]] == [SILENCE_CAPTION] * 2 and all(c.silent for c in captions[:2])
    assert not captions[2].silent and captions[2].text == student.caption_batch([sound], FAST)[0].text
    assert "captioned as silence" in load_audio(dc, 16000).warnings[0]


# -- files shorter than their headers ------------------------------------------------------------------------------

def test_a_half_cut_wav_loads_with_a_warning(tmp_path):
    full = tmp_path / "full.wav"
    sf.write(full, tone(4.0), 16000, subtype="PCM_16")
    data = full.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])
    audio = load_audio(cut)
    assert audio.duration == pytest.approx(2.0, abs=0.01)
    assert any("shorter than its header says: 2.0 s of 4.0 s" in w for w in audio.warnings)
    assert load_audio(full).warnings == []
    with open_stream(cut) as stream:
        assert any("shorter than its header" in w for w in stream.warnings)
    assert any("shorter than its header" in w for w in load_audio(cut.read_bytes()).warnings)


def test_a_cut_flac_warns_too(tmp_path):
    full = tmp_path / "full.flac"
    sf.write(full, 0.1 * np.random.default_rng(0).standard_normal(16000 * 6).astype(np.float32), 16000)
    data = full.read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: len(data) // 2])
    audio = load_audio(cut)
    assert audio.duration < 4.0 and any("shorter than its header says" in w for w in audio.warnings)


# -- the command line ----------------------------------------------------------------------------------------------

def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "eacap", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})


def test_cli_timeline_formats(tiny_checkpoints, tmp_path):
    student = tiny_checkpoints[1]
    long_recording(tmp_path / "long.flac")
    common = ("--model", student, "--beam-size", "1", "--max-length", "6")
    text = run_cli("caption", "long.flac", "--timeline", *common, cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith("00:00-") and lines[-1].split("\t")[0].endswith("-00:35")
    assert any(line.endswith("\t" + SILENCE_CAPTION) for line in lines)

    jsonl = run_cli("caption", "long.flac", "missing.wav", "--timeline", "--json", *common, cwd=tmp_path)
    assert jsonl.returncode == 1
    rows = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert rows[-1] == {"file": "missing.wav", "error": "missing.wav: no such file: missing.wav; check the path"}
    assert len(rows) == len(lines) + 1 and rows[0]["start"] == 0.0

    srt = run_cli("caption", "long.flac", "--timeline", "--format", "srt", *common, cwd=tmp_path)
    assert srt.stdout.startswith("1\n00:00:00,000 --> ")
    out = run_cli("caption", "long.flac", "long.flac", "--timeline", "--format", "vtt", "--out", "subs", *common,
                  cwd=tmp_path)
    assert out.returncode == 0 and (tmp_path / "subs" / "long.flac.vtt").read_text().startswith("WEBVTT\n")


def test_cli_timeline_usage_errors(tiny_checkpoints, tmp_path):
    student = tiny_checkpoints[1]
    sf.write(tmp_path / "a.wav", tone(2.0), 16000)
    two_srt = run_cli("caption", "a.wav", "a.wav", "--timeline", "--format", "srt", "--model", student, cwd=tmp_path)
    assert two_srt.returncode == 2 and "SRT holds one recording" in two_srt.stderr
    no_flag = run_cli("caption", "a.wav", "--format", "srt", "--model", student, cwd=tmp_path)
    assert no_flag.returncode == 2 and "add --timeline" in no_flag.stderr
    bad_hop = run_cli("caption", "a.wav", "--timeline", "--hop", "20", "--model", student, cwd=tmp_path)
    assert bad_hop.returncode == 2 and "change --window/--hop" in bad_hop.stderr


# -- no repeated n-grams in captions -----------------------------------------------------------------------------

def test_block_repeats_bans_what_would_complete_a_seen_ngram():
    import torch

    from eacap.decoding import block_repeats

    history = torch.tensor([[5, 6, 5, 7, 5], [1, 2, 3, 1, 2]])

    def banned(n):
        return (block_repeats(torch.zeros(2, 10), history, n) == float("-inf")).nonzero().tolist()

    assert banned(2) == [[0, 6], [0, 7], [1, 3]]
    assert banned(3) == [[1, 3]]
    assert banned(1) == [[0, 5], [0, 6], [0, 7], [1, 1], [1, 2], [1, 3]]
    assert banned(0) == [] and banned(6) == []


@pytest.mark.parametrize("beam_size", [1, 3])
def test_no_caption_repeats_a_bigram(student, beam_size):
    waves = [tone(2.0, freq=f) for f in (200, 700, 3000)] + [0.1 * np.random.default_rng(1).standard_normal(32000)]
    free = student.caption_batch(waves, DecodingOptions(beam_size=beam_size, max_length=20, no_repeat_ngram_size=0))
    blocked = student.caption_batch(waves, DecodingOptions(beam_size=beam_size, max_length=20))
    for caption in blocked:
        bigrams = list(zip(caption.tokens, caption.tokens[1:]))
        assert len(bigrams) == len(set(bigrams)), caption.text
    # A random tiny model babbles: without the rule it repeats, so the rule did something.
    assert any(len(set(zip(c.tokens, c.tokens[1:]))) < len(c.tokens) - 1 for c in free)
    with pytest.raises(ValueError, match="no_repeat_ngram_size"):
        DecodingOptions(no_repeat_ngram_size=-1).validate(32)
