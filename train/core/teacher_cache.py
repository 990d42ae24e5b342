"""The teacher on top of its cache: the outputs of its frozen lower encoder layers, written once per split by
`train cache` (`cache/<split>.f16`, float16 [clips, frames, width], with `cache/<split>.json`), and for a teacher
with a tagger YAMNet's logits per patch (`cache/<split>.tags.f16`, float16 [clips, patches, 521], with
`cache/<split>.tags.json`), then read by the stages that train the teacher's top (`train teacher`) or decode with it
(`train pseudo`), so neither runs the whole encoder again.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from eacap.decoding import DecodingOptions, decode
from eacap.models import CaptionModel
from eacap.models.yamnet import Memory, join_memory
from train.core.config import PipelineConfig
from train.core.data import run_path
from train.core.losses import caption_ce, clip_embedding


def cache_path(config: PipelineConfig, split: str, part: str = "") -> Path:
    """The split's cache description (`.json`); its float16 data is the same path with the suffix `.f16`.
    part="tags": the tagger's scores."""
    return run_path(config, "cache", f"{split}.{part}.json" if part else f"{split}.json")


class _Memmap:
    """One cached array of a split: rows [clips, time, width] float16 and each clip's valid length."""

    def __init__(self, config: PipelineConfig, split: str, part: str = ""):
        meta_path = cache_path(config, split, part)
        if not meta_path.is_file():
            raise FileNotFoundError(f"no teacher cache{' of ' + part if part else ''} for split {split!r} at "
                                    f"{meta_path}: run `python -m train cache --preset {config.name}` first")
        self.meta = json.loads(meta_path.read_text())
        self.ids, self.lengths = self.meta["ids"], np.asarray(self.meta["lengths"])
        self.data = np.memmap(meta_path.with_suffix(".f16"), dtype=np.float16, mode="r",
                              shape=tuple(self.meta["shape"]))

    def rows(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = torch.as_tensor(self.lengths[indices])
        t = int(lengths.max())
        return torch.from_numpy(np.ascontiguousarray(self.data[indices, :t])).float(), lengths


class HiddenCache(_Memmap):
    """The frozen-layer outputs of one split, and the tagger's scores when the preset's teacher has a tagger:
    `batch(indices)` -> {"hidden": float32 [B, T, width], "lengths": [B]} (+ "scores" [B, P, 521], "counts" [B])."""

    def __init__(self, config: PipelineConfig, split: str):
        super().__init__(config, split)
        self.tags = _Memmap(config, split, "tags") if config.teacher_tagger else None
        if self.tags is not None and self.tags.ids != self.ids:
            raise ValueError(f"the {split} caches of the encoder and of the tagger hold different clips: delete "
                             f"{cache_path(config, split, 'tags')} and its .f16 and run `train cache` again")

    def batch(self, indices) -> dict:
        hidden, lengths = self.rows(indices)
        inputs = {"hidden": hidden, "lengths": lengths}
        if self.tags is not None:
            inputs["scores"], inputs["counts"] = self.tags.rows(indices)
        return inputs


class TeacherTop(nn.Module):
    """Cached frozen-layer outputs (and tagger scores) -> trainable top layers (and tag tokens) -> decoder loss.

    `memory_dropout`: in training, that share of clips has its encoder frames hidden, so the decoder reads the tag
    tokens alone and learns to caption from them too."""

    def __init__(self, model: CaptionModel, frozen: int, memory_dropout: float = 0.0):
        super().__init__()
        self.model, self.frozen, self.memory_dropout = model, frozen, memory_dropout
        model.requires_grad_(False)
        trained = [*model.encoder.layers[frozen:], model.encoder.layer_norm, model.decoder]
        if model.tagger is not None:
            trained += [model.tagger.norm, model.tagger.proj, model.tagger.positions]
        for module in trained:
            module.requires_grad_(True)
        model.decoder.positions.requires_grad_(False)

    def frames(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        encoder = self.model.encoder
        return encoder.layer_norm(encoder.run_layers(hidden, lengths, start=self.frozen))

    def memory(self, inputs: dict) -> Memory:
        """A cache batch -> the encoder's frames, the tagger's tokens and the decoder's memory."""
        lengths = inputs["lengths"]
        frames = self.frames(inputs["hidden"], lengths)
        if self.model.tagger is None:
            return Memory(frames, lengths)
        shown = lengths
        if self.memory_dropout >= 1.0:   # a decoder trained on the tokens alone is validated on them alone
            shown = torch.zeros_like(lengths)
        elif self.training and self.memory_dropout > 0:
            shown = lengths.masked_fill(torch.rand(lengths.shape) < self.memory_dropout, 0)
        tokens = self.model.tagger.tokens(inputs["scores"])
        return Memory(frames, lengths, tokens, inputs["counts"], *join_memory(frames, shown, tokens, inputs["counts"]))

    def forward(self, batch: dict):
        memory, memory_lengths = self.memory(batch).joined
        tokens = batch["tokens"]
        logits = self.model.decoder(tokens[:, :-1], memory, memory_lengths)
        loss = caption_ce(logits, tokens[:, 1:], self.model.tokenizer.pad_id, normaliser=batch.get("token_norm"))
        return loss, {"sup": loss.detach()}


def cached_captions(top: TeacherTop, cache: HiddenCache, indices, options: DecodingOptions, batch_size: int = 32,
                    partner: TeacherTop | None = None, weight: float = 0.5):
    """Decode captions for cached clips; returns (hypotheses tokens, scores, clip embeddings [N, width]).

    With a `partner` (a teacher over the same cached encoder), the two decode as one (`train.core.ensemble`, the
    partner's share of the log-probabilities `weight`), and a clip's embedding is the mean of the two time-means of
    what each decoder reads."""
    from train.core.ensemble import pair_decode
    tokens, scores, embeddings = [], [], []
    with torch.inference_mode():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start: start + batch_size]
            inputs = cache.batch(chunk)
            memory = top.memory(inputs)
            if partner is None:
                hyps = decode(top.model.decoder, *memory.joined, top.model.tokenizer.special, options,
                              top.model.sound_words)
                embedding = memory.embedding()
            else:
                other = partner.memory(inputs)
                hyps = pair_decode(top.model, memory.joined, partner.model, other.joined, weight, options)
                embedding = (clip_embedding(*memory.joined) + clip_embedding(*other.joined)) / 2
            tokens += hyps.tokens
            scores += hyps.scores
            embeddings.append(embedding.float().numpy())
    return tokens, scores, np.concatenate(embeddings) if embeddings else np.zeros((0, 0))
