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
from safetensors.torch import save_file

from eacap.checkpoint import load_model
from eacap.decoding import DecodingOptions
from train.core.config import PipelineConfig, add_training_arguments, config_from_args
from train.core.data import (
    Prefetcher,
    load_split,
    pad_tokens,
    pick_caption,
    run_path,
    step_indices,
    token_normaliser,
    tokenize,
)
from train.core.models import build_teacher, build_tokenizer, frozen_layers
from train.core.runs import INIT_FILE
from train.core.teacher_cache import HiddenCache, TeacherTop, cached_captions
from train.core.trainer import Dist, Trainer, device_for, init_distributed, validation_score

RESTORED = "restored.json"


def restore(config: PipelineConfig, checkpoint: str | Path) -> dict:
    """Make a saved teacher checkpoint this preset's trained teacher (see the module docstring)."""
    shipped = load_model(checkpoint)
    tokenizer = build_tokenizer(config)
    if shipped.config != config.teacher_model(tokenizer.vocab_size):
        raise ValueError(f"{checkpoint} is not this preset's teacher architecture: its config.json differs from "
                         f"`--preset {config.name}`'s; train the teacher instead "
                         f"(`python -m train teacher --preset {config.name}`)")
    if shipped.tokenizer.tokenizer.get_vocab() != tokenizer.tokenizer.get_vocab():
        raise ValueError(f"{checkpoint}'s tokenizer differs from the one built from this corpus: it was trained on "
                         f"other captions; rebuild the same corpus or train the teacher instead")
    out = run_path(config, "teacher")
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in shipped.state_dict().items()}, out / "best.tmp")
    (out / "best.tmp").replace(out / "best.safetensors")
    trained_by = json.loads((Path(checkpoint) / "config.json").read_text()).get("trained_by")
    record = {"from_checkpoint": str(checkpoint), "trained_by": trained_by}
    (out / RESTORED).write_text(json.dumps(record) + "\n")
    print(f"teacher: restored from {checkpoint} into {out / 'best.safetensors'}")
    return record


def start_from(model, checkpoint: str | Path) -> list[str]:
    """Load a saved teacher's weights into `model` (e.g. the shipped teacher into one with a tagger): every weight
    the two share; what only `model` has keeps its initial values. Returns the names of those trained here (the
    tagger's projection)."""
    source = load_model(checkpoint)
    if source.config.role != "teacher":
        raise ValueError(f"--init-from needs a teacher, got a {source.config.role} ({checkpoint})")
    if source.tokenizer.tokenizer.get_vocab() != model.tokenizer.tokenizer.get_vocab():
        raise ValueError(f"--init-from {checkpoint}: its tokenizer differs from this run's; start from a teacher "
                         "trained on the same captions, or without --init-from")
    theirs, ours = source.state_dict(), model.state_dict()
    mismatched = [k for k in theirs if k in ours and theirs[k].shape != ours[k].shape]
    if mismatched or set(theirs) - set(ours):
        raise ValueError(f"--init-from {checkpoint}: not this preset's teacher architecture (weights "
                         f"{(mismatched or sorted(set(theirs) - set(ours)))[:3]} do not fit)")
    model.load_state_dict({k: v.float() for k, v in theirs.items()}, strict=False)
    # YAMNet itself came with the architecture (`build_teacher`): only what is trained here starts new.
    return sorted(k for k in set(ours) - set(theirs) if not k.startswith("tagger.yamnet."))


def run(config: PipelineConfig, steps: int | None = None, bf16: bool = False, stop_after: int | None = None,
        init_from: str | None = None) -> dict:
    if (run_path(config, "teacher", RESTORED)).is_file():  # a restored shipped teacher is this run's result
        return json.loads(run_path(config, "teacher", RESTORED).read_text())
    d = init_distributed()
    device_for(d)  # CPU training here; on GPUs this pins the rank's device
    schedule = replace(config.teacher, steps=steps or config.teacher.steps)
    torch.manual_seed(config.seed)
    model = build_teacher(config)
    if init_from:
        folder = run_path(config, "teacher")
        recorded = folder / INIT_FILE
        if recorded.is_file() and json.loads(recorded.read_text())["from"] != str(init_from):
            raise ValueError(f"{folder} started from {json.loads(recorded.read_text())['from']}, not {init_from}: "
                             "resume it with that --init-from, or move the folder away to start anew")
        new = start_from(model, init_from)
        meta = Path(init_from) / "config.json"
        folder.mkdir(parents=True, exist_ok=True)
        recorded.write_text(json.dumps({"from": str(init_from), "new": new, "trained_by": json.loads(
            meta.read_text()).get("trained_by") if meta.is_file() else None}) + "\n")
        print(f"teacher: started from {init_from}; new: {', '.join(sorted({k.rsplit('.', 1)[0] for k in new})) or '-'}")
    top = TeacherTop(model, frozen_layers(config), config.memory_dropout)
    train_items, val_items = load_split(config, "train"), load_split(config, "val")
    train_cache, val_cache = HiddenCache(config, "train"), HiddenCache(config, "val")
    tokenizer = model.tokenizer

    def make_batch(step: int, d: Dist) -> dict:
        idx, everything = step_indices(len(train_items), schedule.batch_size, step, config.seed, d)
        inputs = train_cache.batch(idx)
        captions = {int(i): tokenize(tokenizer, pick_caption(train_items[i], config.seed, step, int(i)),
                                     config.max_caption_tokens) for i in everything}
        return {**inputs,
                "tokens": pad_tokens([captions[int(i)] for i in idx], tokenizer.pad_id),
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
                        help="use this saved teacher (e.g. checkpoints/teacher) as the run's result instead of "
                             "training")
    parser.add_argument("--init-from", metavar="DIR",
                        help="start training from this saved teacher's weights (e.g. checkpoints/teacher for the "
                             "yamnet preset: its Whisper encoder and decoder; the tagger's projection starts new)")


def main(args: argparse.Namespace) -> int:
    if args.from_checkpoint:
        restore(config_from_args(args), args.from_checkpoint)
        return 0
    run(config_from_args(args), steps=args.steps, bf16=args.bf16, stop_after=args.stop_after, init_from=args.init_from)
    return 0
