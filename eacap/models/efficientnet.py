"""The student's audio encoder: a small EfficientNet-style CNN over the 64-bin log-mel.

MBConv blocks (1x1 expansion, depthwise conv, squeeze-excitation, 1x1 projection) as in EfficientNet, trained
from scratch. In every preset the stem and four stages halve time and frequency, 32x in all: one encoder frame
per 32 log-mel frames (320 ms at a 10 ms hop, 1.28 s at the shipped student's 40 ms hop). The remaining
frequency axis is averaged away, as in the EfficientNet-B2 encoder of Xu et al. (Interspeech 2024). Width and
depth are configurable so the same code builds the tiny test model and the shipped student.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .activations import activation
from .packed_linear import cached_by_weights
from .tracing import trace

# Clips per CNN pass at inference, per device type (see EfficientNetEncoder.forward); None: the whole batch at once.
INFERENCE_CHUNK = {"cpu": 16}


@dataclass(frozen=True)
class StageConfig:
    channels: int
    repeats: int
    stride: int      # applied by the first block of the stage, to time and frequency
    kernel: int = 3
    expand: int = 4


def default_stages() -> tuple[StageConfig, ...]:
    # EfficientNet-B0's stage widths, but the first (unexpanded) stage already halves the resolution: the 4x
    # expanded activations of stage 2 then live at 1/4 of the stem's resolution, which on a CPU makes a clip
    # markedly faster for the same parameters.
    return (
        StageConfig(16, 1, 2, 3, 1),
        StageConfig(24, 2, 1, 3),
        StageConfig(40, 2, 2, 5),
        StageConfig(80, 3, 2, 3),
        StageConfig(112, 2, 1, 5),
        StageConfig(160, 2, 2, 5),
    )


@dataclass(frozen=True)
class EfficientNetConfig:
    kind: str = "efficientnet"
    n_mels: int = 64
    stem: int = 24
    stages: tuple[StageConfig, ...] = field(default_factory=default_stages)
    out_dim: int = 256
    dropout: float = 0.1   # stochastic depth rate at the last block, linearly scaled from 0
    activation: str = "silu"  # EfficientNet's; "relu" (MobileNetV2's) is cheaper per call on a CPU (the "lite" student)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "EfficientNetConfig":
        data = dict(data)
        data["stages"] = tuple(StageConfig(**stage) for stage in data.get("stages", ()))
        return cls(**data)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeezed: int, act: str = "silu"):
        super().__init__()
        self.act = activation(act)[1]
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.expand = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The two 1x1 convolutions act on one pooled vector per clip: as matrix products they are the same
        # arithmetic without the per-call cost of PyTorch's fallback path for a 1x1 convolution on a 1 x 1 image,
        # which adds up over the many blocks of a clip (docs/performance.md).
        scale = x.mean(dim=(2, 3))
        hidden = self.act(F.linear(scale, self.reduce.weight.flatten(1), self.reduce.bias))
        gate = torch.sigmoid(F.linear(hidden, self.expand.weight.flatten(1), self.expand.bias))
        return x * gate[:, :, None, None]


class MBConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int, drop: float, act: str = "silu"):
        super().__init__()
        hidden, Act = c_in * expand, activation(act)[0]
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), Act()]
        layers += [
            nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), Act(),
            SqueezeExcite(hidden, max(1, c_in // 4), act),
            nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out
        self.drop = drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        if not self.residual:
            return y
        if self.training and self.drop > 0:
            keep = torch.rand(x.shape[0], 1, 1, 1, device=x.device) >= self.drop
            y = y * keep / (1.0 - self.drop)
        return x + y


class EfficientNetEncoder(nn.Module):
    def __init__(self, config: EfficientNetConfig = EfficientNetConfig()):
        super().__init__()
        self.config = config
        Act = activation(config.activation)[0]
        self.stem = nn.Sequential(nn.Conv2d(1, config.stem, 3, 2, 1, bias=False), nn.BatchNorm2d(config.stem), Act())
        n_blocks = sum(stage.repeats for stage in config.stages)
        blocks, c_in, index = [], config.stem, 0
        for stage in config.stages:
            for repeat in range(stage.repeats):
                drop = config.dropout * index / max(1, n_blocks - 1)
                blocks.append(MBConv(c_in, stage.channels, stage.kernel, stage.stride if repeat == 0 else 1,
                                     stage.expand, drop, config.activation))
                c_in, index = stage.channels, index + 1
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Conv2d(c_in, config.out_dim, 1, bias=False), nn.BatchNorm2d(config.out_dim), Act())
        # Channels-last (NHWC) lets oneDNN run these small convolutions faster, in training too. The state dict is
        # saved contiguous, so checkpoints are the same either way.
        self.to(memory_format=torch.channels_last)

    def output_lengths(self, frame_lengths: torch.Tensor) -> torch.Tensor:
        # The stem and each stride-2 stage (kernel k, padding k // 2) map n frames to ceil(n / 2); ceil(n / 2)
        # taken s times is ceil(n / 2**s).
        stride = 2 ** (1 + sum(stage.stride == 2 for stage in self.config.stages))
        return (frame_lengths + stride - 1) // stride

    def inference_network(self) -> nn.Module:
        """stem + blocks + head for inference, then the average over frequency (`Pooled`): each BatchNorm folded
        into its convolution, channels-last layout.

        The same function as the training graph in eval mode (equal to float rounding), about a quarter faster on a
        CPU. Built from the current weights and rebuilt when any of them changes (an optimiser step bumps the
        tensors' versions), so validation during training sees the latest weights; it is never part of the state
        dict.
        """
        def build():
            network = fold_batchnorms(nn.Sequential(self.stem, self.blocks, self.head))
            return Pooled(network.to(memory_format=torch.channels_last).requires_grad_(False))
        return cached_by_weights(self, "_inference_cache", build)

    def forward(self, features: torch.Tensor, frame_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, n_mels, T] log-mel -> ([B, T/32, out_dim] frame embeddings, lengths)."""
        if self.training or torch.is_grad_enabled():
            x = self.head(self.blocks(self.stem(features[:, None].contiguous(memory_format=torch.channels_last))))
            x = Pooled.pool(x)
        else:
            # A CNN over a whole batch of 10 s clips is memory-bound on a CPU: its early activations overflow the
            # caches. Small chunks keep them cache-resident, several times faster; results are equal. A GPU is the
            # opposite: each pass costs dozens of kernel launches whatever its size, so it takes the batch whole.
            chunk = INFERENCE_CHUNK.get(features.device.type) or features.shape[0]
            chunks = [part[:, None].contiguous(memory_format=torch.channels_last) for part in features.split(chunk)]
            network = cached_by_weights(self, "_traced_cache", lambda: trace(self.inference_network(), chunks[0]))
            x = torch.cat([network(chunk) for chunk in chunks]) if len(chunks) > 1 else network(chunks[0])
        return x, self.output_lengths(frame_lengths)


def fold_batchnorms(network: nn.Module) -> nn.Module:
    """An eval-mode copy of `network` with each BatchNorm that follows a convolution in a `nn.Sequential` folded into
    it (`fuse_conv_bn_eval`). The same result as `torch.fx`'s `fuse`, to the bit, without its symbolic trace, which
    patches `nn.Module.__call__` for the whole process while it runs and so breaks any module called meanwhile in
    another thread (a model running in the app's other thread, a fused trace built in the background)."""
    network = copy.deepcopy(network).eval()
    for module in network.modules():
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if isinstance(module[i], nn.Conv2d) and isinstance(module[i + 1], nn.BatchNorm2d):
                    module[i], module[i + 1] = fuse_conv_bn_eval(module[i], module[i + 1]), nn.Identity()
    return network


class Pooled(nn.Module):
    """A CNN's output [B, C, F, T] averaged over frequency into time-major frames [B, T, C]: part of the traced
    inference network, so a GPU captures it in the same graph."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    @staticmethod
    def pool(x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.network(x))
