"""eacap.requests: the one definition of what a caption request may ask for (app, CLI and bench)."""
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import make_tiny_models, tone

from eacap import DecodingOptions, bench, cli
from eacap.requests import (
    BEAM_SIZE,
    MAX_LENGTH,
    MODEL_NAME_MAX,
    RequestError,
    decoding_request,
    model_name,
    total_seconds,
    whole_number,
)


def fake_model(decoder_max_length: int):
    return SimpleNamespace(config=SimpleNamespace(decoder=SimpleNamespace(max_length=decoder_max_length)))


def test_limits():
    assert BEAM_SIZE == (1, 8) and MAX_LENGTH == (1, 47) and MODEL_NAME_MAX == 200
    assert issubclass(RequestError, ValueError)
    assert BEAM_SIZE[0] <= DecodingOptions().beam_size <= BEAM_SIZE[1]
    assert MAX_LENGTH[0] <= DecodingOptions().max_length <= MAX_LENGTH[1]


@pytest.mark.parametrize("value", [3, 3.0, "3", " 3 ", "3\n", "+3", "3.0", np.int64(3), np.float32(3.0), np.uint8(3)])
def test_whole_number_accepts_whole_numbers_in_any_form(value):
    number = whole_number("beam_size", value, *BEAM_SIZE)
    assert number == 3 and type(number) is int


@pytest.mark.parametrize("value", [1, 8, 1.0, 8.0, "1", "8"])
def test_whole_number_accepts_the_bounds(value):
    assert whole_number("beam_size", value, *BEAM_SIZE) == int(float(value))


@pytest.mark.parametrize("value, shown", [
    (True, "True"),                  # an int to Python, not a beam size
    (False, "False"),
    (np.True_, "True"),
    (None, "None"),
    ([3], "[3]"),
    ((3,), "(3,)"),
    ({"beam": 3}, "{'beam': 3}"),
    (float("nan"), "nan"),
    (float("inf"), "inf"),
    (float("-inf"), "-inf"),
    ("abc", "'abc'"),
    ("", "''"),
    ("3.5", "'3.5'"),
    ("1e1", "'1e1'"),
    (b"3", "b'3'"),
    (3.5, "3.5"),
    (12, "12"),
    (12.0, "12.0"),
    ("12", "'12'"),
    (0, "0"),
    (-1, "-1"),
    (np.int64(12), "12"),
])
def test_whole_number_refuses_everything_else(value, shown):
    with pytest.raises(RequestError) as error:
        whole_number("beam_size", value, *BEAM_SIZE)
    assert str(error.value) == f"beam_size must be a whole number from 1 to 8, got {shown}"


@pytest.mark.parametrize("value", ["7" * 10_000, "x" * 10_000, list(range(100_000)), "huge int", [[[[[1]]]]]],
                         ids=["digits", "text", "list", "huge-int", "nested"])
def test_refused_values_are_shown_in_at_most_60_characters(value):
    value = 10 ** 5000 if value == "huge int" else value  # too big for str(): built here, not in the test id
    with pytest.raises(RequestError) as error:
        whole_number("max_length", value, *MAX_LENGTH)
    message = str(error.value)
    assert message.startswith("max_length must be a whole number from 1 to 47, got ")
    assert len(message.split(", got ", 1)[1]) <= 60


def test_decoding_request_checks_both_limits_and_returns_options():
    options = decoding_request(2.0, "20")
    assert options == DecodingOptions(beam_size=2, max_length=20)
    assert decoding_request(*BEAM_SIZE[1:], MAX_LENGTH[1]) == DecodingOptions(beam_size=8, max_length=47)
    with pytest.raises(RequestError, match=r"^beam_size must be a whole number from 1 to 8, got 12$"):
        decoding_request(12, 30)
    with pytest.raises(RequestError, match=r"^beam_size must be a whole number from 1 to 8, got True$"):
        decoding_request(True, 30)
    with pytest.raises(RequestError, match=r"^max_length must be a whole number from 1 to 47, got 400$"):
        decoding_request(3, 400)
    with pytest.raises(RequestError, match=r"^max_length must be a whole number from 1 to 47, got 'long'$"):
        decoding_request(3, "long")


