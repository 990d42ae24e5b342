"""YAMNet cut to a student's cost: channel pruning, then distillation from the whole network on the project's audio.

The question this answers (`python -m train encoder-probe --pruned-yamnet`): YAMNet, trained on AudioSet, hears the
held-out sounds far better than the student's CNN, trained on this project's few hundred recordings. Does a YAMNet
pruned to a student's cost keep that hearing, once distilled from the whole network?

- `prune`: every 1x1 convolution keeps its `width` share of output channels with the largest L1 norm (batch norms
  are folded into the weights, so the norms compare); each depthwise convolution keeps the channels its input kept.
  What is left is YAMNet's own weights, a subnetwork of it.
- `distil`: the pruned network learns, on 0.96 s patches of the given audio (random cuts, half of them mixed with a
  second cut 0-10 dB under, gains from -20 to +6 dB), to give the whole network's patch embedding (through a
  linear map, mean squared error) and its AudioSet class probabilities (through the whole network's classifier
  restricted to the kept channels, binary cross-entropy).
- `fidelity`: the median cosine between the distilled network's mapped embedding and the whole network's.
- `patch_embedding`: a clip's embedding as YAMNet makes it, the mean over its patches of each patch's pooled
  features, patches every `hop` frames (48: YAMNet's own 0.48 s; 96: 0.96 s, half the work).
"""
from __future__ import annotations

import copy
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from eacap.features import YamnetLogMel
from eacap.models.yamnet import EMBEDDING_DIM, YAMNet, _Conv

PATCH_FRAMES = 96
PATCH_SAMPLES = (PATCH_FRAMES - 1) * 160 + 400   # the samples of one 96-frame patch (25 ms windows, 10 ms hop)
SILENT_RMS = 1e-3                                # -60 dBFS


def prune(yamnet: YAMNet, width: float) -> tuple[nn.Sequential, torch.Tensor]:
    """(YAMNet's convolutions with `width` of each layer's channels, the indices of the last layer's kept
    channels). width 1.0 gives a copy of the whole network."""
    if not 0 < width <= 1:
        raise ValueError(f"width must be in (0, 1], got {width}")
    kept, layers = None, []
    for layer in yamnet.layers:
        conv = layer.conv
        weight, bias = conv.weight.detach(), conv.bias.detach()
        if conv.groups > 1:   # depthwise: the channels its input kept
            new = _Conv(len(kept), len(kept), conv.kernel_size[0], layer.stride, groups=len(kept))
            new.conv.weight.data, new.conv.bias.data = weight[kept].clone(), bias[kept].clone()
        else:
            if kept is not None:
                weight = weight[:, kept]
            count = max(8, round(conv.out_channels * width))
            kept = weight.abs().sum((1, 2, 3)).argsort(descending=True)[:count].sort().values
            new = _Conv(weight.shape[1], count, conv.kernel_size[0], layer.stride)
            new.conv.weight.data, new.conv.bias.data = weight[kept].clone(), bias[kept].clone()
        layers.append(new)
    return nn.Sequential(*layers).eval(), kept


def patches(frontend: YamnetLogMel, waveform: torch.Tensor, hop: int) -> torch.Tensor:
    """A clip [N] -> its patches [P, 1, 96, 64]; a clip under 0.96 s is one patch, the rest silence."""
    features, _ = frontend(waveform[None], torch.tensor([waveform.numel()]))
    if features.shape[-1] < PATCH_FRAMES:
        features = F.pad(features, (0, PATCH_FRAMES - features.shape[-1]), value=float(np.log(frontend.LOG_OFFSET)))
    return features.unfold(2, PATCH_FRAMES, hop)[0].permute(1, 2, 0)[:, None]


def patch_embedding(layers: nn.Module, frontend: YamnetLogMel, waveform: torch.Tensor, hop: int) -> np.ndarray:
    """The clip's embedding: each patch's features pooled over time and frequency, then averaged over patches."""
    return layers(patches(frontend, waveform, hop)).mean((0, 2, 3)).numpy()


