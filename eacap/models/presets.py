"""Named model sizes. "full" is what the shipped checkpoints use; "tiny" builds in milliseconds for tests and CI.

Student shapes: "base" is the CNN over 10 ms frames with a 2-layer d256 decoder (the decoder of Xu et al., Interspeech
2024); "fast", "lite" and "slim" are faster shapes, compared with `python -m train speed-variants` (the shipped
student is "slim"):
- "fast": 20 ms hop (half the CNN input), a narrower CNN, a 1-layer FFN-512 decoder;
- "lite": 40 ms frames (1024-sample window, 640 hop: a quarter of the CNN input) through the base CNN, and a
  2-layer d128 FFN-512 decoder, every weight of which is small enough for the plain float32 GEMM that decoding
  steps run fastest on (`eacap.models.packed_linear.PACKED_MIN_WEIGHTS`); ReLU instead of SiLU / GELU throughout
  (at batch 1 each activation call costs tens of microseconds on a CPU, and ReLU is the cheapest);
- "slim": lite's 40 ms frames through the base CNN with the base activations, and a 1-layer d256 FFN-512 decoder
  (the decoder width kept, its depth and FFN cut): one change fewer than lite, to tell which of lite's costs quality.
"""
from __future__ import annotations

import dataclasses

from ..features import STUDENT_FRONTEND, TEACHER_FRONTEND
from .caption_model import KDConfig, ModelConfig
from .decoder import DecoderConfig
from .efficientnet import EfficientNetConfig, StageConfig
from .whisper import WHISPER_ENCODER_CONFIGS, WhisperEncoderConfig
from .yamnet import TaggerConfig

SIZES = ("full", "tiny")
STUDENT_SHAPES = ("base", "fast", "lite", "slim")

# The "fast" student's CNN: every stage narrower than the base's, the second stage one block shorter.
NARROW_CNN = EfficientNetConfig(stem=16, stages=(StageConfig(16, 1, 2, 3, 1), StageConfig(24, 1, 1, 3),
                                                 StageConfig(32, 2, 2, 5), StageConfig(64, 2, 2, 3),
                                                 StageConfig(96, 2, 1, 5), StageConfig(128, 2, 2, 5)))


def _check(size: str) -> None:
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}: expected one of {SIZES}")


def teacher_config(vocab_size: int, size: str = "full", encoder: str = "tiny.en",
                   tagger: str | None = None, tagger_inputs: str = "logits") -> ModelConfig:
    """A pretrained Whisper encoder by name (`WHISPER_ENCODER_CONFIGS`: exactly its shape, to load its weights) +
    a 4-layer d384 decoder over its frames; with tagger="yamnet", over YAMNet's tokens as well
    (`eacap.models.yamnet`)."""
    _check(size)
    if size == "full":
        if encoder not in WHISPER_ENCODER_CONFIGS:
            raise ValueError(f"unknown teacher encoder {encoder!r}: expected one of {tuple(WHISPER_ENCODER_CONFIGS)}")
        encoder = WHISPER_ENCODER_CONFIGS[encoder]
        decoder = DecoderConfig(vocab_size, memory_dim=encoder.width, width=384, layers=4, heads=6, ffn=1536,
                                dropout=0.1)
    else:
        encoder = WhisperEncoderConfig(width=64, layers=2, heads=2, ffn=128)
        decoder = DecoderConfig(vocab_size, memory_dim=64, width=64, layers=1, heads=2, ffn=128, dropout=0.0)
    if tagger not in (None, "yamnet"):
        raise ValueError(f"unknown teacher tagger {tagger!r}: expected 'yamnet' or none")
    tagger_config = TaggerConfig(memory_dim=decoder.memory_dim, inputs=tagger_inputs) if tagger else None
    return ModelConfig("teacher", TEACHER_FRONTEND, encoder, decoder, tagger=tagger_config)


