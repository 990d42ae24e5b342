"""eacap.bench: the fixed-length timing mode, the EffB2 reference, and the command end to end (tiny models)."""
import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_models

import eacap
from eacap import DecodingOptions, bench
from eacap.decoding import decode

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("beam_size", [1, 3])
def test_fixed_length_decoder_makes_every_caption_the_same_length(beam_size):
    _, student = make_tiny_models()
    frames = torch.randn(4, 6, student.config.encoder.out_dim)
    lengths = torch.tensor([6, 5, 3, 6])
    special = student.tokenizer.special
    forced = bench.FixedLengthDecoder(student.decoder, 7, special["eos"])
    hyps = decode(forced, frames, lengths, special, DecodingOptions(beam_size=beam_size, max_length=7))
    assert [len(tokens) for tokens in hyps.tokens] == [6] * 4  # + </s> = 7
    assert all(special["eos"] not in tokens for tokens in hyps.tokens)


def test_reference_encoder_is_the_paper_shape():
    encoder = bench.EffB2Encoder().eval()
    assert encoder.out_dim == 1408
    with torch.inference_mode():
        frames, lengths = encoder(torch.randn(1, 64, 1001), torch.tensor([1001]))
    assert frames.shape == (1, 32, 1408) and lengths.tolist() == [32]  # 10 s: 32 frames of 320 ms


