"""Building and loading a run's models, for every stage that trains, decodes, scores or ships one: the word tokenizer,
a new caption model (tokenizer and sound keywords attached), the teacher's initial encoder and how many of its
layers stay frozen, a new or trained teacher, a new student, and any run's trained model by name (`load_run_model`).
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from eacap.checkpoint import load_model
from eacap.models import CaptionModel, ModelConfig, WhisperEncoder
from eacap.models.presets import student_config
from eacap.models.yamnet import YAMNet
from eacap.tokenizer import CaptionTokenizer
from train.core.config import PipelineConfig
from train.core.data import class_keywords, load_split, run_path
from train.core.runs import checkpoint_run, recorded_architecture
from train.core.whisper_weights import load_whisper_encoder, pretrained_whisper_encoder
from train.core.yamnet_weights import load_yamnet


def build_tokenizer(config: PipelineConfig) -> CaptionTokenizer:
    """The run's word tokenizer: trained on the captioned train set once (or a saved one, `tokenizer_from`), then
    read from `tokenizer.json`."""
    path = run_path(config, "tokenizer.json")
    if path.is_file():
        return CaptionTokenizer.from_file(path)
    captions = [c for item in load_split(config, "train") for c in item.captions]
    if config.tokenizer_from:
        tokenizer = CaptionTokenizer.from_file(config.tokenizer_from)
        unknown = sum(ids.count(tokenizer.unk_id) for ids in map(tokenizer.encode, captions))
        words = sum(len(c.split()) for c in captions)
        if unknown > 0.01 * words:
            raise ValueError(f"the tokenizer {config.tokenizer_from} does not know {unknown} of the {words} words of "
                             f"the {config.scenes} corpus's train captions; train one instead (no tokenizer_from)")
        source = f"{config.tokenizer_from} ({unknown} of {words} train-caption words unknown)"
    else:
        tokenizer = CaptionTokenizer.train(captions, min_count=config.tokenizer_min_count)
        source = f"{len(captions)} train captions"
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(path)
    print(f"tokenizer: {tokenizer.vocab_size} words from {source} -> {path}")
    return tokenizer


def caption_model(config: PipelineConfig, model_config: ModelConfig) -> CaptionModel:
    """A new model of this run: its tokenizer and the sound keywords of the corpus's class table attached (so its
    captions never name a sound twice and its exported checkpoint carries them)."""
    model = CaptionModel(model_config, build_tokenizer(config))
    model.sound_keywords = class_keywords(config)
    return model


def initial_teacher_encoder(config: PipelineConfig) -> WhisperEncoder:
    """The same starting encoder for every stage: saved once, so a random tiny init is reproducible too."""
    path = run_path(config, "teacher_encoder_init.safetensors")
    encoder = WhisperEncoder(config.teacher_model(8).encoder)
    if path.is_file():
        encoder.load_state_dict(load_file(path))
        return encoder
    if config.teacher_init == "whisper" and config.teacher_encoder == "tiny.en":  # the `teacher-init` stage's file
        encoder = load_whisper_encoder()
    elif config.teacher_init == "whisper":
        encoder = pretrained_whisper_encoder(config.teacher_encoder)
    else:
        torch.manual_seed(config.seed)
        encoder = WhisperEncoder(config.teacher_model(8).encoder)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, path)
    return encoder


def frozen_layers(config: PipelineConfig) -> int:
    """The teacher encoder's lower layers that are never trained: their outputs are cached once (`train cache`)."""
    return config.teacher_model(8).encoder.layers - config.teacher_trainable_layers


def initial_tagger(config: PipelineConfig) -> YAMNet:
    """YAMNet for a teacher with a tagger: converted (`teacher-init --yamnet`), or random weights saved once in the
    tiny preset."""
    if config.teacher_init == "whisper":
        return load_yamnet()
    path = run_path(config, "tagger_init.safetensors")
    model = YAMNet()
    if path.is_file():
        model.load_state_dict(load_file(path))
        return model
    torch.manual_seed(config.seed)
    model = YAMNet()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return model


def build_teacher(config: PipelineConfig) -> CaptionModel:
    model = caption_model(config, config.teacher_model(build_tokenizer(config).vocab_size))
    model.encoder.load_state_dict(initial_teacher_encoder(config).state_dict())
    if model.tagger is not None:
        model.tagger.yamnet.load_state_dict(initial_tagger(config).state_dict())
    return model


def load_trained_teacher(config: PipelineConfig) -> CaptionModel:
    model = build_teacher(config)
    path = run_path(config, "teacher", "best.safetensors")
    if not path.is_file():
        raise FileNotFoundError(f"no trained teacher at {path}: run `python -m train teacher --preset {config.name}`")
    model.load_state_dict(load_file(path))
    return model.eval()


def build_student(config: PipelineConfig, shape: str = "base") -> CaptionModel:
    vocab_size = build_tokenizer(config).vocab_size
    teacher_width = config.teacher_model(vocab_size).encoder.out_dim
    return caption_model(config, student_config(vocab_size, config.model_size, teacher_dim=teacher_width, shape=shape))


def load_student_architecture(config: PipelineConfig, folder: Path) -> CaptionModel:
    """An untrained student with the architecture the run in `folder` trained (older runs: the base shape)."""
    recorded = recorded_architecture(folder)
    return build_student(config) if recorded is None else caption_model(config, recorded)


def load_run_model(config: PipelineConfig, name: str) -> CaptionModel:
    """'teacher', a student run's folder name under students/ (e.g. seq_contrastive_audio_seed0), or an exported
    checkpoint folder (e.g. checkpoints/student: the shipped model, whose run folder a fresh machine lacks)."""
    if checkpoint_run(name) is not None:
        return load_model(name)
    if name == "teacher":
        return load_trained_teacher(config)
    path = run_path(config, "students", name, "best.safetensors")
    if not path.is_file():
        known = sorted(p.name for p in run_path(config, "students").glob("*") if (p / "best.safetensors").is_file())
        raise FileNotFoundError(f"no trained student {name!r} at {path}; trained ones: {', '.join(known) or 'none'}")
    model = load_student_architecture(config, path.parent)
    model.load_state_dict(load_file(path))
    return model.eval()
