"""Pipeline presets: what `python -m train all --preset tiny|full` builds, with which sizes and step budgets.

"tiny" runs end to end in CI in minutes (tiny models, random teacher encoder, a few dozen fixture scenes);
"full" is the recipe of the shipped checkpoints, sized so teacher + one student train in about 3 hours on a
2-core CPU (see README "Training"). Every stage reads its settings from here, so a row of the results table is
reproducible from the preset name plus the stage's own flags.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from eacap.models.presets import teacher_config

RUNS_ROOT = Path("data/runs")


@dataclass(frozen=True)
class Schedule:
    steps: int
    batch_size: int
    lr: float
    warmup: int                  # linear warm-up steps, then cosine decay to lr * final_lr_ratio
    weight_decay: float = 0.01
    final_lr_ratio: float = 0.02
    clip_norm: float = 1.0
    eval_every: int = 500        # steps between validation (model selection)
    eval_clips: int = 200        # val clips decoded per validation
    checkpoint_seconds: float = 300.0   # a resumable checkpoint at least this often

    def rescaled(self, steps: int) -> "Schedule":
        """The same schedule shape over another budget: warm-up keeps its share, validation at least at the end."""
        if steps < 1:
            raise ValueError(f"a step budget must be at least 1, got {steps}")
        return replace(self, steps=steps, warmup=max(1, round(self.warmup * steps / self.steps)),
                       eval_every=min(self.eval_every, steps))


@dataclass(frozen=True)
class PipelineConfig:
    name: str
    scenes: str                  # scene corpus preset (data/scenes/<scenes>)
    model_size: str              # eacap.models.presets size
    teacher_init: str            # "whisper": a converted pretrained Whisper encoder; "random": tiny/CI only
    teacher_trainable_layers: int    # top encoder layers trained with the decoder; the rest are cached
    teacher: Schedule
    student: Schedule
    tokenizer_min_count: int = 1
    max_caption_tokens: int = 32     # <s> + words + </s>; longer captions are cut
    pseudo_beam: int = 3
    eval_beam: int = 3
    eval_max_length: int = 30
    token_kd_topk: int = 16          # teacher distribution kept per token for token-level KD
    spec_augment: tuple[int, int, int, int] = (64, 2, 8, 2)   # time width, time stripes, freq width, freq stripes
    augment: float = 0.0         # share of training clips re-recorded (core/augment.py: EQ, reverb, noise, speed, gain)
    teacher_encoder: str = "tiny.en"   # which pretrained Whisper encoder (eacap.models.whisper.WHISPER_ENCODER_CONFIGS)
    teacher_augment: float = 0.0  # share of train scenes whose cached teacher-encoder output is of a re-recorded copy
    seed: int = 0
    audio_only_scenes: int | None = None   # use only the first N scenes of the audio-only pool (None: all)
    student_shape: str = "base"  # the shipped student's architecture (eacap.models.presets.STUDENT_SHAPES)
    student_init: str | None = None  # shape of the shipped-recipe student the shipped one starts from (None: random)
    student_init_lr: float | None = None  # the peak lr of the shipped student when it starts from `student_init`
    tokenizer_from: str | None = None  # a saved tokenizer.json this run uses instead of one trained on its captions
    teacher_tagger: str | None = None  # "yamnet": the teacher's decoder also attends to YAMNet's AudioSet scores
    tagger_inputs: str = "logits"  # the tagger's tokens from YAMNet's "logits" or its "probabilities"
    memory_dropout: float = 0.0  # share of teacher training clips whose Whisper frames are hidden from the decoder
    # The students' teacher is this preset's teacher and another model as one (train/core/ensemble.py): the other's
    # checkpoint, reading the same cached encoder, and its share of the next-token log-probabilities.
    ensemble_with: str | None = None
    ensemble_weight: float = 0.5
    run_dir: Path = field(default=None)  # type: ignore[assignment]

    def __post_init__(self):
        if self.run_dir is None:
            object.__setattr__(self, "run_dir", RUNS_ROOT / self.name)

    def teacher_model(self, vocab_size: int):
        """The teacher's architecture in this preset (eacap.models.presets.teacher_config)."""
        return teacher_config(vocab_size, self.model_size, encoder=self.teacher_encoder, tagger=self.teacher_tagger,
                              tagger_inputs=self.tagger_inputs)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["run_dir"] = str(self.run_dir)
        return data


