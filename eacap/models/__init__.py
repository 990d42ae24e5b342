"""Model architectures: teacher (Whisper encoder), student (EfficientNet CNN), caption decoder, CaptionModel."""
from .caption_model import Caption, CaptionModel, KDConfig, ModelConfig
from .decoder import CaptionDecoder, DecoderConfig
from .efficientnet import EfficientNetConfig, EfficientNetEncoder, StageConfig
from .whisper import WhisperEncoder, WhisperEncoderConfig

__all__ = ["Caption", "CaptionModel", "KDConfig", "ModelConfig", "CaptionDecoder", "DecoderConfig",
           "EfficientNetConfig", "EfficientNetEncoder", "StageConfig", "WhisperEncoder", "WhisperEncoderConfig"]
