"""`python -m train teacher`: train the teacher's top encoder layers and caption decoder on the captioned scenes.

The lower encoder layers stay as converted from Whisper tiny.en (pretrained on 680k hours) and their outputs come
from the cache; the top `teacher_trainable_layers` layers, the final layer norm and the decoder are trained.
Model selection: CIDEr-D of greedy captions on validation clips.

`--from-checkpoint checkpoints/teacher` instead makes a shipped teacher this run's result, so that the later
stages (pseudo captions, students, evaluation) can run on a fresh machine without retraining it: its weights
become the run's best.safetensors once its config and tokenizer are checked against this preset's.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from eacap.decoding import DecodingOptions, decode
from eacap.metrics import caption_metrics
from eacap.models import CaptionModel
from train.stages.cache import HiddenCache, build_tokenizer, caption_model, frozen_layers, initial_teacher_encoder
from train.core.config import PipelineConfig, add_training_arguments, config_from_args
from train.core.data import Prefetcher, load_split, pad_tokens, pick_caption, run_path, step_indices, token_normaliser, tokenize
from train.core.losses import caption_ce
from train.core.trainer import Dist, Trainer, device_for, init_distributed


def build_teacher(config: PipelineConfig) -> CaptionModel:
    model = caption_model(config, config.teacher_model(build_tokenizer(config).vocab_size))
    model.encoder.load_state_dict(initial_teacher_encoder(config).state_dict())
    return model


def load_trained_teacher(config: PipelineConfig) -> CaptionModel:
    model = build_teacher(config)
    path = run_path(config, "teacher", "best.safetensors")
    if not path.is_file():
        raise FileNotFoundError(f"no trained teacher at {path}: run `python -m train teacher --preset {config.name}`")
    model.load_state_dict(load_file(path))
    return model.eval()


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
            hyps = decode(top.model.decoder, frames, lengths, top.model.tokenizer.special, options, top.model.sound_words)
            tokens += hyps.tokens
            scores += hyps.scores
            valid = (torch.arange(frames.shape[1])[None, :] < lengths[:, None]).float()
            embeddings.append(((frames * valid[..., None]).sum(1) / valid.sum(1, keepdim=True)).numpy())
    return tokens, scores, np.concatenate(embeddings) if embeddings else np.zeros((0, 0))


def validation_score(captions: dict[str, str], references: dict[str, list[str]]) -> float:
    return float(caption_metrics(captions, references, meteor=False, sbert=False)["cider_d"])


RESTORED = "restored.json"


def restore(config: PipelineConfig, checkpoint: str | Path) -> dict:
    """Make a saved teacher checkpoint this preset's trained teacher (see the module docstring)."""
    from eacap.checkpoint import load_model

    shipped = load_model(checkpoint)
    tokenizer = build_tokenizer(config)
    if shipped.config != config.teacher_model(tokenizer.vocab_size):
        raise ValueError(f"{checkpoint} is not this preset's teacher architecture: its config.json differs from "
                         f"`--preset {config.name}`'s; train the teacher instead (`python -m train teacher --preset {config.name}`)")
    if shipped.tokenizer.tokenizer.get_vocab() != tokenizer.tokenizer.get_vocab():
        raise ValueError(f"{checkpoint}'s tokenizer differs from the one built from this corpus: it was trained on "
                         f"other captions; rebuild the same corpus or train the teacher instead")
    out = run_path(config, "teacher")
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in shipped.state_dict().items()}, out / "best.tmp")
    (out / "best.tmp").replace(out / "best.safetensors")
    record = {"from_checkpoint": str(checkpoint), "trained_by": json.loads((Path(checkpoint) / "config.json").read_text()).get("trained_by")}
    (out / RESTORED).write_text(json.dumps(record) + "\n")
    print(f"teacher: restored from {checkpoint} into {out / 'best.safetensors'}")
    return record


def run(config: PipelineConfig, steps: int | None = None, bf16: bool = False, stop_after: int | None = None) -> dict:
    if (run_path(config, "teacher", RESTORED)).is_file():  # a restored shipped teacher is this run's result
        return json.loads(run_path(config, "teacher", RESTORED).read_text())
    d = init_distributed()
    device_for(d)  # CPU training here; on GPUs this pins the rank's device
    schedule = replace(config.teacher, steps=steps or config.teacher.steps)
    torch.manual_seed(config.seed)
    model = build_teacher(config)
    top = TeacherTop(model, frozen_layers(config))
    train_items, val_items = load_split(config, "train"), load_split(config, "val")
    train_cache, val_cache = HiddenCache(config, "train"), HiddenCache(config, "val")
    tokenizer = model.tokenizer

    def make_batch(step: int, d: Dist) -> dict:
        idx, everything = step_indices(len(train_items), schedule.batch_size, step, config.seed, d)
        hidden, lengths = train_cache.batch(idx)
        captions = {int(i): tokenize(tokenizer, pick_caption(train_items[i], config.seed, step, int(i)),
                                     config.max_caption_tokens) for i in everything}
        return {"hidden": hidden, "lengths": lengths, "tokens": pad_tokens([captions[int(i)] for i in idx], tokenizer.pad_id),
                "token_norm": token_normaliser(list(captions.values()), d)}

    val_idx = np.arange(min(schedule.eval_clips, len(val_items)))

    def validate() -> float:
        hyps, _, _ = cached_captions(top, val_cache, val_idx, DecodingOptions(1, config.eval_max_length))
        return validation_score({val_items[i].audio_id: tokenizer.decode(h) for i, h in zip(val_idx, hyps)},
                                {val_items[i].audio_id: list(val_items[i].captions) for i in val_idx})

    trainer = Trainer(run_path(config, "teacher"), model, top, schedule, Prefetcher(make_batch), validate,
                      seed=config.seed, d=d, bf16=bf16, stop_after=stop_after)
    return trainer.fit()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser)
    parser.add_argument("--from-checkpoint", metavar="DIR",
                        help="use this saved teacher (e.g. checkpoints/teacher) as the run's result instead of training")


def main(args: argparse.Namespace) -> int:
    if args.from_checkpoint:
        restore(config_from_args(args), args.from_checkpoint)
        return 0
    run(config_from_args(args), steps=args.steps, bf16=args.bf16, stop_after=args.stop_after)
    return 0