PRESETS = {
    "tiny": PipelineConfig(
        name="tiny", scenes="tiny", model_size="tiny", teacher_init="random", teacher_trainable_layers=1,
        teacher=Schedule(steps=60, batch_size=8, lr=3e-3, warmup=10, eval_every=30, eval_clips=20,
                         checkpoint_seconds=30),
        student=Schedule(steps=60, batch_size=8, lr=3e-3, warmup=10, eval_every=30, eval_clips=20,
                         checkpoint_seconds=30),
        max_caption_tokens=24, eval_max_length=20, token_kd_topk=8, spec_augment=(16, 1, 4, 1)),
    # Full: the Whisper encoder stays frozen (its outputs are cached once) and the teacher's decoder + final layer
    # norm are trained: on 2 CPU cores a trainable top layer costs ~2x per step (measured, README "Training").
    "full": PipelineConfig(
        name="full", scenes="full", model_size="full", teacher_init="whisper", teacher_trainable_layers=0,
        teacher=Schedule(steps=3000, batch_size=32, lr=5e-4, warmup=300, eval_every=500),
        student=Schedule(steps=4000, batch_size=32, lr=1e-3, warmup=400, eval_every=500),
        tokenizer_min_count=2,
        # The shipped student is the slim shape (40 ms frames, 1-layer decoder: the speed targets), started from the
        # base-shape student pruned (the quality target); CHANGELOG.md says why.
        student_shape="slim", student_init="base", student_init_lr=5e-4),
}
# The candidate next teacher, for recordings from sources never heard in training: the full recipe over Whisper
# base's frozen encoder (20.6 M parameters; the best balanced linear probe on held-out sources, train/RESULTS.md),
# with half of the train scenes cached as re-recorded copies (another EQ, room, noise, speed and gain) and the
# students trained on re-recorded clips as well. Its measured results are committed beside the full preset's.
PRESETS["whisper_base"] = replace(PRESETS["full"], name="whisper_base", run_dir=RUNS_ROOT / "whisper_base",
                                  teacher_encoder="base", teacher_augment=0.5, augment=0.5)
# The candidate above, trained on scenes mixed from the bank with the extra sources as well (scenes preset "extra":
# `python -m train soundbank --extra`, 190 more recordings of the cross-source test's classes from 23 packages).
# Its captions have the shipped corpus's words, and it keeps the shipped tokenizer's ids, so a student can start
# from the shipped student (`--init-from checkpoints/student`).
PRESETS["base_extra"] = replace(PRESETS["whisper_base"], name="base_extra", run_dir=RUNS_ROOT / "base_extra",
                                scenes="extra", tokenizer_from="checkpoints/teacher/tokenizer.json")
# The full recipe with a second ear: the teacher's decoder attends to Whisper tiny.en's frames and to YAMNet's
# AudioSet class scores of every 0.96 s patch (eacap.models.yamnet), the reading that named held-out sounds best
# (`train encoder-probe --yamnet-head`). A share of the training clips hides the Whisper frames, so the decoder learns
# to caption from the scores alone too. It keeps the shipped tokenizer, so teacher and student can start from the
# shipped pair.
PRESETS["yamnet"] = replace(PRESETS["full"], name="yamnet", run_dir=RUNS_ROOT / "yamnet", teacher_tagger="yamnet",
                            memory_dropout=0.3, tokenizer_from="checkpoints/teacher/tokenizer.json")
# The same, with each patch's token made from YAMNet's class probabilities (sigmoids) instead of its layer-normed
# logits: only the classes YAMNet hears carry weight. It reads the yamnet preset's caches.
PRESETS["yamnet_p"] = replace(PRESETS["yamnet"], name="yamnet_p", run_dir=RUNS_ROOT / "yamnet_p",
                              tagger_inputs="probabilities")
