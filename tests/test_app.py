"""The Gradio app: handlers as plain functions, then the running app driven with gradio_client (tiny random models).

Tiny random models caption nonsense, so these tests check what the app promises (every field present, numbers
consistent with each other, errors that name the problem), never the caption text.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
import soundfile as sf
from conftest import tone, write_examples
from matplotlib.figure import Figure

gradio_client = pytest.importorskip("gradio_client")
Client, handle_file, AppError = gradio_client.Client, gradio_client.handle_file, gradio_client.exceptions.AppError

# Generous: on a loaded 2-core CI machine 20 clients queue behind one model run at a time (no timing assertion here).
CLIENT_TIMEOUT = 300.0


@pytest.fixture(scope="session")
def examples_dir(tmp_path_factory) -> Path:
    return write_examples(tmp_path_factory.mktemp("examples"))


@pytest.fixture(scope="session")
def captioner(app, tiny_checkpoints, examples_dir):
    return app.Captioner.from_folder(Path(tiny_checkpoints[0]).parent, examples_dir, app.Settings())


@pytest.fixture(scope="session")
def client(app, captioner):
    # Behind one (pretend) proxy: a test client that sends X-Forwarded-For counts as that address, so the load test
    # can be 20 users, each with its own share of the queue, although all of them connect from 127.0.0.1.
    demo = app.build_demo(app.Captioner(captioner.bank, dataclasses.replace(captioner.settings, proxy_hops=1)))
    app.launch(demo, server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        yield Client(demo.local_url, verbose=False, httpx_kwargs={"timeout": CLIENT_TIMEOUT})
    finally:
        demo.close()


@pytest.fixture
def clip(tmp_path) -> str:
    path = tmp_path / "birdsong.wav"
    sf.write(path, tone(2.5, rate=44100, freq=3000), 44100)
    return str(path)


# -- handlers as plain functions ------------------------------------------------------------------------------


def test_compare_returns_consistent_json(captioner, clip):
    result = captioner.compare(clip, beam_size=2, max_length=12)
    assert json.loads(json.dumps(result)) == result  # JSON-serialisable as it is
    assert result["name"] == "birdsong.wav" and result["duration"] == pytest.approx(2.5, abs=1e-3)
    for role in ("teacher", "student"):
        run = result[role]
        assert run["role"] == role and run["name"] == role  # the folder names of the tiny checkpoints
        assert isinstance(run["caption"], str) and run["caption"]
        assert set(run["seconds"]) >= {"load", "frontend", "encoder", "decoder", "total"}
        assert run["seconds"]["total"] >= run["seconds"]["decoder"] > 0
    assert result["teacher"]["parameters"] > result["student"]["parameters"] > 0
    totals = result["teacher"]["seconds"]["total"], result["student"]["seconds"]["total"]
    assert result["speedup"] == pytest.approx(totals[0] / totals[1])
    assert -1 <= result["clip_cosine"] <= 1
    assert len(result["time_axis"]) == len(result["time_cosine"]) > 0
    gallery = result["gallery"]
    assert gallery["names"] == ["high whistle", "low hum", "white noise"]
    assert len(gallery["diagonal"]) == 3 and gallery["top1"] in (0, 1 / 3, 2 / 3, 1)


def test_caption_one_model(captioner, clip):
    student = captioner.caption(clip)  # the student by default
    teacher = captioner.caption(clip, "teacher", beam_size=1, max_length=8)
    assert json.loads(json.dumps(teacher)) == teacher
    assert (student["role"], teacher["role"]) == ("student", "teacher")
    assert len(teacher["caption"].split()) <= 7  # max_length counts the end-of-caption token
    assert teacher["options"] == {"beam_size": 1, "max_length": 8}
    stages = sum(teacher["seconds"][k] for k in ("frontend", "encoder", "decoder"))
    assert teacher["seconds"]["total"] == pytest.approx(stages)
    assert teacher["parameters"] > student["parameters"]


def test_compare_view_fills_every_output(app, captioner, clip):
    outputs = captioner.compare_view(clip, "teacher", "student", 3, 20)
    assert len(outputs) == len(app.OUTPUT_NAMES)
    view = dict(zip(app.OUTPUT_NAMES, outputs))
    for name in ("timing_plot", "similarity_plot", "logmel_plot", "gallery_plot"):
        assert isinstance(view[name], Figure), name
    assert view["teacher_caption"] == view["json"]["teacher"]["caption"]
    assert view["student_caption"] == view["json"]["student"]["caption"]
    assert "parameters" in view["teacher_stats"] and "`teacher`" in view["teacher_stats"]
    assert "fewer parameters" in view["summary"] and "top-1" in view["summary"]
    assert "birdsong.wav" in view["audio_info"] and "2.50 s" in view["audio_info"]


def test_warnings_are_shown_not_errors(app, captioner, tmp_path, monkeypatch):
    """Silence and over-long clips are captioned; the warning reaches the user (a toast, and under the log-mel)."""
    silent, long = tmp_path / "silence.wav", tmp_path / "concert.flac"
    sf.write(silent, np.zeros(32000, dtype=np.float32), 16000)
    sf.write(long, tone(42.0, rate=8000, freq=500), 8000)
    # The toasts, recorded as the app raises them: outside a request gr.Warning goes through Python's warnings, whose
    # capture another thread of the session (the test server, a build in the background) can undo meanwhile
    toasts = []
    monkeypatch.setattr(app.gr, "Warning", lambda message, *args, **kwargs: toasts.append(message))
    assert "silent" in captioner.compare(str(silent), beam_size=1, max_length=5)["warnings"][0]
    assert len(toasts) == 1 and "the audio is silent" in toasts[0]
    outputs = captioner.compare_view(str(long), None, None, 1, 5)
    assert len(toasts) == 2 and "cut to the first 30.0 s of 42.0 s" in toasts[1]
    assert "cut to the first 30.0 s of 42.0 s" in outputs[-1]["warnings"][0]
    assert "⚠️ cut to the first" in outputs[8]  # shown under the log-mel


@pytest.mark.parametrize("beam, length, message", [
    (0, 20, "beam_size must be a whole number from 1 to 8, got 0"),
    (9, 20, "beam_size must be a whole number from 1 to 8, got 9"),
    (2.5, 20, "beam_size must be a whole number from 1 to 8, got 2.5"),
    ("wide", 20, "beam_size must be a whole number from 1 to 8, got 'wide'"),
    (True, 20, "beam_size must be a whole number from 1 to 8, got True"),
    (3, 500, "max_length must be a whole number from 1 to 47, got 500"),
    (3, None, "max_length must be a whole number from 1 to 47, got None"),
])
def test_bad_decoding_options(captioner, clip, beam, length, message):
    with pytest.raises(gr.Error, match=message):
        captioner.compare(clip, beam_size=beam, max_length=length)


@pytest.mark.parametrize("teacher, student, message", [
    ("student", "student", "'student' is a student checkpoint; choose a teacher model"),
    ("teacher", "teacher", "'teacher' is a teacher checkpoint; choose a student model"),
    ("../../etc", None, r"unknown model '../../etc': choose one of: teacher \(and Hub ids the server allows: none\)"),
    ("/tmp", None, "unknown model '/tmp'"),
    ("nobody/no-such-model", None, r"unknown model 'nobody/no-such-model': choose one of: teacher \(and Hub"),
])
def test_bad_model_choices(captioner, clip, teacher, student, message):
    with pytest.raises(gr.Error, match=message):
        captioner.compare(clip, teacher, student)


def test_missing_audio(captioner):
    for empty in (None, ""):
        with pytest.raises(gr.Error, match="No audio: upload a file, record"):
            captioner.compare(empty)


def test_no_models_gives_instructions_not_a_traceback(app, tmp_path, clip):
    captioner = app.Captioner.from_folder(tmp_path, tmp_path)
    assert "No models yet" in captioner.status() and "python -m train all" in captioner.status()
    with pytest.raises(gr.Error, match="No teacher model is available.*EACAP_CHECKPOINTS"):
        captioner.compare(clip)
    with pytest.raises(gr.Error, match="No student model is available"):
        captioner.caption(clip)
    for demo in (app.build_demo(captioner), app.demo):  # the page still builds; app.demo is `python app.py`'s
        assert "No models yet" in status_text(demo)


def status_text(demo: gr.Blocks) -> str:
    return next(block.value for block in demo.blocks.values() if getattr(block, "elem_id", None) == "status")


def test_broken_and_extra_checkpoints(app, tiny_checkpoints, examples_dir, tmp_path, clip, monkeypatch):
    """A broken folder is reported on the page; extra models are offered, loaded on demand and evicted."""
    monkeypatch.setattr(app, "MODEL_CACHE_SIZE", 1)
    teacher_dir, student_dir = map(Path, tiny_checkpoints)
    shutil.copytree(teacher_dir, tmp_path / "teacher")
    for i in range(app.MODEL_CACHE_SIZE + 2):  # one more than the cache holds besides the defaults
        shutil.copytree(student_dir, tmp_path / f"student_{i}")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    (tmp_path / "notes").mkdir()  # no config.json: not a checkpoint, not a problem
    captioner = app.Captioner.from_folder(tmp_path, examples_dir)
    bank = captioner.bank
    assert bank.choices("student") == [f"student_{i}" for i in range(app.MODEL_CACHE_SIZE + 2)]
    assert bank.default("student") == "student_0"  # no folder called "student": the first one
    assert len(bank.problems) == 1 and "broken" in bank.problems[0] and "not valid JSON" in captioner.status()
    for name in bank.choices("student"):
        assert captioner.compare(clip, "teacher", name, 1, 5)["student"]["name"] == name
    assert set(bank._models) == {"teacher", "student_0", *bank.choices("student")[-app.MODEL_CACHE_SIZE:]}
    assert all(pair[1] in bank._models for pair in bank._galleries)  # no gallery outlives its model


def test_page_load_runs_an_example_from_the_address(captioner):
    request = SimpleNamespace(query_params={"example": "low hum"})
    outputs = captioner.page_load("teacher", "student", 3, 20, request)
    assert outputs[0].endswith("low_hum.flac") and outputs[1]  # the audio box and the teacher's caption
    nothing = captioner.page_load("teacher", "student", 3, 20, SimpleNamespace(query_params={}))
    assert all(isinstance(o, type(gr.skip())) for o in nothing)
    with pytest.raises(gr.Error, match="no example called 'dog'.*low_hum"):
        captioner.page_load("teacher", "student", 3, 20, SimpleNamespace(query_params={"example": "dog"}))


def test_settings_from_the_environment(app):
    assert app.Settings.from_env({}) == app.Settings()
    settings = app.Settings.from_env({"EACAP_CLIENT_QUEUE": "3", "EACAP_TIMELINE_MAX_MINUTES": "2.5",
                                      "EACAP_UPLOAD_MINUTES": "30", "EACAP_MAX_FILE_SIZE": "50MB",
                                      "EACAP_HUB_MODELS": " owner/a, owner/b ,owner/a", "SPACE_ID": "me/space"})
    assert settings.client_queue == 3 and settings.timeline_minutes == 2.5 and settings.max_file_size == "50mb"
    assert settings.hub_models == ("owner/a", "owner/b")
    assert settings.proxy_hops == 1  # on a Space, its proxy tells who the client is
    assert settings.delete_cache == (300, 1800)  # looked for every 5 min, deleted after 30
    for name, value, message in [
        ("EACAP_CLIENT_QUEUE", "abc", "EACAP_CLIENT_QUEUE must be a whole number from 0 to 10000, got 'abc'"),
        ("EACAP_CONCURRENCY", "0", "EACAP_CONCURRENCY must be a whole number from 1 to 64, got '0'"),
        ("EACAP_TIMELINE_MAX_MINUTES", "90", "EACAP_TIMELINE_MAX_MINUTES must be a number from 0.5 to 60, got '90'"),
        ("EACAP_HUB_MODELS", "owner/a,../etc", "EACAP_HUB_MODELS: '../etc' is not a Hub model id"),
        ("EACAP_MAX_FILE_SIZE", "lots", "EACAP_MAX_FILE_SIZE must be a size such as 200mb"),
    ]:
        with pytest.raises(app.SettingsError, match=message):
            app.Settings.from_env({name: value})


def test_page_limits_and_queues(app, captioner):
    """The sliders offer what eacap.requests allows; timelines have their own queue; uploads are temporary."""
    from eacap.requests import BEAM_SIZE, MAX_LENGTH

    settings = dataclasses.replace(captioner.settings, timeline_concurrency=2, upload_minutes=90)
    demo = app.build_demo(app.Captioner(captioner.bank, settings))
    beam, length = (b for b in demo.blocks.values() if isinstance(b, gr.Slider))
    assert (beam.minimum, beam.maximum) == BEAM_SIZE
    assert (length.minimum, length.maximum) == (MAX_LENGTH[0], app.caption_length_limit(captioner.bank))
    queues = {fn.name: (fn.concurrency_id, fn.concurrency_limit) for fn in demo.fns.values() if fn.validator}
    assert queues == {"caption": ("models", "default"), "compare": ("models", "default"),
                      "compare_view": ("models", "default"), "page_load": ("models", "default"),
                      "timeline": ("timelines", 2), "timeline_view": ("timelines", 2)}
    assert demo.delete_cache == (300, 90 * 60)
    assert demo._queue.max_size == settings.queue_size


# -- the running app, through gradio_client -------------------------------------------------------------------


def test_api_endpoints(client, clip):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {"/caption", "/compare", "/timeline"}  # UI-only events stay out of the API
    compared = client.predict(handle_file(clip), "teacher", "student", 3, 20, api_name="/compare")
    assert compared["name"] == "birdsong.wav" and compared["speedup"] > 0
    assert compared["teacher"]["caption"] and compared["student"]["caption"]
    captioned = client.predict(handle_file(clip), "teacher", 1, 10, api_name="/caption")
    assert captioned["role"] == "teacher" and captioned["caption"]
    assert client.predict(handle_file(clip), api_name="/caption")["role"] == "student"  # defaults


def test_timeline_api_and_view(app, client, captioner, tmp_path):
    """A 40 s recording: both models' timelines over the API, and the page's tables from the same handler."""
    path = tmp_path / "walk.flac"
    sf.write(path, np.concatenate([tone(20.0, freq=300), np.zeros(16000 * 12), tone(8.0, freq=2000)]), 16000)
    result = client.predict(handle_file(str(path)), "teacher", "student", 1, 8, api_name="/timeline")
    assert result["speedup"] > 0
    for role in ("teacher", "student"):
        timeline = result[role]
        assert timeline["role"] == role and timeline["duration"] == pytest.approx(40.0)
        segments = timeline["segments"]
        assert segments[0]["start"] == 0.0 and segments[-1]["end"] == pytest.approx(40.0)
        assert sum(s["windows"] for s in segments) == 7 and any(s["silent"] for s in segments)
    teacher_rows, student_rows, summary, raw = captioner.timeline_view(str(path), None, None, 1, 8,
                                                                        progress=lambda *a, **k: None)
    assert [row[2] for row in student_rows] == [s["text"] for s in raw["student"]["segments"]]
    assert teacher_rows[0][:2] == ["00:00", app.clock_time(raw["teacher"]["segments"][0]["end"])]
    assert "00:40 of audio, 7 windows" in summary and "faster" in summary
    start = app.segment_start("student")
    event = type("Event", (), {"index": [len(student_rows) - 1, 0]})()
    assert start(raw, event) == raw["student"]["segments"][-1]["start"]
    assert start(None, event) == 0.0


def bad_inputs(folder: Path) -> list[tuple[str | None, str]]:
    """(file, part of the error message) for each class of bad input."""
    files = {
        "notes.wav": (b"these are meeting notes, not audio", "notes.wav: not readable as audio"),
        "empty.wav": (b"", "empty.wav: the file is empty (0 bytes)"),
    }
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    t = np.arange(800) / 16000
    sf.write(folder / "click.wav", np.sin(2 * np.pi * 1000 * t), 16000)
    sf.write(folder / "broken.wav", np.array([0.1, np.nan] * 8000, dtype=np.float32), 16000, subtype="FLOAT")
    sf.write(folder / "phone.wav", tone(1.0, rate=4000), 4000)
    sf.write(folder / "bat.wav", tone(0.5, rate=384000, freq=40000), 384000)
    sf.write(folder / "array.wav", np.zeros((8000, 40), dtype=np.float32) + 0.01, 16000)
    sf.write(folder / "meeting.flac", np.zeros(8000 * 3700, dtype=np.int16), 8000)  # 62 min: FLAC packs silence small
    return [
        *((str(folder / name), message) for name, (_, message) in files.items()),
        (str(folder / "click.wav"), "click.wav: only 0.05 s of audio; record at least 0.1 s"),
        (str(folder / "broken.wav"), "broken.wav: it contains NaN or infinite samples"),
        (str(folder / "phone.wav"), "phone.wav: sample rate 4000 Hz is outside the supported 8000-192000 Hz"),
        (str(folder / "bat.wav"), "bat.wav: sample rate 384000 Hz is outside"),
        (str(folder / "array.wav"), "array.wav: 40 channels is more than 32; downmix it first"),
        (str(folder / "meeting.flac"), "meeting.flac: 62 min of audio is over the 60 min limit"),
    ]


def test_bad_inputs_are_named_through_the_api(client, tmp_path):
    for path, message in bad_inputs(tmp_path):
        for endpoint in ("/compare", "/caption"):
            with pytest.raises(AppError) as error:
                client.predict(handle_file(path), api_name=endpoint)
            assert message in str(error.value), (endpoint, str(error.value))
    with pytest.raises(AppError, match="No audio"):
        client.predict(None, api_name="/compare")
    # ...and the app is still fine afterwards
    ok = tmp_path / "ok.ogg"
    sf.write(ok, tone(1.0, rate=22050), 22050)
    assert client.predict(handle_file(str(ok)), api_name="/compare")["duration"] == pytest.approx(1.0, abs=1e-3)


def test_silent_and_odd_inputs_work_with_warnings(client, tmp_path):
    silent, stereo = tmp_path / "silence.wav", tmp_path / "stereo_11k.wav"
    sf.write(silent, np.zeros(16000, dtype=np.int16), 16000)
    sf.write(stereo, np.stack([tone(1.2, rate=11025), -tone(1.2, rate=11025, freq=300)], axis=1), 11025)
    assert "digital silence" in client.predict(handle_file(str(silent)), api_name="/compare")["warnings"][0]
    result = client.predict(handle_file(str(stereo)), api_name="/caption")
    assert result["warnings"] == [] and result["duration"] == pytest.approx(1.2, abs=1e-3)


def test_load_20_clients_5_requests_each(client, clip):
    """20 users at once (20 addresses, as a proxy would name them), 5 requests each: the queue serves them all, none
    fails."""
    url, errors, done = client.src, [], []

    def user(i: int) -> None:
        own = Client(url, verbose=False, headers={"X-Forwarded-For": f"203.0.113.{i + 1}"},
                     httpx_kwargs={"timeout": CLIENT_TIMEOUT})
        for j in range(5):
            try:
                if (i + j) % 2:
                    result = own.predict(handle_file(clip), api_name="/compare")
                    assert result["teacher"]["caption"] and result["student"]["caption"]
                else:
                    assert own.predict(handle_file(clip), "student", 1, 10, api_name="/caption")["caption"]
                done.append(1)
            except Exception as error:  # any failure: counted and reported below
                errors.append(f"client {i} request {j}: {error!r}")

    with ThreadPoolExecutor(20) as pool:
        list(pool.map(user, range(20)))
    assert not errors, errors[:3]
    assert len(done) == 100


# -- live captions ------------------------------------------------------------------------------------------------

def test_live_captions_from_microphone_chunks(app, captioner):
    """The live panel's handler over what gr.Audio(streaming=True) sends: (rate, int16 samples) chunks. Captions
    come from both models as the stream goes; stopping ends the session and frees its place."""
    rate = 48000
    sound = (tone(1.0, rate=rate, freq=600) * 32767).astype(np.int16)
    session, shown_at = None, []
    for second in range(4):
        chunk = sound if second % 2 == 0 else np.zeros(rate, dtype=np.int16)  # sound, silence, sound, silence
        for half in (chunk[: rate // 2], chunk[rate // 2:]):
            session, teacher, student, info, history = captioner.live_chunk((rate, half), session, "teacher",
                                                                           "student", 3, 30)
            shown_at.append((teacher, student))
    session.captioner.finish()
    teacher, student, info, history = app.live_view(session)
    assert teacher and student and "real-time factor" in info and "windows captioned" in info
    assert {row[1] for row in history} == {"teacher", "student"} and len(history) <= 2 * app.LIVE_HISTORY
    assert any(row[2] == "silence: no sound can be heard" for row in history) or len({r[2] for r in history}) > 1
    assert len(captioner.live_sessions.open_sessions) == 1
    state, final_info = captioner.live_stop(session)
    assert state is None and "heard" in final_info and captioner.live_sessions.open_sessions == []


def test_live_captions_refuse_bad_options_and_too_many_sessions(app, captioner, monkeypatch):
    with pytest.raises(app.gr.Error, match="beam_size must be a whole number from 1 to 8"):
        captioner.live_chunk(None, None, "teacher", "student", 99, 30)
    monkeypatch.setattr(app, "LIVE_SESSIONS", 1)
    session = captioner.live_chunk(None, None, "teacher", "student", 3, 30)[0]
    with pytest.raises(app.gr.Error, match="busy: 1 live captioning sessions"):
        captioner.live_chunk(None, None, "teacher", "student", 3, 30)
    captioner.live_stop(session)
    assert captioner.live_sessions.open_sessions == []
