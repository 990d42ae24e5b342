"""eacap.live: the ring buffer, windows every hop, skipping what a busy model cannot take, silence, bad chunks."""
import threading
import time
import tracemalloc
from collections import deque

import numpy as np
import pytest
from conftest import make_tiny_models, tone

from eacap.audio import SILENCE_CAPTION, AudioError
from eacap.live import LiveCaptioner, RingBuffer, check_chunk


class FakeCaption:
    def __init__(self, text):
        self.text = text


class FakeModel:
    """Captions a window with its length; optionally slow, optionally blocked until released."""

    def __init__(self, role="student", delay=0.0, gate: threading.Event | None = None):
        self.role, self.source, self.delay, self.gate, self.calls = role, f"fake-{role}", delay, gate, []

    def caption_batch(self, waves, options):
        if self.gate is not None:
            self.gate.wait(10)
        time.sleep(self.delay)
        self.calls.append(len(waves[0]))
        return [FakeCaption(f"{len(waves[0]) / 16000:.1f} s of sound")]


def test_ring_buffer_keeps_the_last_samples_in_order():
    ring = RingBuffer(5)
    ring.write(np.arange(3, dtype=np.float32))
    assert ring.last(10).tolist() == [0, 1, 2]
    ring.write(np.arange(3, 7, dtype=np.float32))           # wraps around
    assert ring.last(5).tolist() == [2, 3, 4, 5, 6] and ring.last(2).tolist() == [5, 6]
    ring.write(np.arange(10, 18, dtype=np.float32))         # more than it holds
    assert ring.last(5).tolist() == [13, 14, 15, 16, 17]


def test_windows_every_hop_whatever_the_chunk_size():
    audio = tone(3.5)
    results = []
    for chunk in (160, 7919, 16000, len(audio)):
        model = FakeModel()
        live = LiveCaptioner([model], window=2.0, hop=1.0, threaded=False)
        captions = []
        for start in range(0, len(audio), chunk):
            captions += live.feed(audio[start: start + chunk])
        captions += live.finish()
        results.append([(c.start, c.end, c.text) for c in captions])
        assert model.calls == [16000, 32000, 32000]         # the window grows to 2 s, then slides
        assert live.stats()["fake-student"]["windows"] == 3 and live.stats()["fake-student"]["skipped"] == 0
    assert all(r == results[0] for r in results)
    assert results[0] == [(0.0, 1.0, "1.0 s of sound"), (0.0, 2.0, "2.0 s of sound"), (1.0, 3.0, "2.0 s of sound")]


def test_a_busy_model_skips_windows_and_a_fast_one_does_not():
    gate = threading.Event()
    slow, fast = FakeModel("teacher", gate=gate), FakeModel("student")
    live = LiveCaptioner([slow, fast], window=2.0, hop=0.5)
    got = []
    for _ in range(8):                                      # 4 s in 0.5 s chunks, faster than the slow model
        got += live.feed(tone(0.5))
        deadline = time.time() + 5
        while not live.workers[1].idle.is_set() and time.time() < deadline:
            time.sleep(0.01)
    gate.set()
    got += live.finish()
    stats = live.stats()
    assert stats["fake-teacher"]["windows"] == 1 and stats["fake-teacher"]["skipped"] == 7
    assert stats["fake-student"]["windows"] == 8 and stats["fake-student"]["skipped"] == 0
    assert [c.role for c in got].count("teacher") == 1
    assert all(c.lag >= 0 for c in got) and stats["fake-student"]["real_time_factor"] >= 0


def test_silence_is_captioned_without_running_the_model():
    model = FakeModel()
    live = LiveCaptioner([model], window=2.0, hop=1.0, threaded=False)
    captions = live.feed(np.zeros(3 * 16000, dtype=np.float32)) + live.finish()
    assert [c.text for c in captions] == [SILENCE_CAPTION] * 3 and all(c.silent and c.compute == 0 for c in captions)
    assert model.calls == [] and [c.changed for c in captions] == [True, False, False]


