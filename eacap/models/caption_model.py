"""`CaptionModel`: waveform -> front-end -> encoder -> caption decoder, for teacher and student alike.

A student also carries the encoder-KD heads (`student_proj`, `teacher_proj`, `logit_scale`): they map the
student's and the teacher's encoder frames into one shared space, are trained with the student and saved in
its checkpoint, and are what the app uses to show how close the two encoders are.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..audio import SILENCE_CAPTION, silence_level
from ..decoding import DecodingOptions, decode
from ..devices import synchronize
from ..features import FrontendConfig, build_frontend
from ..sounds import SoundWords, check_keywords
from ..tokenizer import CaptionTokenizer
from .decoder import CaptionDecoder, DecoderConfig
from .efficientnet import EfficientNetConfig, EfficientNetEncoder
from .whisper import WhisperEncoder, WhisperEncoderConfig
from .yamnet import AudioTagger, Memory, TaggerConfig

ENCODERS = {"whisper": (WhisperEncoderConfig, WhisperEncoder),
            "efficientnet": (EfficientNetConfig, EfficientNetEncoder)}


@dataclass(frozen=True)
class KDConfig:
    dim: int = 256            # the shared embedding space
    teacher_dim: int = 384    # width of the teacher's encoder frames

    def to_dict(self) -> dict:
        return {"dim": self.dim, "teacher_dim": self.teacher_dim}


@dataclass(frozen=True)
class ModelConfig:
    role: str                                   # "teacher" or "student": what the app labels it
    frontend: FrontendConfig
    encoder: WhisperEncoderConfig | EfficientNetConfig
    decoder: DecoderConfig
    kd: KDConfig | None = None                  # students only
    tagger: TaggerConfig | None = None          # a teacher's second ear (eacap.models.yamnet), or none

    def to_dict(self) -> dict:
        data = {"role": self.role, "frontend": self.frontend.to_dict(), "encoder": self.encoder.to_dict(),
                "decoder": self.decoder.to_dict(), "kd": self.kd.to_dict() if self.kd else None}
        if self.tagger is not None:
            data["tagger"] = self.tagger.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        """Raises KeyError/TypeError/ValueError on a malformed config; checkpoint.py turns those into
        CheckpointError."""
        if data["role"] not in ("teacher", "student"):
            raise ValueError(f"role must be 'teacher' or 'student', got {data['role']!r}")
        encoder = dict(data["encoder"])
        if encoder.get("kind") not in ENCODERS:
            raise ValueError(f"unknown encoder kind {encoder.get('kind')!r}: expected one of {sorted(ENCODERS)}")
        config_cls = ENCODERS[encoder["kind"]][0]
        encoder_config = config_cls.from_dict(encoder) if hasattr(config_cls, "from_dict") else config_cls(**encoder)
        tagger = TaggerConfig(**data["tagger"]) if data.get("tagger") else None
        if tagger is not None and tagger.memory_dim != data["decoder"]["memory_dim"]:
            raise ValueError(f"the tagger's tokens are {tagger.memory_dim} wide but the decoder's memory is "
                             f"{data['decoder']['memory_dim']}")
        return cls(role=data["role"], frontend=FrontendConfig(**data["frontend"]), encoder=encoder_config,
                   decoder=DecoderConfig(**data["decoder"]), kd=KDConfig(**data["kd"]) if data.get("kd") else None,
                   tagger=tagger)


@dataclass
class Caption:
    text: str
    tokens: list[int]
    score: float                 # length-normalised log-probability
    duration: float              # seconds of audio captioned
    seconds: dict[str, float] = field(default_factory=dict)   # per stage, for the whole batch
    silent: bool = False         # the clip is silent: `text` is SILENCE_CAPTION, not the model's words


class CaptionModel(nn.Module):
    def __init__(self, config: ModelConfig, tokenizer: CaptionTokenizer | None = None, source: str = ""):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        # Where the model was loaded from (a checkpoint folder or Hub id; "" for one built in memory): what results
        # name it by.
        self.source = source
        # Whether the model has had its first, untimed pass, which pays one-off costs (`eacap.compare.warm_up`).
        self.warmed_up = False
        if tokenizer is not None and tokenizer.vocab_size != config.decoder.vocab_size:
            raise ValueError(f"tokenizer has {tokenizer.vocab_size} words but the decoder expects "
                             f"{config.decoder.vocab_size}: they do not belong together")
        self.frontend = build_frontend(config.frontend)
        self.encoder = ENCODERS[config.encoder.kind][1](config.encoder)
        self.decoder = CaptionDecoder(config.decoder)
        self.tagger = AudioTagger(config.tagger) if config.tagger is not None else None
        if config.kd is not None:
            self.student_proj = nn.Linear(config.encoder.out_dim, config.kd.dim)
            self.teacher_proj = nn.Linear(config.kd.teacher_dim, config.kd.dim)
            # Contrastive KD multiplies cosine similarities by this learnable scale (initial temperature 0.07).
            self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))
        self._sound_keywords: dict[str, list[str]] | None = None
        self._sound_words: SoundWords | None = None

    @property
    def sound_keywords(self) -> dict[str, list[str]] | None:
        """{class: keywords} of the sounds this model was trained to name (saved with its checkpoint), or None.
        Decoding uses them to never name a sound twice (`DecodingOptions.no_repeat_sounds`)."""
        return self._sound_keywords

    @sound_keywords.setter
    def sound_keywords(self, keywords: dict[str, list[str]] | None) -> None:
        self._sound_keywords = None if keywords is None else check_keywords(keywords)
        self._sound_words = None

    @property
    def sound_words(self) -> SoundWords | None:
        """`sound_keywords` as per-token tables of this model's vocabulary (built once)."""
        if self._sound_words is None and self._sound_keywords is not None and self.tokenizer is not None:
            self._sound_words = SoundWords.build(self.tokenizer.tokenizer.get_vocab(), self._sound_keywords)
        return self._sound_words

    @property
    def role(self) -> str:
        return self.config.role

    def num_parameters(self, inference_only: bool = True) -> int:
        """Parameters used to caption; the KD heads are only for training and the similarity plots."""
        skip = ("student_proj", "teacher_proj", "logit_scale") if inference_only else ()
        return sum(p.numel() for name, p in self.named_parameters() if not name.startswith(skip))

    # -- the pipeline, stage by stage -----------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.decoder.embed.weight.device

    def half_precision(self) -> "CaptionModel":
        """The encoder and decoder in float16 (a GPU's fast path); the front-end and the KD heads stay float32.
        Features are cast on their way into the encoder, and decoding scores in float32 (`decode`)."""
        self.encoder.half()
        self.decoder.half()
        if self.tagger is not None:
            self.tagger.half_tokens()
        return self

    def features(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.frontend(waveforms, lengths)

    def encode(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms [B, N] (16 kHz) and sample lengths [B] -> frame embeddings [B, T, D] and frame lengths [B]."""
        return self.run_encoder(*self.features(waveforms, lengths))

    def run_encoder(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder over front-end features, in the encoder's own precision."""
        return self.encoder(features.to(self.decoder.embed.weight.dtype), lengths)

    def memory(self, waveforms: torch.Tensor, lengths: torch.Tensor, frames: torch.Tensor,
               frame_lengths: torch.Tensor) -> Memory:
        """What the decoder attends to (`.joined`): the encoder's frames, and with a tagger its tokens after each
        clip's frames (`eacap.models.yamnet.join_memory`)."""
        if self.tagger is None:
            return Memory(frames, frame_lengths)
        return self.tagger(waveforms, lengths, frames, frame_lengths)

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced next-token logits [B, L, V] for captions `tokens` [B, L] that start with <s>."""
        frames, frame_lengths = self.encode(waveforms, lengths)
        return self.decoder(tokens, *self.memory(waveforms, lengths, frames, frame_lengths).joined)

    def kd_embedding(self, frames: torch.Tensor, side: str) -> torch.Tensor:
        """Frames of this student's encoder (side="student") or of the teacher's (side="teacher") in the KD space,
        frame by frame: [..., D] -> [..., kd.dim]."""
        if self.config.kd is None:
            raise ValueError(f"this {self.role} model has no KD heads: only a distilled student checkpoint carries "
                             "them")
        proj = self.student_proj if side == "student" else self.teacher_proj
        return proj(frames)

    # -- captioning -------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def caption_batch(self, waveforms: list[np.ndarray] | list[torch.Tensor],
                      options: DecodingOptions = DecodingOptions()) -> list[Caption]:
        """Caption 16 kHz mono clips (use `eacap.load_audio` to get them from files); timings per stage."""
        return self.run_batch(waveforms, options).captions

    def caption_batches(self, waveforms: Iterable[np.ndarray | torch.Tensor],
                        options: DecodingOptions = DecodingOptions(),
                        batch_size: int = 16) -> Iterator[tuple[list[Caption], float]]:
        """Caption any number of clips, `batch_size` per model call, in order, yielding each batch's captions and the
        wall seconds of its call as soon as it is done. `waveforms` may be a generator: it is read one batch at a
        time, so a long recording's windows or a whole split never sit in memory together."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        pending: list = []
        for waveform in itertools.chain(waveforms, [None]):
            if waveform is not None:
                pending.append(waveform)
            if pending and (len(pending) == batch_size or waveform is None):
                started = time.perf_counter()
                captions = self.caption_batch(pending, options)
                yield captions, time.perf_counter() - started
                pending = []

    def caption_many(self, waveforms: Iterable[np.ndarray | torch.Tensor], options: DecodingOptions = DecodingOptions(),
                     batch_size: int = 16, progress: Callable[[int], None] | None = None) -> list[Caption]:
        """`caption_batches` as one list; `progress(done)` is called after each batch with the clips captioned."""
        captions: list[Caption] = []
        for batch, _ in self.caption_batches(waveforms, options, batch_size):
            captions += batch
            if progress is not None:
                progress(len(captions))
        return captions

    @torch.inference_mode()
    def run_batch(self, waveforms: list[np.ndarray] | list[torch.Tensor],
                  options: DecodingOptions = DecodingOptions()) -> "BatchRun":
        """`caption_batch`, also returning the features and encoder frames of the same pass.

        eacap.compare needs the captions, their timings and the frames they were decoded from; a second
        encoder pass to get the frames would double the cost and could time a different (warmer) run.
        """
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer: load it with eacap.load_model(), which attaches one")
        batch, lengths = pad_batch(waveforms, self.device)
        clock = StageClock(self.device)
        feats, feat_lengths = self.features(batch, lengths)
        clock.lap("frontend")
        frames, frame_lengths = self.run_encoder(feats, feat_lengths)
        memory, memory_lengths = self.memory(batch, lengths, frames, frame_lengths).joined
        clock.lap("encoder")
        hyps = decode(self.decoder, memory, memory_lengths, self.tokenizer.special, options, self.sound_words)
        clock.lap("decoder")
        captions = [Caption(self.tokenizer.decode(tokens), tokens, score, float(n) / 16000, dict(clock.seconds))
                    for tokens, score, n in zip(hyps.tokens, hyps.scores, lengths.tolist())]
        # Silence is stated, not described: a model trained on sounds names one even in digital silence.
        for row, waveform in enumerate(waveforms):
            if silence_level(waveform.detach().cpu().numpy() if torch.is_tensor(waveform) else waveform):
                caption = captions[row]
                captions[row] = Caption(SILENCE_CAPTION, [], 0.0, caption.duration, caption.seconds, silent=True)
        return BatchRun(captions, feats, feat_lengths, frames, frame_lengths)


@dataclass
class BatchRun:
    """One pass over a padded batch: captions plus the intermediate tensors (padded; use the lengths)."""
    captions: list[Caption]
    features: torch.Tensor        # [B, n_mels, T]
    feature_lengths: torch.Tensor  # [B] valid feature frames
    frames: torch.Tensor          # [B, T', D] encoder frames
    frame_lengths: torch.Tensor   # [B] valid encoder frames


def pad_batch(waveforms, device) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = [torch.as_tensor(np.asarray(w, dtype=np.float32)) if not torch.is_tensor(w) else w.float()
               for w in waveforms]
    if not tensors or any(t.ndim != 1 or t.numel() == 0 for t in tensors):
        raise ValueError("expected a non-empty list of 1-D non-empty waveforms (16 kHz mono)")
    lengths = torch.tensor([t.numel() for t in tensors])
    batch = torch.zeros(len(tensors), int(lengths.max()))
    for row, t in enumerate(tensors):
        batch[row, : t.numel()] = t.cpu()
    return batch.to(device), lengths.to(device)  # one copy to a GPU, not one per clip


class StageClock:
    """Wall-clock seconds per named stage, measured back to back; on a GPU each lap waits for the stage's work."""

    def __init__(self, device: torch.device = torch.device("cpu")):
        self.device = device
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        synchronize(self.device)
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._last
        self._last = now
