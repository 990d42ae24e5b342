"""Named model sizes. "full" is what the shipped checkpoints use; "tiny" builds in milliseconds for tests and CI."""
from __future__ import annotations

from ..features import STUDENT_FRONTEND, TEACHER_FRONTEND
from .caption_model import KDConfig, ModelConfig
from .decoder import DecoderConfig
from .student import EfficientNetConfig, StageConfig
from .teacher import WhisperEncoderConfig

SIZES = ("full", "tiny")


def _check(size: str) -> None:
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}: expected one of {SIZES}")


def teacher_config(vocab_size: int, size: str = "full") -> ModelConfig:
    """Whisper tiny.en's encoder (must stay exactly that shape to load its weights) + a 4-layer d384 decoder."""
    _check(size)
    if size == "full":
        encoder = WhisperEncoderConfig()
        decoder = DecoderConfig(vocab_size, memory_dim=384, width=384, layers=4, heads=6, ffn=1536, dropout=0.1)
    else:
        encoder = WhisperEncoderConfig(width=64, layers=2, heads=2, ffn=128)
        decoder = DecoderConfig(vocab_size, memory_dim=64, width=64, layers=1, heads=2, ffn=128, dropout=0.0)
    return ModelConfig("teacher", TEACHER_FRONTEND, encoder, decoder)


def student_config(vocab_size: int, size: str = "full", teacher_dim: int = 384) -> ModelConfig:
    """The small EfficientNet-style CNN + a 2-layer d256 decoder (the paper's decoder), with KD heads."""
    _check(size)
    if size == "full":
        encoder = EfficientNetConfig()
        decoder = DecoderConfig(vocab_size, memory_dim=encoder.out_dim, width=256, layers=2, heads=4, ffn=1024)
        kd = KDConfig(dim=256, teacher_dim=teacher_dim)
    else:
        encoder = EfficientNetConfig(stem=8, stages=(StageConfig(8, 1, 1, 3, 1), StageConfig(16, 1, 2), StageConfig(16, 1, 2),
                                                     StageConfig(24, 1, 2), StageConfig(24, 1, 2)), out_dim=32, dropout=0.0)
        decoder = DecoderConfig(vocab_size, memory_dim=32, width=32, layers=1, heads=2, ffn=64, dropout=0.0)
        kd = KDConfig(dim=16, teacher_dim=teacher_dim)
    return ModelConfig("student", STUDENT_FRONTEND, encoder, decoder, kd)