# yamnet_p with the Whisper frames hidden from 70% of the training clips: its tokens alone named more held-out sounds
# than with the frames, so the decoder is pushed harder to read them.
PRESETS["yamnet_p70"] = replace(PRESETS["yamnet_p"], name="yamnet_p70", run_dir=RUNS_ROOT / "yamnet_p70",
                                memory_dropout=0.7)
# Presets whose measured results are committed under train/results/<preset>/ (train.core.data.run_path).
# yamnet_p with the Whisper frames hidden from every clip, in training and validation: a decoder that reads YAMNet's
# probability tokens alone (`train realworld --tokens-only` scores it as it was trained).
PRESETS["yamnet_tags"] = replace(PRESETS["yamnet_p"], name="yamnet_tags", run_dir=RUNS_ROOT / "yamnet_tags",
                                 memory_dropout=1.0)
# yamnet_tags's teacher and the shipped teacher as one (train/core/ensemble.py), each with half of the next-token
# log-probabilities, as the students' teacher: the first reading that named held-out sounds measurably more often
# than the shipped teacher. Its teacher is yamnet_tags's (link data/runs/yamnet_ensemble/teacher to it) and it reads
# the yamnet preset's caches.
PRESETS["yamnet_ensemble"] = replace(PRESETS["yamnet_tags"], name="yamnet_ensemble",
                                     run_dir=RUNS_ROOT / "yamnet_ensemble", ensemble_with="checkpoints/teacher")
# The same pair with all of the log-probabilities the shipped teacher's: its students learn the shipped teacher's
# captions, and their encoder-KD target is still the mean of the shipped teacher's frames and of YAMNet's tags as
# yamnet_tags reads them, so they differ from the shipped recipe by YAMNet's scores as an extra encoder target
# (the idea of cross-model KD, Gong et al. 2022).
PRESETS["yamnet_cmkd"] = replace(PRESETS["yamnet_ensemble"], name="yamnet_cmkd", run_dir=RUNS_ROOT / "yamnet_cmkd",
                                 ensemble_weight=1.0)
COMMITTED_RESULTS = ("full", "whisper_base", "base_extra", "yamnet", "yamnet_p", "yamnet_p70", "yamnet_tags",
                     "yamnet_ensemble", "yamnet_cmkd")


def add_preset_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="full", choices=sorted(PRESETS), help="pipeline preset (default: full)")
    parser.add_argument("--run-dir", type=Path, help="where this pipeline's files go (default: data/runs/<preset>)")
    parser.add_argument("--steps", type=int, help="override the stage's step budget")
    parser.add_argument("--seed", type=int, help="override the preset's seed")
    parser.add_argument("--audio-only-scenes", type=int,
                        help="use only the first N audio-only scenes (saves cache time)")
    parser.add_argument("--augment", type=float, help="share (0-1) of training clips re-recorded with another EQ, "
                        "room, noise, speed and gain (train/core/augment.py; default: the preset's)")


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of every training stage (teacher, student)."""
    add_preset_arguments(parser)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast: only for CPUs/GPUs with fast bf16 (on the "
                        "development CPU it is 5-15x slower, see README)")
    parser.add_argument("--stop-after", type=int, help="stop (with a resumable checkpoint) after this many steps")
    parser.add_argument("--lr", type=float, help="override the stage's peak learning rate")


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    config = PRESETS[args.preset]
    if getattr(args, "seed", None) is not None:
        config = replace(config, seed=args.seed)
    if getattr(args, "augment", None) is not None:
        if not 0.0 <= args.augment <= 1.0:
            raise ValueError(f"--augment is a share of clips, 0-1; got {args.augment}")
        config = replace(config, augment=args.augment)
    if getattr(args, "audio_only_scenes", None) is not None:
        config = replace(config, audio_only_scenes=args.audio_only_scenes)
    if getattr(args, "lr", None) is not None:
        if not 0 < args.lr < 1:
            raise SystemExit(f"--lr must be between 0 and 1, got {args.lr}")
        config = replace(config, teacher=replace(config.teacher, lr=args.lr),
                         student=replace(config.student, lr=args.lr))
    if getattr(args, "run_dir", None) is not None:
        config = replace(config, run_dir=Path(args.run_dir))
    return config
