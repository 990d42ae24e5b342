"""eacap: efficient audio captioning. A Whisper-based teacher, a small distilled student, and the tools to compare them.

    import eacap
    model = eacap.load_model("checkpoints/student")        # or a Hub id such as "owner/eacap-student"
    audio = eacap.load_audio("dog.wav")
    print(model.caption_batch([audio.waveform])[0].text)
"""
import os

# Offline by default: without this, a Hub miss costs tens of seconds of retries on a closed network.
# Must be set before huggingface_hub is imported anywhere, since it reads the variable at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", os.environ["HF_HUB_OFFLINE"])

from .audio import SAMPLE_RATE, Audio, AudioError, load_audio
from .checkpoint import CheckpointError, load_model, save_checkpoint
from .decoding import DecodingOptions
from .models import Caption, CaptionModel, ModelConfig
from .tokenizer import CaptionTokenizer

__version__ = "0.1.0"
__all__ = ["SAMPLE_RATE", "Audio", "AudioError", "load_audio", "CheckpointError", "load_model", "save_checkpoint",
           "DecodingOptions", "Caption", "CaptionModel", "ModelConfig", "CaptionTokenizer", "__version__"]
