"""`python -m eacap caption/compare`: end to end in a subprocess where it matters, in-process for the rest."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
from conftest import tone

from eacap import cli

ROOT = Path(__file__).resolve().parents[1]


def run_module(*args, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "eacap", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def clips(tmp_path):
    sf.write(tmp_path / "a.wav", tone(1.5, freq=440), 16000)
    sf.write(tmp_path / "b.flac", tone(1.0, freq=1000, rate=44100), 44100)
    (tmp_path / "bad.wav").write_text("this is not audio")
    return tmp_path


def test_caption_json_end_to_end_with_a_bad_file(tiny_checkpoints, clips):
    _, student = tiny_checkpoints
    done = run_module("caption", "a.wav", "bad.wav", "b.flac", "--json", "--model", student,
                      "--max-length", "5", cwd=clips)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["file"] for line in lines] == ["a.wav", "bad.wav", "b.flac"]
    good = [lines[0], lines[2]]
    for line in good:
        assert line["caption"] and line["model"] == student and line["seconds"] > 0 and line["warnings"] == []
        assert line["score"] <= 0
    assert [line["duration"] for line in good] == [1.5, 1.0]
    assert "bad.wav" in lines[1]["error"] and "caption" not in lines[1]


def test_caption_with_a_broken_checkpoint(tiny_checkpoints, clips, tmp_path):
    _, student = tiny_checkpoints
    broken = tmp_path / "broken"
    shutil.copytree(student, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    done = run_module("caption", "a.wav", "--model", broken, cwd=clips)
    assert done.returncode == 2
    assert "model.safetensors is truncated or corrupt" in done.stderr and str(weights) in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_caption_plain_output_batches_and_warnings(tiny_checkpoints, tmp_path, capsys):
    _, student = tiny_checkpoints
    files = []
    for i in range(3):
        files.append(tmp_path / f"clip{i}.wav")
        sf.write(files[-1], tone(1.0 + i / 2, freq=300 * (i + 1)) * (i > 0), 16000)  # clip0 is silent
    code = cli.main(["caption", *map(str, files), "--model", student, "--batch-size", "2", "--beam-size", "1",
                     "--max-length", "4"])
    out, err = capsys.readouterr()
    assert code == 0
    lines = out.splitlines()
    assert [line.split("\t")[0] for line in lines] == list(map(str, files))
    assert all(len(line.split("\t")) == 2 and line.split("\t")[1] for line in lines)
    assert f"warning: {files[0]}: the audio is silent" in err


def test_batching_does_not_change_captions(tiny_checkpoints, clips, capsys):
    _, student = tiny_checkpoints
    files = [str(clips / "a.wav"), str(clips / "b.flac")]
    outputs = []
    for batch in ("1", "2"):
        assert cli.main(["caption", *files, "--model", student, "--batch-size", batch, "--max-length", "6",
                         "--json"]) == 0
        outputs.append([json.loads(line)["caption"] for line in capsys.readouterr().out.splitlines()])
    assert outputs[0] == outputs[1]


def test_usage_errors_exit_2(tiny_checkpoints, clips, capsys, monkeypatch, tmp_path):
    _, student = tiny_checkpoints
    monkeypatch.setattr(cli, "CHECKPOINTS", tmp_path / "nothing-here")
    assert cli.main(["caption", str(clips / "a.wav")]) == 2
    err = capsys.readouterr().err
    assert "no student checkpoint at" in err and "python -m train all" in err and "--model" in err

    assert cli.main(["caption", str(clips / "a.wav"), "--model", student, "--max-length", "400"]) == 2
    assert "max_length must be a whole number from 1 to 47, got 400" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exit_info:  # argparse: a non-number
        cli.main(["caption", "a.wav", "--beam-size", "three"])
    assert exit_info.value.code == 2
    assert "'three' is not a whole number" in capsys.readouterr().err


def test_compare_prints_and_saves_plots(tiny_checkpoints, clips, capsys):
    teacher, student = tiny_checkpoints
    plots = clips / "plots"
    args = ["compare", str(clips / "a.wav"), "--teacher", teacher, "--student", student, "--beam-size", "1",
            "--max-length", "5"]
    assert cli.main([*args, "--plots", str(plots)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("a.wav (1.50 s)") and "speed-up:" in out and "clip cosine" in out
    assert sorted(p.name for p in plots.iterdir()) == ["logmel.png", "similarity.png", "timing.png"]

    assert cli.main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["teacher"]["name"] == teacher and result["student"]["name"] == student
    assert -1 <= result["clip_cosine"] <= 1 and result["speedup"] > 0 and result["plots"] == []


def test_compare_errors(tiny_checkpoints, clips, capsys):
    teacher, student = tiny_checkpoints
    assert cli.main(["compare", str(clips / "bad.wav"), "--teacher", teacher, "--student", student]) == 1
    assert "bad.wav: not readable as audio" in capsys.readouterr().err
    assert cli.main(["compare", str(clips / "a.wav"), "--teacher", student, "--student", teacher]) == 2
    assert "other way round" in capsys.readouterr().err