def test_decoding_request_checks_each_models_decoder():
    teacher, student = make_tiny_models()
    assert decoding_request(3, 47, teacher, student).max_length == 47  # the tiny decoders hold 48 positions
    short = fake_model(10)
    assert decoding_request(3, 9, teacher, short).max_length == 9
    with pytest.raises(RequestError, match=r"max_length must be between 1 and 9 \(the decoder's limit\), got 30"):
        decoding_request(3, 30, teacher, short)


@pytest.mark.parametrize("value, name", [("student", "student"), ("  owner/name \n", "owner/name"),
                                         ("x" * MODEL_NAME_MAX, "x" * MODEL_NAME_MAX)])
def test_model_name_accepts_text(value, name):
    assert model_name(value) == name


@pytest.mark.parametrize("value, got", [
    ("", "got an empty name"),
    ("   ", "got an empty name"),
    ("x" * (MODEL_NAME_MAX + 1), f"got {MODEL_NAME_MAX + 1} characters"),
    ("y" * 1_000_000, "got 1000000 characters"),
    (None, "as text, got None"),
    (3, "as text, got 3"),
    (["student"], "as text, got ['student']"),
])
def test_model_name_refuses_the_rest(value, got):
    with pytest.raises(RequestError) as error:
        model_name(value)
    message = str(error.value)
    assert message.startswith("model must be") and got in message
    assert len(message) < 200  # never echoes a long name back
    if isinstance(value, str) and value.strip():
        assert f"1 to {MODEL_NAME_MAX} characters" in message


def test_total_seconds_is_the_model_stages():
    seconds = {"load": 5.0, "frontend": 0.25, "encoder": 0.5, "decoder": 1.0}
    assert total_seconds(seconds) == 1.75
    assert total_seconds({**seconds, "total": 1.75}) == 1.75  # idempotent: an existing total is not counted again
    assert total_seconds({"load": 1.0}) == 0


def test_compare_total_is_total_seconds(tmp_path):
    from eacap.compare import compare

    teacher, student = make_tiny_models()
    result = compare((16000, tone(1.0)), teacher, student, DecodingOptions(beam_size=1, max_length=4))
    for run in (result.teacher, result.student):
        assert run.seconds["total"] == total_seconds(run.seconds)
    assert result.speedup == result.teacher.seconds["total"] / result.student.seconds["total"]


def test_cli_refuses_a_beam_wider_than_the_limit(tiny_checkpoints, tmp_path, capsys):
    import soundfile as sf

    _, student = tiny_checkpoints
    sf.write(tmp_path / "a.wav", tone(1.0), 16000)
    for command in (["caption", str(tmp_path / "a.wav"), "--model", student],
                    ["caption", str(tmp_path / "a.wav"), "--model", student, "--timeline"]):
        assert cli.main([*command, "--beam-size", "12"]) == 2
        captured = capsys.readouterr()
        assert captured.err == "error: beam_size must be a whole number from 1 to 8, got 12: change --beam-size\n"
        assert captured.out == ""
    assert cli.main(["caption", str(tmp_path / "a.wav"), "--model", student, "--max-length", "48"]) == 2
    assert "max_length must be a whole number from 1 to 47, got 48: change --max-length" in capsys.readouterr().err
    assert cli.main(["caption", str(tmp_path / "a.wav"), "--model", student, "--beam-size", "8",
                     "--max-length", "3"]) == 0


def test_bench_refuses_a_beam_wider_than_the_limit(tiny_checkpoints, capsys):
    teacher, student = tiny_checkpoints
    assert bench.main(["--teacher", teacher, "--student", student, "--beam-size", "9", "--no-reference"]) == 2
    assert capsys.readouterr().err == "error: beam_size must be a whole number from 1 to 8, got 9: change --beam-size\n"
    assert bench.main(["--teacher", teacher, "--student", student, "--long", "1", "--beam-size", "16"]) == 2
    assert "beam_size must be a whole number from 1 to 8, got 16" in capsys.readouterr().err
