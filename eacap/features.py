"""Front-ends: waveform (16 kHz) -> log-mel features, as torch modules so they run inside the model.

Three front-ends, one per encoder:
- `LogMel`: the student's 64-bin log-mel (the front-end of Xu et al.'s EfficientNet student): by default a
  512-sample window and FFT and a 160 hop (10 ms; the shipped student's are 1024 and 640: 40 ms frames), power
  spectrum, mel filterbank in HTK scale without normalisation, dB with top_db 120. This is torchaudio's
  `MelSpectrogram` + `AmplitudeToDB` formula, computed here so that eacap does not depend on torchaudio.
- `WhisperLogMel`: Whisper's 80-bin log-mel (400-sample window, 160 hop, Slaney mel, log10, clamp to max-8,
  scaled by (x+4)/4), computed on the unpadded input so a 10 s clip gives 1000 frames, not 3000.

- `YamnetLogMel`: YAMNet's 64-bin log-mel (400-sample window in a 512-point FFT, 160 hop, magnitude, HTK mel
  125-7500 Hz, log(x + 0.001), no centring), the input of the teacher's AudioSet tagger (`eacap.models.yamnet`).

All take `(waveforms [B, N], lengths [B])` and return `(features [B, n_mels, T], frame_lengths [B])`, with
padding frames of shorter clips set to the value of silence so they do not leak into the valid frames' statistics.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .audio import SAMPLE_RATE


@dataclass(frozen=True)
class FrontendConfig:
    kind: str = "logmel"        # "logmel" (student), "whisper" (teacher) or "yamnet" (the teacher's tagger)
    n_mels: int = 64
    n_fft: int = 512
    hop_length: int = 160
    top_db: float = 120.0       # logmel only

    def to_dict(self) -> dict:
        return asdict(self)


STUDENT_FRONTEND = FrontendConfig("logmel", n_mels=64, n_fft=512, hop_length=160, top_db=120.0)
TEACHER_FRONTEND = FrontendConfig("whisper", n_mels=80, n_fft=400, hop_length=160)
YAMNET_FRONTEND = FrontendConfig("yamnet", n_mels=64, n_fft=512, hop_length=160)
WHISPER_WINDOW = 30 * SAMPLE_RATE
# Clips per STFT pass on a CPU, per front-end kind. A batch's complex spectrogram overflows the CPU caches (32 clips
# of 10 s: 66 MB), so a batch goes in chunks; how many clips a chunk holds best depends on the front-end's frames
# and was timed in the benchmark's pipeline (docs/performance.md). A GPU takes the batch whole. Every clip's features
# depend on that clip alone, so chunking changes no number (tested to the bit).
FRONTEND_CHUNK = {"logmel": 8, "whisper": 4, "yamnet": 2}


def centred_stft(x: torch.Tensor, n_fft: int, hop_length: int, window: torch.Tensor) -> torch.Tensor:
    """`torch.stft(x, n_fft, hop_length, window=window, center=True, pad_mode="reflect", return_complex=True)`, the
    same numbers, frames-major: [B, frames, bins] (`torch.stft`'s result transposed, which is how it is computed),
    with the reflection built from two flipped edges and one concatenation: PyTorch's reflection-pad kernel costs
    more on a CPU than the rest of the padding and a third of the whole transform at a batch of 10 s clips."""
    half = n_fft // 2
    if x.shape[-1] <= half:  # too short to reflect: torch.stft says so
        stft = torch.stft(x, n_fft, hop_length, window=window, center=True, pad_mode="reflect", return_complex=True)
    else:
        padded = torch.cat([x[:, 1: half + 1].flip(1), x, x[:, -half - 1: -1].flip(1)], dim=1)
        stft = torch.stft(padded, n_fft, hop_length, window=window, center=False, return_complex=True)
    return stft.transpose(1, 2)


class MelPower(nn.Module):
    """`mel_fb @ |X|^2` for a complex STFT, each band of filters multiplied only by the bins where it is not zero.

    A mel filter is a triangle over a few bins: 97% of a dense 64 x 513 filterbank is zeros. The filters are cut
    into `groups` consecutive bands, each with the span of bins its filters cover, and each band is one product
    over that span (the student's filterbank: 8,512 multiply-adds per frame instead of 32,832). The power spectrum
    is never written on its own: the real and imaginary parts are squared in place, and each band's filters,
    written twice per bin, sum the two squares inside its product. The same sums as the dense product, in another
    order: the mel power differs by float rounding (relative 1e-6)."""

    def __init__(self, mel_fb: torch.Tensor, groups: int = 4):
        super().__init__()
        self.bands: list[tuple[int, int, int, int]] = []   # (first filter, end filter, first bin, end bin)
        for index, rows in enumerate(torch.arange(mel_fb.shape[0]).tensor_split(groups)):
            first, end = int(rows[0]), int(rows[-1]) + 1
            bins = torch.nonzero(mel_fb[first:end].abs().sum(0)).flatten()
            lo, hi = (int(bins.min()), int(bins.max()) + 1) if len(bins) else (0, 1)
            self.bands.append((first, end, lo, hi))
            # [2 x bins, filters]: each bin's weight twice, for its real and imaginary square
            self.register_buffer(f"band{index}", mel_fb[first:end, lo:hi].t().repeat_interleave(2, 0).contiguous(),
                                 persistent=False)
        self.n_mels = mel_fb.shape[0]

    def forward(self, stft: torch.Tensor) -> torch.Tensor:
        """stft: complex [B, frames, bins], contiguous (`centred_stft`; overwritten) -> mel power
        [B, n_mels, frames]."""
        batch, frames, bins = stft.shape
        squares = torch.view_as_real(stft).square_().view(batch * frames, 2 * bins)
        mel = squares.new_empty(batch * frames, self.n_mels)
        for index, (first, end, lo, hi) in enumerate(self.bands):  # each band's product writes its own columns
            torch.mm(squares[:, 2 * lo: 2 * hi], getattr(self, f"band{index}"), out=mel[:, first:end])
        return mel.view(batch, frames, self.n_mels).transpose(1, 2)


class Frontend(nn.Module):
    """(waveforms [B, N], lengths [B]) -> (features [B, n_mels, T], frame_lengths [B]), `FRONTEND_CHUNK` clips
    at a time on a CPU; subclasses define `features` for one chunk."""

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if waveforms.device.type == "cuda":  # the whole batch, replayed as one CUDA graph per batch shape
            graphed = self.__dict__.get("_graphed")
            if graphed is None:
                from .graphs import GraphedCall
                graphed = self.__dict__["_graphed"] = GraphedCall(self.features, type(self).__name__)
            return graphed(waveforms, lengths)
        chunk = FRONTEND_CHUNK[self.config.kind]
        if waveforms.shape[0] <= chunk:
            return self.features(waveforms, lengths)
        parts = [self.features(w, n) for w, n in zip(waveforms.split(chunk), lengths.split(chunk))]
        return torch.cat([f for f, _ in parts]), torch.cat([n for _, n in parts])

    def features(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class LogMel(Frontend):
    def __init__(self, config: FrontendConfig = STUDENT_FRONTEND):
        super().__init__()
        self.config = config
        fb = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=config.n_fft, n_mels=config.n_mels, fmin=0.0,
                                 fmax=SAMPLE_RATE / 2, htk=True, norm=None)
        self.register_buffer("mel_fb", torch.from_numpy(fb).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)
        self.mel_power = MelPower(self.mel_fb)

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return lengths // self.config.hop_length + 1  # center=True framing

    def features(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        mel = self.mel_power(centred_stft(waveforms.float(), c.n_fft, c.hop_length, self.window))
        db = 10.0 * torch.log10(mel.clamp(min=1e-10))
        frames = self.frame_lengths(lengths)
        valid = torch.arange(db.shape[-1], device=db.device)[None, :] < frames[:, None]
        # top_db clamps against each clip's own maximum over its valid frames, as torchaudio does per clip.
        peak = db.masked_fill(~valid[:, None, :], float("-inf")).amax(dim=(1, 2), keepdim=True)
        db = torch.maximum(db, peak - c.top_db)
        db = db.masked_fill(~valid[:, None, :], -100.0)  # log10(1e-10) * 10: the value of silence
        return db, frames


class WhisperLogMel(Frontend):
    def __init__(self, config: FrontendConfig = TEACHER_FRONTEND):
        super().__init__()
        self.config = config
        fb = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=config.n_fft, n_mels=config.n_mels)  # Slaney, as Whisper
        self.register_buffer("mel_fb", torch.from_numpy(fb).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)
        self.mel_power = MelPower(self.mel_fb)

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return lengths // self.config.hop_length  # Whisper drops the last STFT frame

    def features(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        samples = torch.arange(waveforms.shape[-1], device=waveforms.device)
        x = waveforms.float().masked_fill(samples[None, :] >= lengths[:, None], 0.0)
        # Whisper pads every clip with silence to 30 s before its centred STFT: a shorter clip's last frames see
        # zeros, and only a clip filling the whole window is reflected on the right.
        x = F.pad(x, (0, min(c.n_fft // 2, max(0, WHISPER_WINDOW - x.shape[-1]))))
        mel = self.mel_power(centred_stft(x, c.n_fft, c.hop_length, self.window))
        log_spec = torch.log10(mel[..., : waveforms.shape[-1] // c.hop_length].clamp(min=1e-10))
        frames = self.frame_lengths(lengths)
        valid = torch.arange(log_spec.shape[-1], device=log_spec.device)[None, :] < frames[:, None]
        peak = log_spec.masked_fill(~valid[:, None, :], float("-inf")).amax(dim=(1, 2), keepdim=True)
        log_spec = torch.maximum(log_spec, peak - 8.0)
        log_spec = (log_spec + 4.0) / 4.0
        # Whisper pads with digital silence, whose features are the clamp floor: use that for padding frames.
        log_spec = torch.where(valid[:, None, :], log_spec, (peak - 8.0 + 4.0) / 4.0)
        return log_spec, frames


class YamnetLogMel(Frontend):
    """YAMNet's features: frames of 400 samples (25 ms) every 160, each in a 512-point FFT, magnitude, 64 HTK mel
    bands from 125 to 7500 Hz, natural log with a 0.001 offset. Padding frames hold the value of silence."""

    WINDOW = 400
    LOG_OFFSET = 0.001

    def __init__(self, config: FrontendConfig = YAMNET_FRONTEND):
        super().__init__()
        self.config = config
        fb = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=config.n_fft, n_mels=config.n_mels, fmin=125.0, fmax=7500.0,
                                 htk=True, norm=None)
        self.register_buffer("mel_fb", torch.from_numpy(fb).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(self.WINDOW), persistent=False)

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return ((lengths - self.config.n_fft) // self.config.hop_length + 1).clamp(min=0)

    def features(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        x = waveforms.float()
        if x.shape[-1] < c.n_fft:  # shorter than one frame: one frame of the clip and silence
            x = F.pad(x, (0, c.n_fft - x.shape[-1]))
        stft = torch.stft(x, c.n_fft, c.hop_length, win_length=self.WINDOW, window=self.window, center=False,
                          return_complex=True)
        log_mel = torch.log(self.mel_fb @ stft.abs() + self.LOG_OFFSET)
        frames = self.frame_lengths(lengths).clamp(min=1)
        valid = torch.arange(log_mel.shape[-1], device=log_mel.device)[None, :] < frames[:, None]
        return log_mel.masked_fill(~valid[:, None, :], float(np.log(self.LOG_OFFSET))), frames


def build_frontend(config: FrontendConfig) -> nn.Module:
    if config.kind == "logmel":
        return LogMel(config)
    if config.kind == "whisper":
        return WhisperLogMel(config)
    if config.kind == "yamnet":
        return YamnetLogMel(config)
    raise ValueError(f"unknown front-end kind {config.kind!r}: expected 'logmel', 'whisper' or 'yamnet'")