def test_memory_stays_flat_however_long_it_runs():
    model = FakeModel()
    model.calls = deque(maxlen=3)  # the fake's own record must not grow either
    live = LiveCaptioner([model], window=2.0, hop=1.0, threaded=False, history=3)
    second = tone(1.0)
    for _ in range(30):
        live.feed(second)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(300):                                    # five more minutes
        live.feed(second)
    grown = sum(stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(before, "filename"))
    tracemalloc.stop()
    assert grown < 200_000 and len(live.recent()["fake-student"]) == 3
    assert live.stats()["fake-student"]["windows"] == 330


def test_real_models_caption_live(tmp_path):
    teacher, student = make_tiny_models()
    live = LiveCaptioner([teacher, student], window=2.0, hop=1.0, threaded=False)
    captions = live.feed(tone(2.5)) + live.finish()
    assert [(c.role, c.end) for c in captions] == [("student", 1.0), ("teacher", 1.0), ("student", 2.0),
                                                   ("teacher", 2.0)]
    assert all(isinstance(c.text, str) and c.compute > 0 for c in captions)


def test_microphone_chunks_resample_as_one_signal():
    from eacap.live import Resampler
    rate = 48000
    stereo = np.stack([np.sin(np.arange(rate) * 2 * np.pi * 440 / rate)] * 2, axis=1)
    pcm = (stereo * 16000).astype(np.int16)                   # what gr.Audio(type="numpy") gives: (samples, channels)
    resample = Resampler()
    pieces = [resample(rate, pcm[i: i + 4800]) for i in range(0, rate, 4800)]
    joined = np.concatenate(pieces)
    assert 15500 < len(joined) <= 16000 and joined.dtype == np.float32  # the resampler holds back a few ms
    assert np.abs(joined[2000:14000]).max() == pytest.approx(16000 / 32768, rel=0.02)
    with pytest.raises(AudioError, match="sample rate 2000 Hz"):
        resample(2000, pcm[:100])


def test_bad_chunks_and_settings_are_refused():
    with pytest.raises(AudioError, match="mono samples"):
        check_chunk(np.zeros((2, 100)))
    with pytest.raises(AudioError, match="NaN"):
        check_chunk(np.array([0.0, np.nan]))
    with pytest.raises(AudioError, match="not audio"):
        check_chunk(np.zeros(4, dtype=np.uint16))
    assert check_chunk(np.array([16384, -32768], dtype=np.int16)).tolist() == [0.5, -1.0]
    with pytest.raises(ValueError, match="window must be 1-30 s"):
        LiveCaptioner([FakeModel()], window=60)
    with pytest.raises(ValueError, match="hop must be from 0.1 s"):
        LiveCaptioner([FakeModel()], window=5, hop=6)
    with pytest.raises(ValueError, match="at least one model"):
        LiveCaptioner([])
    live = LiveCaptioner([FakeModel()], threaded=False)
    live.finish()
    with pytest.raises(ValueError, match="finished"):
        live.feed(tone(0.5))


def test_byte_streams_raw_pcm_files_and_what_is_not_audio(tmp_path):
    import io

    import soundfile as sf

    from eacap.live import byte_stream_chunks
    audio = tone(1.0)
    pcm = (audio * 32767).astype("<i2").tobytes()
    warnings = []
    chunks = list(byte_stream_chunks(io.BytesIO(pcm + b"\x01"), warnings=warnings))  # stops mid-sample
    joined = np.concatenate(chunks)
    assert len(joined) == 16000 and np.allclose(joined, audio, atol=1e-4)
    assert max(len(c) for c in chunks) == 4000 and warnings == [
        "the stream stopped in the middle of a sample: its last 1 byte(s) were dropped"]
    floats = list(byte_stream_chunks(io.BytesIO(audio.astype("<f4").tobytes()), "f32le"))
    assert np.array_equal(np.concatenate(floats), audio)
    sf.write(tmp_path / "clip.wav", audio, 16000)
    from_file = np.concatenate(list(byte_stream_chunks(io.BytesIO((tmp_path / "clip.wav").read_bytes()))))
    assert len(from_file) == 16000 and np.allclose(from_file, audio, atol=1e-4)
    with pytest.raises(AudioError, match="looks like text"):
        list(byte_stream_chunks(io.BytesIO(b"this is not a sound, just a line of text " * 10)))
    with pytest.raises(AudioError, match="not float32 PCM.*--sample-format s16le"):
        list(byte_stream_chunks(io.BytesIO(pcm), "f32le"))
    with pytest.raises(AudioError, match="ended before any audio"):
        list(byte_stream_chunks(io.BytesIO(b"")))


