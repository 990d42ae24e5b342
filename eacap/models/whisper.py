"""The teacher's audio encoder: Whisper tiny.en's encoder, with the same shapes and parameter names as
`transformers.WhisperEncoder`, so converted Whisper weights load as they are.

Unlike Whisper, it does not need 30 s of padded input: the sinusoidal position table is sliced to the input
length, and padded frames of a batch are masked out of attention. Lower layers can be run once and cached
(`embed` + `run_layers(..., end=k)`), then the top layers trained on the cache (`run_layers(..., start=k)`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .packed_linear import PACKED_MAX_ROWS, Linear, cached_by_weights
from .tracing import trace


@dataclass(frozen=True)
class WhisperEncoderConfig:
    kind: str = "whisper"
    n_mels: int = 80
    width: int = 384
    layers: int = 4
    heads: int = 6
    ffn: int = 1536
    max_positions: int = 1500  # 30 s at 50 frames/s

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def out_dim(self) -> int:
        return self.width


# Pretrained Whisper encoders the teacher can start from, by name: their shapes must match the weights exactly.
# tiny.en (8.2 M parameters) is the shipped teacher's; base (multilingual, 20.6 M) hears held-out recording
# sources better (`python -m train encoder-probe`, train/RESULTS.md).
WHISPER_ENCODER_CONFIGS = {"tiny.en": WhisperEncoderConfig(),
                           "base": WhisperEncoderConfig(width=512, layers=6, heads=8, ffn=2048)}


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj = Linear(width, width)
        self.k_proj = Linear(width, width, bias=False)
        self.v_proj = Linear(width, width)
        self.out_proj = Linear(width, width)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        b, t, w = x.shape
        q, k, v = (proj(x).view(b, t, self.heads, -1).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out_proj(y.transpose(1, 2).reshape(b, t, w))


class EncoderLayer(nn.Module):
    def __init__(self, width: int, heads: int, ffn: int):
        super().__init__()
        self.self_attn = SelfAttention(width, heads)
        self.self_attn_layer_norm = nn.LayerNorm(width)
        self.fc1 = Linear(width, ffn)
        self.fc2 = Linear(ffn, width)
        self.final_layer_norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x), attn_mask)
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's fixed position table: sin in the first half of the channels, cos in the second."""
    log_increment = torch.log(torch.tensor(max_timescale)) / (channels // 2 - 1)
    inv_timescales = torch.exp(-log_increment * torch.arange(channels // 2))
    scaled = torch.arange(length)[:, None] * inv_timescales[None, :]
    return torch.cat([scaled.sin(), scaled.cos()], dim=1)


class WhisperEncoder(nn.Module):
    def __init__(self, config: WhisperEncoderConfig = WhisperEncoderConfig()):
        super().__init__()
        self.config = config
        self.conv1 = nn.Conv1d(config.n_mels, config.width, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(config.width, config.width, kernel_size=3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(config.max_positions, config.width)
        with torch.no_grad():
            self.embed_positions.weight.copy_(sinusoids(config.max_positions, config.width))
        self.embed_positions.weight.requires_grad_(False)
        self.layers = nn.ModuleList(EncoderLayer(config.width, config.heads, config.ffn) for _ in range(config.layers))
        self.layer_norm = nn.LayerNorm(config.width)

    @staticmethod
    def output_lengths(frame_lengths: torch.Tensor) -> torch.Tensor:
        return (frame_lengths - 1) // 2 + 1

    def embed(self, features: torch.Tensor, frame_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """[B, n_mels, T] log-mel -> [B, ceil(T/2), width] hidden states before the first layer.

        With `frame_lengths`, frames past each clip's end are zeroed at both conv inputs: that is the zero
        padding the convolutions see when the clip runs alone, so batching never changes a clip's encoding."""
        if frame_lengths is None:
            x = F.gelu(self.conv1(features))
        else:
            frames = torch.arange(features.shape[-1], device=features.device)
            valid = (frames[None, :] < frame_lengths[:, None])[:, None, :]
            x = F.gelu(self.conv1(features.masked_fill(~valid, 0.0))).masked_fill(~valid, 0.0)
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        if x.shape[1] > self.config.max_positions:
            raise ValueError(f"input of {x.shape[1]} encoder frames exceeds the teacher's window of "
                             f"{self.config.max_positions} (30 s): cut the audio to 30 s first")
        return x + self.embed_positions.weight[: x.shape[1]]

    @staticmethod
    def attention_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor | None:
        valid = torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]
        if bool(valid.all()):
            return None  # no padding: let SDPA take its fastest path
        return valid[:, None, None, :]  # [B, 1, 1, S]: padded keys are masked for every query

    def run_layers(self, x: torch.Tensor, lengths: torch.Tensor, start: int = 0,
                   end: int | None = None) -> torch.Tensor:
        mask = self.attention_mask(lengths, x.shape[1])
        for layer in self.layers[start:end]:
            x = layer(x, mask)
        return x

    def forward(self, features: torch.Tensor, frame_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = self.output_lengths(frame_lengths)
        x = self.embed(features, frame_lengths)
        if not (self.training or torch.is_grad_enabled()) and self.attention_mask(lengths, x.shape[1]) is None:
            # Inference without padding (one clip, or clips of one length): the layers as a TorchScript trace
            # (`eacap.models.tracing.trace`), one per path the linear layers take (packed for a few rows, plain else).
            few_rows = x.numel() <= PACKED_MAX_ROWS * x.shape[-1]
            stack = cached_by_weights(self, f"_traced_cache_{few_rows}", lambda: trace(_Layers(self), x))
            return stack(x), lengths
        x = self.run_layers(x, lengths)
        return self.layer_norm(x), lengths


class _Layers(nn.Module):
    """The encoder's layers and final norm over unpadded input: what `WhisperEncoder.forward` traces."""

    def __init__(self, encoder: WhisperEncoder):
        super().__init__()
        self.layers, self.layer_norm = encoder.layers, encoder.layer_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, None)
        return self.layer_norm(x)