def student_config(vocab_size: int, size: str = "full", teacher_dim: int = 384, shape: str = "base") -> ModelConfig:
    """The small EfficientNet-style CNN + a 2-layer d256 decoder, with KD heads; or, with `shape`, one of the faster
    shapes (module docstring)."""
    _check(size)
    if shape not in STUDENT_SHAPES:
        raise ValueError(f"unknown student shape {shape!r}: expected one of {STUDENT_SHAPES}")
    if shape == "fast":
        return fast_shape(student_config(vocab_size, size, teacher_dim), narrow_encoder=size == "full")
    if shape == "lite":
        return lite_shape(student_config(vocab_size, size, teacher_dim))
    if shape == "slim":
        return slim_shape(student_config(vocab_size, size, teacher_dim))
    if size == "full":
        encoder = EfficientNetConfig()
        decoder = DecoderConfig(vocab_size, memory_dim=encoder.out_dim, width=256, layers=2, heads=4, ffn=1024)
        kd = KDConfig(dim=256, teacher_dim=teacher_dim)
    else:
        stages = (StageConfig(8, 1, 1, 3, 1), StageConfig(16, 1, 2), StageConfig(16, 1, 2), StageConfig(24, 1, 2),
                  StageConfig(24, 1, 2))
        encoder = EfficientNetConfig(stem=8, stages=stages, out_dim=32, dropout=0.0)
        decoder = DecoderConfig(vocab_size, memory_dim=32, width=32, layers=1, heads=2, ffn=64, dropout=0.0)
        kd = KDConfig(dim=16, teacher_dim=teacher_dim)
    return ModelConfig("student", STUDENT_FRONTEND, encoder, decoder, kd)


def named_shape(config: ModelConfig) -> tuple[str, str] | None:
    """(size, shape) of a student config built by `student_config`, or None for any other architecture."""
    vocab, teacher_dim = config.decoder.vocab_size, config.kd.teacher_dim if config.kd else 384
    return next(((size, shape) for size in SIZES for shape in STUDENT_SHAPES
                 if student_config(vocab, size, teacher_dim, shape=shape).to_dict() == config.to_dict()), None)


def fast_shape(base: ModelConfig, narrow_encoder: bool = True) -> ModelConfig:
    """`base` with a 20 ms hop, a 1-layer decoder with half the FFN and (for the full size) the narrow CNN."""
    encoder = NARROW_CNN if narrow_encoder else base.encoder
    return dataclasses.replace(
        base, frontend=dataclasses.replace(base.frontend, hop_length=2 * base.frontend.hop_length), encoder=encoder,
        decoder=dataclasses.replace(base.decoder, memory_dim=encoder.out_dim, layers=1, ffn=base.decoder.ffn // 2))


def frames_40ms(frontend):
    """A front-end with 40 ms frames: 4x the hop (a quarter of the CNN input), 2x the window."""
    return dataclasses.replace(frontend, n_fft=2 * frontend.n_fft, hop_length=4 * frontend.hop_length)


def slim_shape(base: ModelConfig) -> ModelConfig:
    """`base` with 40 ms frames and a 1-layer decoder with half the FFN (width and activations kept)."""
    return dataclasses.replace(base, frontend=frames_40ms(base.frontend),
                               decoder=dataclasses.replace(base.decoder, layers=1, ffn=base.decoder.ffn // 2))


def lite_shape(base: ModelConfig) -> ModelConfig:
    """`base` with 40 ms frames (4x the hop, 2x the window), ReLU activations and, for the full size, a 2-layer d128
    FFN-512 decoder."""
    frontend = frames_40ms(base.frontend)
    decoder = dataclasses.replace(base.decoder, activation="relu")
    if base.decoder.width > 128:
        decoder = dataclasses.replace(decoder, width=128, ffn=512)
    encoder = dataclasses.replace(base.encoder, activation="relu")
    return dataclasses.replace(base, frontend=frontend, encoder=encoder, decoder=decoder)