def run_stream(args, stdin: bytes, timeout=120):
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, "-m", "eacap", "stream", *args], input=stdin, capture_output=True,
                          timeout=timeout, cwd=root)


def test_cli_captions_a_piped_stream(tiny_checkpoints):
    teacher, student = tiny_checkpoints
    pcm = (tone(3.0) * 32767).astype("<i2").tobytes()
    done = run_stream(["--model", teacher, "--model", student, "--every", "--hop", "1", "--window", "2"], pcm + b"\x07")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    # Piped faster than it plays: each model captions the first window, and skips what comes while it is busy
    assert sorted(line.split("\t")[:2] for line in lines[:2]) == [["00:01", "student"], ["00:01", "teacher"]]
    assert all(len(line.split("\t")) == 3 for line in lines)
    err = done.stderr.decode()
    assert "stopped in the middle of a sample" in err and "windows captioned" in err and "real-time factor" in err


def test_cli_stream_of_silence_json_and_bad_input(tiny_checkpoints, tmp_path):
    import json

    import soundfile as sf
    _, student = tiny_checkpoints
    silence = np.zeros(2 * 16000, dtype="<i2").tobytes()
    done = run_stream(["--model", student, "--json", "--hop", "1"], silence)
    assert done.returncode == 0, done.stderr
    captions = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert captions[0]["text"] == SILENCE_CAPTION and captions[0]["silent"] and len(captions) == 1  # no change after
    sf.write(tmp_path / "clip.wav", tone(2.0), 16000)
    done = run_stream(["--model", student, "--input", str(tmp_path / "clip.wav"), "--every"], b"")
    assert done.returncode == 0 and len(done.stdout.decode().splitlines()) == 2
    done = run_stream(["--model", student], b"hello, this is a text file and certainly no sound at all\n" * 5)
    assert done.returncode == 1 and "looks like text" in done.stderr.decode()
    done = run_stream(["--model", student, "--sample-format", "f32le"], (tone(1.0) * 32767).astype("<i2").tobytes())
    assert done.returncode == 1 and "--sample-format s16le" in done.stderr.decode()
    done = run_stream(["--model", student, "--both"], b"")
    assert done.returncode == 2 and "--both" in done.stderr.decode()
    done = run_stream(["--model", student, "--hop", "20", "--window", "5"], b"")
    assert done.returncode == 2 and "hop must be" in done.stderr.decode()


def test_bench_stream_reports_each_models_real_time_factor(tiny_checkpoints, capsys):
    import json

    from eacap import bench
    teacher, student = tiny_checkpoints
    args = ["--teacher", teacher, "--student", student, "--stream", "--repeats", "2", "--window", "2", "--hop", "0.5",
            "--device", "cpu"]
    assert bench.main(args + ["--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for m in result["models"].values():
        assert m["seconds_per_window"] > 0 and m["real_time_factor"] == pytest.approx(m["seconds_per_window"] / 0.5)
        assert m["shortest_hop"] == m["seconds_per_window"]
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    assert "real-time factor" in out and out.strip().splitlines()[-1].startswith("speed-up: stream ")
    assert bench.main(args + ["--hop", "5"]) == 2
    assert "hop must be" in capsys.readouterr().err
