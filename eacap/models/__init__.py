"""Model architectures: teacher (Whisper encoder), student (EfficientNet CNN), caption decoder, CaptionModel."""
from .caption_model import Caption, CaptionModel, KDConfig, ModelConfig
from .decoder import CaptionDecoder, DecoderConfig
from .student import EfficientNetConfig, EfficientNetEncoder, StageConfig
from .teacher import WhisperEncoder, WhisperEncoderConfig

__all__ = ["Caption", "CaptionModel", "KDConfig", "ModelConfig", "CaptionDecoder", "DecoderConfig",
           "EfficientNetConfig", "EfficientNetEncoder", "StageConfig", "WhisperEncoder", "WhisperEncoderConfig"]
