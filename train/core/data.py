"""Training data: caption sets with tokenized captions, batches built deterministically per step, SpecAugment.

Items come from `train.corpus.datasets.load_caption_set` (scene corpus, Clotho or AudioCaps); audio is rendered or read
per batch in a background thread (`Prefetcher`) while the previous step trains.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from eacap.tokenizer import CaptionTokenizer
from train.core.config import COMMITTED_RESULTS, RUNS_ROOT, PipelineConfig
from train.core.trainer import Dist, batch_indices, rank_slice, sample_rng
from train.corpus.datasets import SCENES_ROOT, CaptionItem, item_waveform, load_caption_set
from train.corpus.manifest import CLASSES_PATH, load_classes

SPEC_AUGMENT_PURPOSE, CAPTION_PURPOSE, AUGMENT_PURPOSE, CACHE_AUGMENT_PURPOSE = 1, 2, 3, 4


def load_split(config: PipelineConfig, split: str, label_fraction: float | None = None) -> list[CaptionItem]:
    items = load_caption_set(config.scenes, split, label_fraction=label_fraction, seed=config.seed)
    if split == "audio_only" and config.audio_only_scenes is not None:
        items = items[: config.audio_only_scenes]
    return items


def tokenize(tokenizer: CaptionTokenizer, caption: str, max_tokens: int) -> list[int]:
    ids = tokenizer.encode(caption)
    return ids if len(ids) <= max_tokens else ids[: max_tokens - 1] + [tokenizer.eos_id]


def pad_tokens(sequences: list[list[int]], pad_id: int) -> torch.Tensor:
    out = torch.full((len(sequences), max(len(s) for s in sequences)), pad_id, dtype=torch.long)
    for row, seq in enumerate(sequences):
        out[row, : len(seq)] = torch.tensor(seq)
    return out


def pad_waveforms(waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([w.size for w in waves])
    batch = torch.zeros(len(waves), int(lengths.max()))
    for row, w in enumerate(waves):
        batch[row, : w.size] = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
    return batch, lengths


def pick_caption(item: CaptionItem, seed: int, step: int, index: int) -> str:
    rng = sample_rng(seed, step, index, CAPTION_PURPOSE)
    return item.captions[int(rng.integers(len(item.captions)))]


def spec_augment_masks(frames: int, n_mels: int, rng: np.random.Generator,
                       spec: tuple[int, int, int, int]) -> list[tuple]:
    """Stripes to mask: ("t", start, end) and ("f", start, end), as in SpecAugment (docs/method.md §1.3)."""
    time_width, time_stripes, freq_width, freq_stripes = spec
    masks = []
    for axis, width, count, size in (("t", time_width, time_stripes, frames), ("f", freq_width, freq_stripes, n_mels)):
        for _ in range(count):
            w = int(rng.integers(0, min(width, max(1, size // 4)) + 1))
            start = int(rng.integers(0, max(1, size - w)))
            masks.append((axis, start, start + w))
    return masks


def apply_spec_augment(features: torch.Tensor, masks: list[list[tuple]]) -> torch.Tensor:
    """Masked stripes take each clip's mean value (the features are dB, so 0 would be a loud artefact)."""
    features = features.clone()
    for row, clip_masks in enumerate(masks):
        fill = features[row].mean()
        for axis, start, end in clip_masks:
            if axis == "t":
                features[row, :, start:end] = fill
            else:
                features[row, start:end, :] = fill
    return features


SPEC_AUGMENT_HOP = 160  # samples per frame that PipelineConfig.spec_augment's time width is counted in


def rerecorded(waves: list[np.ndarray], indices, share: float, seed: int, step: int, purpose: int) -> list[np.ndarray]:
    """`waves` with a `share` of them re-recorded by `augment`, each choice drawn from (seed, step, index)."""
    if share <= 0:
        return waves
    from train.core.augment import augment  # scipy.signal is slow to import; only re-recording runs need it

    rngs = [sample_rng(seed, step, int(i), purpose) for i in indices]
    return [augment(w, rng) if rng.random() < share else w for w, rng in zip(waves, rngs)]


def audio_batch(items: list[CaptionItem], indices: np.ndarray, config: PipelineConfig, step: int,
                n_mels: int, hop: int) -> dict:
    waves = rerecorded([item_waveform(items[i]) for i in indices], indices, config.augment, config.seed, step,
                       AUGMENT_PURPOSE)
    w, lengths = pad_waveforms(waves)
    # The time stripes' width is set in frames of the shipped 10 ms hop: a coarser front-end masks the same
    # duration with fewer frames (64 frames at a 40 ms hop would hide 2.6 s per stripe instead of 0.64 s).
    time_width, *rest = config.spec_augment
    spec = (max(1, round(time_width * SPEC_AUGMENT_HOP / hop)), *rest)
    masks = [spec_augment_masks(int(n) // hop + 1, n_mels, sample_rng(config.seed, step, int(i), SPEC_AUGMENT_PURPOSE),
                                spec) for i, n in zip(indices, lengths.tolist())]
    return {"waveforms": w, "lengths": lengths, "masks": masks, "indices": torch.as_tensor(indices),
            "clip_ids": [items[i].audio_id for i in indices]}


def step_indices(n_items: int, batch_size: int, step: int, seed: int, d: Dist) -> tuple[np.ndarray, np.ndarray]:
    """(this rank's indices, the whole global batch's indices) of `step`."""
    everything = batch_indices(n_items, batch_size, step, seed)
    return rank_slice(everything, d), everything


def token_normaliser(captions: list[list[int]], d: Dist) -> float:
    """Target tokens of the whole global batch per rank (see losses.caption_ce)."""
    return sum(len(c) - 1 for c in captions) / d.world


class Prefetcher:
    """Builds the batch of step s+1 in a thread while step s trains (rendering scenes is numpy work)."""

    def __init__(self, make_batch):
        self.make_batch = make_batch
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.pending: dict = {}

    def __call__(self, step: int, d: Dist) -> dict:
        future = self.pending.pop(step, None)
        batch = future.result() if future is not None else self.make_batch(step, d)
        self.pending = {step + 1: self.pool.submit(self.make_batch, step + 1, d)}
        return batch


# Measured results of the full presets (evaluations, the benchmark, real-sound captions) are committed here rather
# than kept under data/, which a fresh machine rebuilds without them: `train report` must regenerate the same
# tables on any machine.
RESULTS_ROOT = Path("train/results")  # relative to the repository root, like RUNS_ROOT


def class_keywords(config: PipelineConfig) -> dict[str, list[str]]:
    """{class: keywords} of the corpus's class table: what event-F1 scores and what models learn not to repeat."""
    root = SCENES_ROOT / config.scenes
    meta = json.loads((root / "dataset.json").read_text()) if (root / "dataset.json").is_file() else {}
    path = Path(meta.get("classes", CLASSES_PATH))
    if not path.is_absolute() and (root / path).is_file():
        path = root / path
    if not path.is_file():  # a corpus built when the project's class table lived elsewhere
        path = CLASSES_PATH
    return {name: entry["keywords"] for name, entry in load_classes(path).items()}


def run_path(config: PipelineConfig, *parts: str) -> Path:
    if (parts and parts[0] == "results" and config.name in COMMITTED_RESULTS
            and Path(config.run_dir) == RUNS_ROOT / config.name):
        return Path(RESULTS_ROOT, config.name, *parts[1:])
    return Path(config.run_dir, *parts)
