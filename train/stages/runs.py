"""What a trained run is, for every stage that trains, scores or ships one: a student's recipe and run folder, the
architecture it recorded, how to load a run (or an exported checkpoint folder) as a model, and the command that
trained it. Teacher runs are `teacher/`; student runs `students/[<group>/]<recipe>_seed<seed>/`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import load_file

from eacap.models import CaptionModel, ModelConfig
from eacap.models.presets import STUDENT_SHAPES, named_shape, student_config
from train.core.config import PipelineConfig
from train.core.data import run_path
from train.stages.cache import build_tokenizer, caption_model

KD_CHOICES = ("none", "seq", "token", "seq+mse", "seq+contrastive")
MODEL_FILE = "model.json"  # a student run's architecture, written when it starts (read by `load_run_model`)
INIT_FILE = "init.json"    # the trained student a run started from (`--init-from`), written when it starts
TARGETS_FILE = "kd_targets.json"  # how its seq-KD targets (the teacher's pseudo captions) were decoded
SHIPPED_KD = "seq+contrastive"  # the shipped recipe: seq-KD + contrastive encoder KD + audio-only data


@dataclass(frozen=True)
class Recipe:
    kd: str = "seq+contrastive"
    audio_only: bool = False
    label_fraction: float | None = None
    w_sup: float = 1.0
    w_seq: float = 1.0
    w_tok: float = 1.0
    w_enc: float = 1.0
    shape: str = "base"   # the student's architecture (eacap.models.presets.STUDENT_SHAPES)
    init_from: str | None = None  # a trained student (run name or checkpoint folder) to start from, pruned to `shape`

    def __post_init__(self):
        if self.shape not in STUDENT_SHAPES:
            raise ValueError(f"--shape must be one of {', '.join(STUDENT_SHAPES)}, got {self.shape!r}")
        if self.kd not in KD_CHOICES:
            raise ValueError(f"--kd must be one of {', '.join(KD_CHOICES)}, got {self.kd!r}")
        if self.audio_only and self.kd in ("none", "token"):
            raise ValueError("--audio-only needs a KD target for unlabelled clips: use --kd seq, seq+mse or seq+contrastive")

    @property
    def uses_seq(self) -> bool:
        return self.kd.startswith("seq")

    @property
    def encoder_kd(self) -> str | None:
        return self.kd.split("+")[1] if "+" in self.kd else None

    @property
    def name(self) -> str:
        name = self.kd.replace("+", "_")
        if self.audio_only:
            name += "_audio"
        if self.label_fraction is not None:
            name += f"_{round(self.label_fraction * 100)}pct"
        if self.shape != "base":
            name += f"_{self.shape}"
        if self.init_from:
            name += "_pruned"
        return name


def build_student(config: PipelineConfig, shape: str = "base") -> CaptionModel:
    vocab_size = build_tokenizer(config).vocab_size
    teacher_width = config.teacher_model(vocab_size).encoder.out_dim
    return caption_model(config, student_config(vocab_size, config.model_size, teacher_dim=teacher_width, shape=shape))


def load_student_architecture(config: PipelineConfig, folder: Path) -> CaptionModel:
    """An untrained student with the architecture the run in `folder` trained (older runs: the base shape)."""
    path = folder / MODEL_FILE
    if not path.is_file():
        return build_student(config)
    return caption_model(config, ModelConfig.from_dict(json.loads(path.read_text())))


def student_dir(config: PipelineConfig, recipe: Recipe, group: str = ""):
    """students/[<group>/]<recipe>_seed<seed>: a group keeps runs of another budget (the ablation) apart."""
    augmented = f"_aug{round(config.augment * 100)}" if config.augment > 0 else ""  # another recipe: its own run
    return run_path(config, "students", group, f"{recipe.name}{augmented}_seed{config.seed}")


def checkpoint_run(name: str) -> str | None:
    """The run a checkpoint folder was exported from (its config.json says), or None if `name` is no checkpoint."""
    config = Path(name) / "config.json"
    if not config.is_file():
        return None
    data = json.loads(config.read_text())
    return "teacher" if data.get("model", {}).get("role") == "teacher" else data.get("run") or Path(name).name


def load_run_model(config: PipelineConfig, name: str) -> CaptionModel:
    """'teacher', a student run's folder name under students/ (e.g. seq_contrastive_audio_seed0), or an exported
    checkpoint folder (e.g. checkpoints/student: the shipped model, whose run folder a fresh machine lacks)."""
    if checkpoint_run(name) is not None:
        from eacap.checkpoint import load_model
        return load_model(name)
    if name == "teacher":
        from train.stages.teacher import load_trained_teacher
        return load_trained_teacher(config)
    path = run_path(config, "students", name, "best.safetensors")
    if not path.is_file():
        known = sorted(p.name for p in run_path(config, "students").glob("*") if (p / "best.safetensors").is_file())
        raise FileNotFoundError(f"no trained student {name!r} at {path}; trained ones: {', '.join(known) or 'none'}")
    model = load_student_architecture(config, path.parent)
    model.load_state_dict(load_file(path))
    return model.eval()


def targets_decoding(config: PipelineConfig, name: str) -> dict | None:
    """The decoding options of the seq-KD targets a student run was trained on (None: not recorded or no KD)."""
    path = run_path(config, "students", name, TARGETS_FILE)
    return json.loads(path.read_text()) if path.is_file() else None


def shipped_recipe(config: PipelineConfig, shape: str | None = None):
    """The recipe of the student the preset ships (its architecture: `config.student_shape`), or of the same recipe
    in another `shape`. With `config.student_init`, the shipped student starts from that shape's run, pruned."""
    if shape is not None and shape != config.student_shape:
        return Recipe(SHIPPED_KD, audio_only=True, shape=shape)
    init = f"{shipped_recipe(config, config.student_init).name}_seed{config.seed}" if config.student_init else None
    return Recipe(SHIPPED_KD, audio_only=True, shape=config.student_shape, init_from=init)


def shipped_student(config: PipelineConfig) -> str:
    """The run name of the shipped student, e.g. seq_contrastive_audio_lite_seed0."""
    return f"{shipped_recipe(config).name}_seed{config.seed}"


def command(config: PipelineConfig, role: str, run_name: str) -> str:
    """The command that trains this run, with the options it was trained with beyond the preset's defaults."""
    if role == "teacher":
        return f"python -m train teacher --preset {config.name}"
    parts = [f"python -m train student --preset {config.name} --kd {SHIPPED_KD} --audio-only"]
    named = named_shape(load_student_architecture(config, run_path(config, "students", run_name)).config)
    if named is not None and named[1] != "base":
        parts.append(f"--shape {named[1]}")
    init = started_from(config, run_name)
    if init:
        parts.append(f"--init-from {init['run']}")
    runs = run_path(config, "students", run_name, "runs.jsonl")
    if runs.is_file():
        schedule = json.loads(runs.read_text().splitlines()[-1])["schedule"]
        if schedule["steps"] != config.student.steps:
            parts.append(f"--steps {schedule['steps']}")
        if schedule["lr"] != config.student.lr:
            parts.append(f"--lr {schedule['lr']:g}")
    if config.audio_only_scenes is not None:
        parts.append(f"--audio-only-scenes {config.audio_only_scenes}")
    return " ".join(parts)


def started_from(config: PipelineConfig, run_name: str) -> dict | None:
    """The run's `init.json` (what `--init-from` did), or None for a student trained from random weights."""
    path = run_path(config, "students", run_name, INIT_FILE)
    return json.loads(path.read_text()) if path.is_file() else None
