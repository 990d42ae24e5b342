"""Reading a frozen Whisper encoder layer by layer: per-layer features, and two trained readers over all layers.

Whisper's representations of background sounds are spread over its layers, and the last one is not the best for
them (Gong et al., "Whisper-AT", Interspeech 2023). `layer_features` runs the encoder once and keeps every layer's
output: the input to the first layer (the convolutional stem plus positions), each layer's output, and, for the last
layer, the output after the final norm, which is what the encoder returns. Each is kept two ways: the mean over the
clip's valid frames (for linear probes and the weighted sum), and the frames averaged over windows of `POOL` frames
(for the time-and-layer reader).

Readers, trained on the training bank's clips and applied to the cross-source split by `train encoder-probe
--layers`:
- `WeightedSum`: a learned softmax-weighted sum of the layers' standardised clip means, then a linear layer: what a
  teacher whose decoder attends to a layer-weighted memory would start from.
- `TimeLayerReader`: a small time-and-layer-wise Transformer in the spirit of Whisper-AT's TL-TR: attention over
  time within each layer (one layer of self-attention over that layer's pooled frames, projected to `width`),
  each layer's frames averaged, then attention over the layers, averaged, then a linear layer.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

POOL = 20          # encoder frames (20 ms each) per pooled frame: 0.4 s, 25 per 10 s clip


@torch.inference_mode()
def layer_features(encoder, frontend, wave: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """A 16 kHz clip [N] -> (clip means [L + 1, D] float32, pooled frames [L + 1, T', D] float16)."""
    feats, lengths = frontend(wave[None], torch.tensor([wave.numel()]))
    x = encoder.embed(feats, lengths)
    valid = int(encoder.output_lengths(lengths)[0])
    outputs = [x]
    for index in range(len(encoder.layers)):
        x = encoder.run_layers(x, encoder.output_lengths(lengths), index, index + 1)
        outputs.append(x)
    outputs[-1] = encoder.layer_norm(outputs[-1])      # the encoder's own output
    stack = torch.stack([o[0, :valid] for o in outputs])  # [L + 1, T, D]
    windows = -(-valid // POOL)
    padded = torch.nn.functional.pad(stack, (0, 0, 0, windows * POOL - valid))
    counts = (torch.arange(windows * POOL).view(windows, POOL) < valid).sum(1)
    pooled = padded.view(stack.shape[0], windows, POOL, -1).sum(2) / counts[None, :, None]
    return stack.mean(1).numpy(), pooled.to(torch.float16).numpy()


class WeightedSum(nn.Module):
    def __init__(self, layers: int, dim: int, classes: int):
        super().__init__()
        self.mix = nn.Parameter(torch.zeros(layers))
        self.head = nn.Linear(dim, classes)

    def weights(self) -> torch.Tensor:
        return self.mix.softmax(0)

    def forward(self, means: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        """means [B, L + 1, D] (standardised per layer) -> logits [B, classes]."""
        return self.head((self.weights()[None, :, None] * means).sum(1))


class TimeLayerReader(nn.Module):
    def __init__(self, layers: int, dim: int, classes: int, width: int = 128, heads: int = 4, dropout: float = 0.2):
        super().__init__()
        self.project = nn.Linear(dim, width)
        self.layer_embedding = nn.Parameter(torch.zeros(layers, width))
        self.time = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout, batch_first=True)
        self.across = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout, batch_first=True)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Dropout(dropout), nn.Linear(width, classes))

    def forward(self, means: torch.Tensor, frames: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """frames [B, L + 1, T', D] (standardised), valid [B, T'] bool -> logits [B, classes]."""
        b, layers, t, _ = frames.shape
        x = self.project(frames).reshape(b * layers, t, -1)
        keep = valid[:, None, :].expand(b, layers, t).reshape(b * layers, t)
        x = self.time(x, src_key_padding_mask=~keep)
        x = (x * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)          # each layer's frames averaged
        x = self.across(x.view(b, layers, -1) + self.layer_embedding).mean(1)  # then attention over the layers
        return self.head(x)


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Each feature (over the last axis, per layer) scaled by the training clips' mean and deviation."""
    axes = tuple(range(train.ndim - 1))
    if train.ndim == 4:   # [clips, layers, frames, dim]: statistics per layer over clips and frames
        axes = (0, 2)
    mean = train.mean(axis=axes, keepdims=True)
    std = train.std(axis=axes, keepdims=True) + 1e-5
    return [(x - mean) / std for x in (train, *others)]


def pad_frames(pooled: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Pooled frames of several clips [L + 1, T'_i, D] -> [clips, L + 1, max T', D] and valid [clips, max T']."""
    longest = max(p.shape[1] for p in pooled)
    out = np.zeros((len(pooled), pooled[0].shape[0], longest, pooled[0].shape[2]), dtype=np.float32)
    valid = np.zeros((len(pooled), longest), dtype=bool)
    for row, p in enumerate(pooled):
        out[row, :, : p.shape[1]] = p
        valid[row, : p.shape[1]] = True
    return out, valid


def train_reader(reader: nn.Module, inputs: tuple[torch.Tensor, ...], labels: torch.Tensor, steps: int = 600,
                 batch: int = 32, lr: float = 1e-3, weight_decay: float = 0.01, seed: int = 0) -> nn.Module:
    """Cross-entropy on the training clips, AdamW, `steps` minibatches; returns the reader in eval mode."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    optimiser = torch.optim.AdamW(reader.parameters(), lr=lr, weight_decay=weight_decay)
    reader.train()
    for _ in range(steps):
        rows = torch.from_numpy(rng.choice(len(labels), min(batch, len(labels)), replace=False))
        loss = nn.functional.cross_entropy(reader(*(x[rows] for x in inputs)), labels[rows])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return reader.eval()


@torch.inference_mode()
def probabilities(reader: nn.Module, inputs: tuple[torch.Tensor, ...]) -> np.ndarray:
    return reader(*inputs).softmax(-1).numpy()
