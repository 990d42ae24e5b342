"""The app as an attacker meets it (issue 26): one client must not stall, flood or fill up a public Space.

Every test here stays on loopback, sends a bounded number of requests and asserts what happens in which order, never
how long it takes. Where an order would otherwise depend on the machine's speed, a `Gate` holds the requests in the
app until the test has seen what it needs. "Clients" are told apart by X-Forwarded-For, as the Space's proxy names
them (`proxy_hops=1`). The tiny random models caption nonsense, so no caption text is checked.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from conftest import tone

from eacap.requests import BEAM_SIZE, MAX_LENGTH, shown

gradio_client = pytest.importorskip("gradio_client")
Client, handle_file = gradio_client.Client, gradio_client.handle_file
AppError, ValidationError = gradio_client.exceptions.AppError, gradio_client.exceptions.ValidationError
PROCESSING = gradio_client.utils.Status.PROCESSING

TIMEOUT = 300.0  # s: generous for a loaded 2-core machine; a deadline for hangs, not a timing assertion
BUSY = re.compile(r"busy: you already have (\d+) requests waiting; try again in about (\d+) s")


def connect(demo, address: str | None = None) -> Client:
    """A gradio_client for `demo`, as the client at `address` (sent as X-Forwarded-For) when given."""
    headers = {"X-Forwarded-For": address} if address else None
    return Client(demo.local_url, verbose=False, headers=headers, httpx_kwargs={"timeout": TIMEOUT})


def wait_until(condition, seconds: float = TIMEOUT) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


class Gate:
    """Replaces `name` in the app module: every call waits until `open()` (at most `limit` s), then runs the real
    function. `entered` is set once a call is waiting, i.e. a request is running in the app."""

    def __init__(self, monkeypatch, app, name: str, limit: float = 120.0):
        self.real, self.limit = getattr(app, name), limit
        self.entered, self.opened = threading.Event(), threading.Event()
        monkeypatch.setattr(app, name, self)

    def __call__(self, *args, **kwargs):
        self.entered.set()
        self.opened.wait(self.limit)
        return self.real(*args, **kwargs)

    def open(self) -> None:
        self.opened.set()


def app_records(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "eacap.app"]


@pytest.fixture
def clip(tmp_path) -> str:
    path = tmp_path / "clip.wav"
    sf.write(path, tone(1.5), 16000)
    return str(path)


@pytest.fixture
def recording(tmp_path) -> str:
    """Three minutes of a gliding tone at 8 kHz: 35 windows of work for each model in a timeline."""
    rate, seconds = 8000, 180
    t = np.arange(rate * seconds) / rate
    wave = 0.3 * np.sin(2 * np.pi * (300 + 200 * np.sin(2 * np.pi * t / 7)) * t)
    path = tmp_path / "walk.wav"
    sf.write(path, wave.astype(np.float32), rate, subtype="PCM_16")
    return str(path)


# -- stall: long timelines must not hold up short requests ----------------------------------------------------


@pytest.mark.slow
def test_a_caption_is_served_while_timelines_run(app, serve_app, monkeypatch, recording, clip):
    """Five timelines of a 3-min recording from one client (the finding: another user's 0.2 s /caption then waited
    98 s): another client's /caption comes back while the first timeline is still running and the other four wait.
    The timelines are held (`Gate`) until the caption is back, so the order does not depend on the machine; the
    running one then captions the whole recording."""
    demo = serve_app(proxy_hops=1)
    gate = Gate(monkeypatch, app, "caption_timeline")
    # One client, five sessions: Gradio cancels by session and endpoint, and the queued ones are cancelled below.
    timelines = [connect(demo, "198.51.100.1").submit(handle_file(recording), "teacher", "student", 1, 10,
                                                      api_name="/timeline") for _ in range(5)]
    running = []
    try:
        assert gate.entered.wait(TIMEOUT), "no timeline started"
        other = connect(demo, "198.51.100.2")
        captioned = other.submit(handle_file(clip), "student", 1, 10, api_name="/caption").result(timeout=120)
        assert captioned["role"] == "student" and captioned["caption"]
        assert not any(job.done() for job in timelines)  # it was served before any of them finished
        wait_until(lambda: any(job.status().code == PROCESSING for job in timelines))
        running = [job for job in timelines if job.status().code == PROCESSING]
        for job in timelines:
            if job not in running:
                job.cancel()  # only one real timeline is needed (and the test stays short)
    finally:
        gate.open()
    assert len(running) == 1  # one timeline at a time (EACAP_TIMELINE_CONCURRENCY=1)
    result = running[0].result(timeout=TIMEOUT)
    assert result["teacher"]["duration"] == pytest.approx(180.0) and result["student"]["segments"]


def test_timelines_are_limited_in_length(app, tiny_captioner, tmp_path):
    """Longer recordings than the app's timeline limit are refused from the file's header, with the limit and the
    way to caption them anyway (the command line, up to an hour)."""
    captioner = app.Captioner(tiny_captioner.bank, app.Settings(timeline_minutes=0.5))
    path = tmp_path / "lecture.flac"
    sf.write(path, tone(72.0, rate=8000), 8000)
    with pytest.raises(app.gr.Error, match=r"lecture.flac: 1.2 min of audio is over this app's timeline limit of "
                                           r"0.5 min \(EACAP_TIMELINE_MAX_MINUTES\); the command line has no such "
                                           r"limit up to its 1 hour: python -m eacap caption FILE --timeline"):
        captioner.timeline(str(path), progress=lambda *a, **k: None)
    short = tmp_path / "short.wav"
    sf.write(short, tone(25.0, rate=8000), 8000)
    assert captioner.timeline(str(short), None, None, 1, 5, progress=lambda *a, **k: None)["speedup"] > 0


# -- flood: one client gets a share of the queue, not all of it ------------------------------------------------


@pytest.mark.slow
def test_one_client_cannot_fill_the_queue(app, serve_app, monkeypatch, clip, caplog):
    """12 captions at once from one client, held running or queued: 8 are taken (its share), 4 are refused at once
    with "busy" and when to come back, never "Queue is full", each refusal logged in one line. Another client still
    gets in. A queued request its client cancels gives its place back; once the requests are done, all is free."""
    caplog.set_level(logging.INFO, logger="eacap.app")
    monkeypatch.setattr(app.Admission, "GRACE", 0.0)  # cancelled requests' tickets count as stale at once
    demo = serve_app(proxy_hops=1, client_queue=8)
    admission = demo.eacap_admission
    gate = Gate(monkeypatch, app, "load_audio")
    # One client, a session per request: Gradio cancels by session and endpoint, and two are cancelled below.
    sessions = [connect(demo, "198.51.100.7") for _ in range(12)]
    jobs = [session.submit(handle_file(clip), "student", 1, 10, api_name="/caption") for session in sessions]
    try:
        wait_until(lambda: sum(job.done() for job in jobs) == 4 and len(admission.tickets) == 8)
        refused = [job for job in jobs if job.done()]
        for job in refused:
            with pytest.raises(ValidationError) as error:
                job.result()
            found = BUSY.search(str(error.value))
            assert found and found.group(1) == "8" and int(found.group(2)) >= 1, str(error.value)
            assert "Queue is full" not in str(error.value)
        busy_lines = [r for r in app_records(caplog) if "busy" in r.getMessage()]
        assert len(busy_lines) == 4
        for record in busy_lines:
            assert record.levelno == logging.WARNING and record.exc_info is None and "\n" not in record.getMessage()
            assert "refused /caption from 198.51.100.7: busy" in record.getMessage()

        # another client has its own share
        neighbour = connect(demo, "198.51.100.8").submit(handle_file(clip), "teacher", 1, 5, api_name="/caption")
        wait_until(lambda: len(admission.tickets) == 9)

        # two queued requests cancelled by their client: their places are free again
        wait_until(lambda: any(job.status().code == PROCESSING for job in jobs))
        waiting = [job for job in jobs if job not in refused and job.status().code != PROCESSING]
        for job in waiting[:2]:
            job.cancel()
        wait_until(lambda: len(app.admitted_requests(demo)) == 7)
        again = sessions[0].submit(handle_file(clip), "student", 1, 5, api_name="/caption")
        wait_until(lambda: len(admission.tickets) == 8)  # 7 of the flood's (2 stale ones dropped) + the neighbour's
        assert not again.done()
    finally:
        gate.open()
    assert neighbour.result(timeout=TIMEOUT)["role"] == "teacher"
    assert again.result(timeout=TIMEOUT)["caption"]
    wait_until(lambda: not admission.tickets)
    assert sessions[-1].predict(handle_file(clip), "student", 1, 5, api_name="/caption")["caption"]


# -- arguments: the app's messages, never Gradio's, never a traceback ------------------------------------------


@pytest.mark.slow
def test_decoding_arguments_get_the_apps_message(app, serve_app, clip, caplog, capfd):
    """Non-numbers, booleans, lists and out-of-range numbers for beam size and length, on each endpoint: each is
    refused by the app with the argument, the value and the range, and logged in one line without a traceback."""
    caplog.set_level(logging.INFO, logger="eacap.app")
    client = connect(serve_app())
    low, high = BEAM_SIZE
    cases = [(value, 10, f"beam_size must be a whole number from {low} to {high}, got {shown(value)}")
             for value in ("abc", None, [1], True, low - 1, high + 1, 2.5, "")]
    low, high = MAX_LENGTH
    cases += [(3, value, f"max_length must be a whole number from {low} to {high}, got {shown(value)}")
              for value in ("abc", None, [1], False, low - 1, high + 1)]
    for beam, length, message in cases:
        with pytest.raises(AppError) as error:
            client.predict(handle_file(clip), "student", beam, length, api_name="/caption")
        assert str(error.value) == message
    for endpoint in ("/compare", "/timeline"):
        with pytest.raises(AppError, match=re.escape("beam_size must be a whole number from 1 to 8, got 'abc'")):
            client.predict(handle_file(clip), "teacher", "student", "abc", 10, api_name=endpoint)
    refusals = [r for r in app_records(caplog) if r.getMessage().startswith("refused")]
    assert len(refusals) == len(cases) + 2  # one line per refused request
    assert all(r.levelno == logging.INFO and r.exc_info is None for r in refusals)
    assert "Traceback" not in "".join(capfd.readouterr())


@pytest.mark.slow
def test_only_the_offered_models_are_loaded(app, serve_app, tiny_captioner, tiny_checkpoints, clip):
    """Local paths (relative, absolute, to a real checkpoint on the server or to nothing) and Hub ids the server does
    not list all get the same message, whatever exists on the server, and nothing is loaded."""
    client = connect(serve_app())
    loaded = set(tiny_captioner.bank._models)
    names = ["checkpoints/teacher", "eacap/models", "nobody/no-such-model", tiny_checkpoints[0], "../../etc/passwd",
             "/tmp", "teacher/../student"]
    messages = set()
    for name in names:
        with pytest.raises(AppError) as error:
            client.predict(handle_file(clip), name, 1, 10, api_name="/caption")
        messages.add(str(error.value).replace(shown(name), "NAME"))
    assert messages == {"unknown model NAME: choose one of: student, teacher (and Hub ids the server allows: none)"}
    with pytest.raises(AppError) as error:
        client.predict(handle_file(clip), "checkpoints/teacher", "student", 1, 10, api_name="/compare")
    assert str(error.value) == ("unknown model 'checkpoints/teacher': choose one of: teacher "
                                "(and Hub ids the server allows: none)")
    assert set(tiny_captioner.bank._models) == loaded


@pytest.mark.slow
def test_a_huge_model_name_gets_the_length_message(app, serve_app, clip, caplog):
    caplog.set_level(logging.INFO, logger="eacap.app")
    client = connect(serve_app())
    with pytest.raises(AppError) as error:
        client.predict(handle_file(clip), "x" * 5000, 1, 10, api_name="/caption")
    message = str(error.value)
    assert message.startswith("model must be a name of 1 to 200 characters, got 5000 characters (")
    assert len(message) < 200 and "bug" not in message
    [record] = app_records(caplog)
    assert record.levelno == logging.INFO and record.exc_info is None and len(record.getMessage()) < 250


def test_allowed_hub_ids_and_nothing_else(app, tiny_captioner, tiny_checkpoints, clip):
    """An id in EACAP_HUB_MODELS is offered and goes to the loader (here offline, so it says so); any other is not."""
    bank = app.ModelBank.scan(Path(tiny_checkpoints[0]).parent, [], hub=("nobody/allowed-model",))
    captioner = app.Captioner(bank, app.Settings(hub_models=bank.hub))
    assert bank.offered("teacher") == ["teacher", "nobody/allowed-model"]
    with pytest.raises(app.gr.Error, match="Hub model 'nobody/allowed-model' is not in the local cache"):
        captioner.caption(clip, "nobody/allowed-model")
    with pytest.raises(app.gr.Error, match=re.escape("unknown model 'nobody/other': choose one of: student, teacher "
                                                     "(and Hub ids the server allows: nobody/allowed-model)")):
        captioner.caption(clip, "nobody/other")


# -- fill up: uploads are deleted --------------------------------------------------------------------------------


@pytest.mark.slow
def test_uploads_are_deleted_after_their_age(serve_app, tmp_path):
    """Uploads to an app that keeps them 3 s are gone a few seconds later, while the server runs; an app that keeps
    them an hour still has its upload."""
    def upload(demo, name: str, seconds: float):
        path = tmp_path / name
        sf.write(path, tone(seconds), 16000)  # different lengths: different content, different cache folders
        with path.open("rb") as file:
            response = httpx.post(f"{demo.local_url}gradio_api/upload", files={"files": (name, file)}, timeout=60)
        response.raise_for_status()
        return Path(response.json()[0])

    keeper, forgetter = serve_app(), serve_app(upload_minutes=0.05)
    kept, forgotten = upload(keeper, "kept.wav", 1.25), upload(forgetter, "forgotten.wav", 1.5)
    assert kept.is_file() and forgotten.is_file()
    wait_until(lambda: not forgotten.exists(), 60)
    assert kept.is_file()


# -- logs: one line per refusal, a traceback only for a bug ----------------------------------------------------


@pytest.mark.slow
def test_a_refusal_logs_one_line_and_a_bug_a_traceback(app, serve_app, monkeypatch, clip, caplog, capfd):
    caplog.set_level(logging.INFO, logger="eacap.app")
    client = connect(serve_app())
    with pytest.raises(AppError, match="beam_size must be a whole number from 1 to 8, got 99"):
        client.predict(handle_file(clip), "student", 99, 10, api_name="/caption")
    [record] = app_records(caplog)
    assert record.levelno == logging.INFO and record.exc_info is None
    assert record.getMessage() == "refused /caption: beam_size must be a whole number from 1 to 8, got 99"
    assert "Traceback" not in "".join(capfd.readouterr())

    caplog.clear()

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(app, "load_audio", broken)
    with pytest.raises(AppError, match=r"Captioning failed unexpectedly \(RuntimeError: boom\)\. This is a bug"):
        client.predict(handle_file(clip), "student", 1, 10, api_name="/caption")
    [record] = app_records(caplog)
    assert record.levelno == logging.ERROR and record.exc_info is not None  # the traceback, for whoever fixes it
