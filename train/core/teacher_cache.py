"""The teacher on top of its cache: the outputs of its frozen lower encoder layers, written once per split by
`train cache` (`cache/<split>.f16`, float16 [clips, frames, width], with `cache/<split>.json`), then read by the
stages that train the teacher's top (`train teacher`) or decode with it (`train pseudo`), so neither runs the whole
encoder again.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from eacap.decoding import DecodingOptions, decode
from eacap.models import CaptionModel
from train.core.config import PipelineConfig
from train.core.data import run_path
from train.core.losses import caption_ce, clip_embedding


def cache_path(config: PipelineConfig, split: str) -> Path:
    """The split's cache description (`.json`); its float16 data is the same path with the suffix `.f16`."""
    return run_path(config, "cache", f"{split}.json")


class HiddenCache:
    """The frozen-layer outputs of one split: `batch(indices)` -> (float32 [B, T, width], lengths [B])."""

    def __init__(self, config: PipelineConfig, split: str):
        meta_path = cache_path(config, split)
        if not meta_path.is_file():
            raise FileNotFoundError(f"no teacher cache for split {split!r} at {meta_path}: run `python -m train cache "
                                    f"--preset {config.name}` first")
        self.meta = json.loads(meta_path.read_text())
        self.ids, self.lengths = self.meta["ids"], np.asarray(self.meta["lengths"])
        self.data = np.memmap(meta_path.with_suffix(".f16"), dtype=np.float16, mode="r",
                              shape=tuple(self.meta["shape"]))

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = torch.as_tensor(self.lengths[indices])
        t = int(lengths.max())
        hidden = torch.from_numpy(np.ascontiguousarray(self.data[indices, :t])).float()
        return hidden, lengths


class TeacherTop(nn.Module):
    """Cached frozen-layer outputs -> trainable top layers -> decoder loss."""

    def __init__(self, model: CaptionModel, frozen: int):
        super().__init__()
        self.model, self.frozen = model, frozen
        model.requires_grad_(False)
        for module in (*model.encoder.layers[frozen:], model.encoder.layer_norm, model.decoder):
            module.requires_grad_(True)
        model.decoder.positions.requires_grad_(False)

    def frames(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        encoder = self.model.encoder
        return encoder.layer_norm(encoder.run_layers(hidden, lengths, start=self.frozen))

    def forward(self, batch: dict):
        frames = self.frames(batch["hidden"], batch["lengths"])
        tokens = batch["tokens"]
        logits = self.model.decoder(tokens[:, :-1], frames, batch["lengths"])
        loss = caption_ce(logits, tokens[:, 1:], self.model.tokenizer.pad_id, normaliser=batch.get("token_norm"))
        return loss, {"sup": loss.detach()}


def cached_captions(top: TeacherTop, cache: HiddenCache, indices, options: DecodingOptions, batch_size: int = 32):
    """Decode captions for cached clips; returns (hypotheses tokens, scores, clip embeddings [N, width])."""
    tokens, scores, embeddings = [], [], []
    with torch.inference_mode():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start: start + batch_size]
            hidden, lengths = cache.batch(chunk)
            frames = top.frames(hidden, lengths)
            hyps = decode(top.model.decoder, frames, lengths, top.model.tokenizer.special, options,
                          top.model.sound_words)
            tokens += hyps.tokens
            scores += hyps.scores
            embeddings.append(clip_embedding(frames, lengths).numpy())
    return tokens, scores, np.concatenate(embeddings) if embeddings else np.zeros((0, 0))