def seconds_per_clip(layers: nn.Module, frontend: YamnetLogMel, hop: int, seconds: float = 10.0,
                     repeats: int = 15) -> float:
    """The median time of one clip's embedding, front-end included (noise; the current thread count)."""
    wave = torch.randn(round(seconds * 16000), generator=torch.Generator().manual_seed(0)) * 0.1
    times = []
    with torch.inference_mode():
        for i in range(repeats + 3):
            start = time.perf_counter()
            patch_embedding(layers, frontend, wave, hop)
            if i >= 3:
                times.append(time.perf_counter() - start)
    return float(np.median(times))


def _cut(wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    start = int(rng.integers(0, max(1, len(wave) - PATCH_SAMPLES)))
    piece = wave[start: start + PATCH_SAMPLES]
    return np.pad(piece, (0, PATCH_SAMPLES - len(piece)))


def distil(teacher: YAMNet, layers: nn.Sequential, kept: torch.Tensor, waves: list[np.ndarray],
           frontend: YamnetLogMel, steps: int, batch: int = 64, lr: float = 2e-3, seed: int = 0,
           log_every: int = 0) -> tuple[nn.Sequential, nn.Linear]:
    """A copy of the pruned `layers` trained to give `teacher`'s patch embeddings and class probabilities on
    patches cut from `waves` (module doc). Returns it and the learned map of its embedding onto the teacher's,
    both in eval mode."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    student = copy.deepcopy(layers).train()
    proj = nn.Linear(len(kept), EMBEDDING_DIM)
    classifier = nn.Linear(len(kept), teacher.classifier.out_features)
    classifier.weight.data = teacher.classifier.weight.detach()[:, kept].clone()
    classifier.bias.data = teacher.classifier.bias.detach().clone()
    params = [*student.parameters(), *proj.parameters(), *classifier.parameters()]
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, lr, total_steps=steps, pct_start=0.05)
    start = time.perf_counter()
    for step in range(steps):
        cuts, drawn = [], 0
        while len(cuts) < batch:
            drawn += 1
            if drawn > 100 * batch:
                raise ValueError("distil: nearly every cut of the audio is silent (under -60 dBFS); give it audio")
            cut = _cut(waves[rng.integers(len(waves))], rng)
            if rng.random() < 0.5:   # a second sound under the first
                cut = cut + _cut(waves[rng.integers(len(waves))], rng) * 10 ** (-rng.uniform(0, 10) / 20)
            cut = cut * 10 ** (rng.uniform(-20, 6) / 20)
            # YAMNet's embedding of (near) silence is some eight times the usual size: such cuts would carry
            # most of the squared error, so they are drawn again
            if np.sqrt(np.mean(cut ** 2)) >= SILENT_RMS:
                cuts.append(cut)
        x = torch.from_numpy(np.stack(cuts).astype(np.float32))
        features, _ = frontend(x, torch.full((batch,), PATCH_SAMPLES))
        x = features.transpose(1, 2)[:, None, :PATCH_FRAMES]
        with torch.no_grad():
            target = teacher.embeddings(x)
            probabilities = torch.sigmoid(teacher.classifier(target))
        embedding = student(x).mean((2, 3))
        mse = F.mse_loss(proj(embedding), target)
        bce = F.binary_cross_entropy_with_logits(classifier(embedding), probabilities)
        loss = mse + 10 * bce   # the two about equal at the start
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if log_every and step % log_every == 0:
            print(f"  step {step}: embedding MSE {mse.item():.4f}, class BCE {bce.item():.4f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    return student.eval().requires_grad_(False), proj.eval().requires_grad_(False)


def fidelity(teacher: YAMNet, layers: nn.Module, proj: nn.Linear, frontend: YamnetLogMel,
             waves: list[np.ndarray], hop: int = PATCH_FRAMES) -> float:
    """How close the distilled network comes to the whole one: the median cosine, over the patches of `waves`
    that are not silent, between its embedding mapped by `proj` and the whole network's."""
    cosines = []
    with torch.inference_mode():
        for wave in waves:
            x = patches(frontend, torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)), hop)
            audible = x.amax((1, 2, 3)) > np.log(frontend.LOG_OFFSET) + 1e-3
            if audible.any():
                x = x[audible]
                cosines.append(F.cosine_similarity(proj(layers(x).mean((2, 3))), teacher.embeddings(x)))
    return float(torch.cat(cosines).median()) if cosines else float("nan")