def test_bench_end_to_end(tiny_checkpoints):
    teacher, student = tiny_checkpoints
    done = subprocess.run(
        [sys.executable, "-m", "eacap.bench", "--teacher", teacher, "--student", student, "--repeats", "1",
         "--batch", "2", "--warmup", "1", "--seconds", "2", "--tokens", "6", "--threads", "1"],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert "beam 3, 6 tokens per caption (fixed)" in lines[0] and "1 threads" in lines[0]
    assert any(line.startswith("EffB2-Trm (paper)") for line in lines)
    assert any(line.startswith("peak RSS: ") for line in lines)
    assert re.fullmatch(r"speed-up: latency \d+\.\dx, throughput \d+\.\dx", lines[-1])
    assert any(re.match(r"in turn \(.*\): teacher .* ms, student .* ms, .*; latency \d+\.\dx, throughput \d+\.\dx$",
                        line) for line in lines)


def test_bench_json(tiny_checkpoints, capsys, tmp_path):
    teacher, student = tiny_checkpoints
    saved = tmp_path / "results" / "bench.json"
    code = bench.main(["--teacher", teacher, "--student", student, "--repeats", "2", "--batch", "2", "--warmup", "1",
                       "--seconds", "1.5", "--tokens", "5", "--beam-size", "2", "--no-reference", "--json",
                       "--save", str(saved)])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert json.loads(saved.read_text()) == result  # --save: the same object, for `train report`
    assert set(result["models"]) == {"teacher", "student"}
    for m in result["models"].values():
        assert m["caption_tokens"] == 5 and m["parameters"] > 0 and m["latency_seconds"] > 0
        assert m["clips_per_second"] == pytest.approx(2 / m["batch_seconds"])
        assert m["x_real_time"] == pytest.approx(m["clips_per_second"] * 1.5)
        assert sum(m["stage_seconds"].values()) <= m["latency_seconds"] * 1.5
    t, s = result["models"]["teacher"], result["models"]["student"]
    assert result["speedup"]["latency"] == pytest.approx(t["latency_seconds"] / s["latency_seconds"])
    assert result["speedup"]["throughput"] == pytest.approx(s["clips_per_second"] / t["clips_per_second"])
    assert result["threads"] == torch.get_num_threads() and result["peak_rss_mib"] > 0
    turn = result["in_turn_speedup"]
    assert turn["latency"] == pytest.approx(t["in_turn"]["latency_seconds"] / s["in_turn"]["latency_seconds"])
    assert turn["throughput"] == pytest.approx(s["in_turn"]["clips_per_second"] / t["in_turn"]["clips_per_second"])


def test_measure_times_each_model_after_itself_and_after_the_other(monkeypatch):
    """Every round runs each model twice in a row: the first of the two is timed as `in turn` (right after the
    other model), the second as `steady` (right after itself)."""
    calls = []

    def run_once(pipeline, waveforms, options, fixed, timing):
        calls.append((pipeline.name, timing))
        if timing is not None:
            for stage in timing.stages:
                timing.stages[stage].append(float(len(calls)))

    monkeypatch.setattr(bench, "run_once", run_once)
    monkeypatch.setattr(bench, "_compiles", lambda device: False)
    pipelines = [types.SimpleNamespace(name=name) for name in ("teacher", "student")]
    steady, in_turn = bench.measure(pipelines, torch.zeros(1, 10), None, True, repeats=2, warmup=1)
    timed = [(name, "steady" if timing is steady[name] else "in turn") for name, timing in calls[2:]]
    assert timed == [("teacher", "in turn"), ("teacher", "steady"), ("student", "in turn"), ("student", "steady")] * 2
    assert steady["student"].stages["total"] == [6.0, 10.0] and in_turn["student"].stages["total"] == [5.0, 9.0]


def test_bench_option_errors(tiny_checkpoints, capsys, tmp_path):
    teacher, student = tiny_checkpoints
    assert bench.main(["--teacher", teacher, "--student", student, "--tokens", "60", "--no-reference"]) == 2
    assert "max_length must be between 1 and 47" in capsys.readouterr().err
    assert bench.main(["--teacher", str(tmp_path / "none"), "--student", student]) == 2
    assert "no checkpoint folder at" in capsys.readouterr().err
    assert bench.main(["--teacher", teacher, "--student", student, "--seconds", "90"]) == 2
    assert "--seconds must be within" in capsys.readouterr().err


def test_speed_variants_time_every_candidate_against_the_teacher(tiny_checkpoints, capsys, tmp_path):
    from train.stages import variants
    teacher, student = tiny_checkpoints
    parser = argparse.ArgumentParser()
    variants.add_arguments(parser)
    args = parser.parse_args(["--teacher", teacher, "--student", student, "--repeats", "1", "--batch", "2",
                              "--threads", "1"])
    assert variants.main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = [line.split(" | ")[0].lstrip("| ") for line in lines[2:]]
    shapes = variants.variants(variants.base_of(eacap.load_model(student).config))
    assert names == ["teacher", "student (shipped)", *shapes]
    assert names[2] == "base shape"
    assert lines[2].endswith("| 1.0x | 1.0x |")  # the teacher against itself
    args.teacher = str(tmp_path / "missing")
    assert variants.main(args) == 2 and "error:" in capsys.readouterr().err


def test_speed_variants_are_changes_of_the_base_shape_whatever_shape_is_shipped():
    """A shipped slim student must not be slimmed again (a 160 ms hop): the candidates start from the base shape."""
    from eacap.models.presets import named_shape, student_config
    from train.stages import variants
    base = student_config(613, "full")
    for shape in ("base", "fast", "lite", "slim"):
        config = student_config(613, "full", shape=shape)
        assert named_shape(config) == ("full", shape) and variants.base_of(config) == base
    assert named_shape(student_config(40, "tiny", shape="slim")) == ("tiny", "slim")
    slim = variants.variants(base)['shape "slim": 40 ms frames + 1-layer FFN-512 decoder']
    assert slim == student_config(613, "full", shape="slim")
    custom = dataclasses.replace(base, decoder=dataclasses.replace(base.decoder, layers=3))
    assert named_shape(custom) is None and variants.base_of(custom) is custom


def test_bench_long_recording(tiny_checkpoints, capsys, tmp_path):
    """--long: each model captions a generated recording as a timeline in its own process; the report gives time
    per audio hour, RSS along the way and the ratio."""
    teacher, student = tiny_checkpoints
    saved = tmp_path / "long.json"
    assert bench.main(["--teacher", teacher, "--student", student, "--long", "0.75", "--beam-size", "1",
                       "--save", str(saved)]) == 0
    out = capsys.readouterr().out
    assert "speed-up: long" in out and "per audio hour" in out
    result = json.loads(saved.read_text())
    for role in ("teacher", "student"):
        m = result["models"][role]
        assert m["duration"] == pytest.approx(45.0) and m["windows"] == 8
        assert m["seconds_per_audio_hour"] == pytest.approx(m["seconds"] * 80)
        assert m["peak_rss_mib"] >= m["rss_at_end_mib"] > 0
    assert result["speedup"]["long"] == pytest.approx(result["models"]["teacher"]["seconds"]
                                                      / result["models"]["student"]["seconds"])
    assert bench.main(["--teacher", teacher, "--student", student, "--long", "90"]) == 2
    assert "within 0.1-60 minutes" in capsys.readouterr().err
