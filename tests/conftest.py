"""Shared fixtures: tiny random checkpoints, generated audio and the app module, built in temp folders (nothing is
downloaded)."""
from __future__ import annotations

import importlib
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Compiled decoding steps (eacap.graphs) cost tens of seconds of compiling per call signature: only the tests of
# that path turn them on.
os.environ.setdefault("EACAP_COMPILE", "0")

import numpy as np
import pytest
import soundfile as sf
import torch

from eacap import CaptionModel, CaptionTokenizer, save_checkpoint
from eacap.models.presets import student_config, teacher_config

CAPTIONS = [
    "a dog barks twice while rain falls",
    "a man speaks then a door closes",
    "birds chirp as wind blows in the distance",
    "a car engine starts and a horn honks loudly",
    "water flows in a stream while a woman talks",
]


def make_tiny_models(seed: int = 0) -> tuple[CaptionModel, CaptionModel]:
    torch.manual_seed(seed)
    tokenizer = CaptionTokenizer.train(CAPTIONS)
    teacher = CaptionModel(teacher_config(tokenizer.vocab_size, "tiny"), tokenizer).eval()
    student = CaptionModel(student_config(tokenizer.vocab_size, "tiny", teacher_dim=teacher.config.encoder.out_dim),
                           tokenizer).eval()
    return teacher, student


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> tuple[str, str]:
    """(teacher_dir, student_dir): random tiny models saved in the checkpoint format."""
    root = tmp_path_factory.mktemp("checkpoints")
    teacher, student = make_tiny_models()
    return str(save_checkpoint(teacher, root / "teacher")), str(save_checkpoint(student, root / "student"))


def tone(seconds: float = 2.0, rate: int = 16000, freq: float = 440.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def wav_file(tmp_path) -> str:
    path = tmp_path / "tone.wav"
    sf.write(path, tone(), 16000)
    return str(path)


@pytest.fixture(scope="session")
def app(tmp_path_factory):
    """The app module, imported with an empty checkpoints folder: importing must be fast and never fail,
    whatever the developer's checkpoints/ holds. Tests then build their own demos over tiny models."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EACAP_CHECKPOINTS", str(tmp_path_factory.mktemp("no_checkpoints")))
        return importlib.import_module("app")


def write_examples(folder: Path) -> Path:
    """Three short clips that differ (tones and noise), enough for a gallery."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sf.write(folder / "low_hum.flac", tone(2.0, freq=120), 16000)
    sf.write(folder / "high_whistle.flac", tone(1.5, freq=2500, amplitude=0.2), 16000)
    sf.write(folder / "white_noise.flac", (0.1 * rng.standard_normal(24000)).astype(np.float32), 16000)
    (folder / "ATTRIBUTION.md").write_text("generated test tones\n")  # not audio: must be ignored
    return folder


@pytest.fixture(scope="session")
def tiny_captioner(app, tiny_checkpoints, tmp_path_factory):
    """The app's `Captioner` over the tiny models and three generated example clips, with the default settings."""
    examples = write_examples(tmp_path_factory.mktemp("app_examples"))
    return app.Captioner.from_folder(Path(tiny_checkpoints[0]).parent, examples, app.Settings())


@pytest.fixture
def serve_app(app, tiny_captioner):
    """`serve_app(**changes)` -> demo: the app over the tiny models with those `Settings` changed, listening on a
    free loopback port (`demo.local_url`); every one is closed after the test."""
    import dataclasses

    demos = []

    def serve(**changes):
        settings = dataclasses.replace(tiny_captioner.settings, **changes)
        demo = app.build_demo(app.Captioner(tiny_captioner.bank, settings))
        app.launch(demo, server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
        demos.append(demo)
        return demo

    yield serve
    for demo in demos:
        demo.close()
