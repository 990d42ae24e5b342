"""What a trained run is, by name and folder, for every stage that trains, scores or ships one: a student's recipe
and run folder, what a run records when it starts (its architecture, the student it started from, how its KD
targets were decoded), the names of ablation runs, the shipped student, where checkpoints are exported, and the
command that trained a run. Teacher runs are `teacher/`; student runs `students/[<group>/]<recipe>_seed<seed>/`.
Building or loading a run's model: `train.core.models`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from eacap.models import ModelConfig
from eacap.models.presets import STUDENT_SHAPES, named_shape
from train.core.config import PipelineConfig
from train.core.data import run_path

KD_CHOICES = ("none", "seq", "token", "seq+mse", "seq+contrastive")
MODEL_FILE = "model.json"  # a student run's architecture, written when it starts (`recorded_architecture`)
INIT_FILE = "init.json"    # the trained model a run started from (`--init-from`), written when it starts
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
            raise ValueError("--audio-only needs a KD target for unlabelled clips: use --kd seq, seq+mse or "
                             "seq+contrastive")

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


def recorded_architecture(folder: Path) -> ModelConfig | None:
    """The architecture a student run in `folder` recorded when it started (None: an older run, of the base shape)."""
    path = folder / MODEL_FILE
    return ModelConfig.from_dict(json.loads(path.read_text())) if path.is_file() else None


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
        parts = [f"python -m train teacher --preset {config.name}"]
        init = run_path(config, "teacher", INIT_FILE)
        if init.is_file():
            parts.append(f"--init-from {json.loads(init.read_text())['from']}")
        runs = run_path(config, "teacher", "runs.jsonl")
        if runs.is_file():
            steps = json.loads(runs.read_text().splitlines()[-1])["schedule"]["steps"]
            if steps != config.teacher.steps:
                parts.append(f"--steps {steps}")
        return " ".join(parts)
    parts = [f"python -m train student --preset {config.name} --kd {SHIPPED_KD} --audio-only"]
    architecture = recorded_architecture(run_path(config, "students", run_name))
    named = named_shape(architecture) if architecture is not None else None
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


def group_name(steps: int, shape: str = "base") -> str:
    """The folder of one ablation: its step budget and, unless base, the student shape of its rows."""
    return f"ablation{steps}" + ("" if shape == "base" else f"_{shape}")


def parse_group(name: str) -> tuple[int, str] | None:
    """(steps, shape) of an ablation folder name, or None for any other name."""
    match = re.fullmatch(r"ablation(\d+)(?:_(\w+))?", name)
    if not match or (match[2] or "base") not in STUDENT_SHAPES:
        return None
    return int(match[1]), match[2] or "base"


def row_name(run_name: str, shape: str) -> str:
    """A row's recipe name from its run name in an ablation of `shape`: the shape suffix and the seed dropped."""
    name = re.sub(r"_seed\d+$", "", run_name.rsplit("/", 1)[-1])
    return name.removesuffix(f"_{shape}") if shape != "base" else name


def checkpoints_dir(config: PipelineConfig) -> Path:
    """Where `train export` writes the preset's checkpoint folders: the shipped checkpoints/ for the full preset,
    elsewhere under the run folder (so CI never touches the committed checkpoints)."""
    return Path("checkpoints") if config.name == "full" else run_path(config, "checkpoints")
