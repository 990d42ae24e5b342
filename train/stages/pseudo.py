"""`python -m train pseudo`: the trained teacher's knowledge, cached per clip as the students' KD targets.

For the captioned train split and the audio-only pool:
- `pseudo/<split>.jsonl`: the teacher's beam-3 caption per clip (sequence-level KD targets);
- `pseudo/<split>_embedding.npy`: the teacher's clip embedding (time-mean of its encoder frames, with a tagger
  averaged with the time-mean of its tag tokens: `eacap.models.yamnet.Memory.embedding`; for encoder KD);
- `pseudo/<split>_decoding.json`: the decoding options the captions were made with (eacap's defaults);
and for the train split, `pseudo/train_topk.npz`: the teacher's top-k next-token distribution at every position
of every reference caption under teacher forcing (token-level KD targets; `--no-token-targets` skips them).
The students read them back with `train/core/kd_targets.py`.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from eacap.decoding import DecodingOptions
from train.core.config import PipelineConfig, add_preset_arguments, config_from_args
from train.core.data import load_split, pad_tokens, run_path, tokenize
from train.core.models import frozen_layers, load_run_model, load_trained_teacher
from train.core.teacher_cache import HiddenCache, TeacherTop, cached_captions

SPLITS = ("train", "audio_only")


def pseudo_captions(config: PipelineConfig, top: TeacherTop, split: str, partner: TeacherTop | None = None) -> None:
    out = run_path(config, "pseudo", f"{split}.jsonl")
    if out.is_file():
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    items, cache = load_split(config, split), HiddenCache(config, split)
    tic = time.time()
    indices = np.arange(len(items))
    options = DecodingOptions(config.pseudo_beam, config.eval_max_length)  # eacap's default rules: what users get
    tokens, scores, embeddings = cached_captions(top, cache, indices, options, partner=partner,
                                                 weight=config.ensemble_weight)
    np.save(run_path(config, "pseudo", f"{split}_embedding.npy"), embeddings.astype(np.float32))
    with open(out.with_suffix(".tmp"), "w") as handle:
        for item, toks, score in zip(items, tokens, scores):
            handle.write(json.dumps({"audio_id": item.audio_id, "caption": top.model.tokenizer.decode(toks),
                                     "score": score}) + "\n")
    out.with_suffix(".tmp").replace(out)
    # The decoding the seq-KD targets came from, for the students' results files: a change of eacap's defaults
    # must not mix targets of two kinds in one comparison unnoticed.
    run_path(config, "pseudo", f"{split}_decoding.json").write_text(json.dumps(options.__dict__) + "\n")
    print(f"pseudo {split}: {len(items)} captions in {time.time() - tic:.0f} s")


@torch.inference_mode()
def token_distributions(config: PipelineConfig, top: TeacherTop, batch_size: int = 32) -> None:
    out = run_path(config, "pseudo", "train_topk.npz")
    if out.is_file():
        return
    items, cache = load_split(config, "train"), HiddenCache(config, "train")
    tokenizer, k, length = top.model.tokenizer, config.token_kd_topk, config.max_caption_tokens - 1
    n_captions = max(len(item.captions) for item in items)
    ids = np.zeros((len(items), n_captions, length, k), dtype=np.int32)
    probs = np.zeros((len(items), n_captions, length, k), dtype=np.float16)
    for start in range(0, len(items), batch_size):
        chunk = np.arange(start, min(start + batch_size, len(items)))
        memory, memory_lengths = top.memory(cache.batch(chunk)).joined
        for c in range(n_captions):
            captions = [tokenize(tokenizer, items[i].captions[c % len(items[i].captions)], config.max_caption_tokens)
                        for i in chunk]
            tokens = pad_tokens(captions, tokenizer.pad_id)
            logits = top.model.decoder(tokens[:, :-1], memory, memory_lengths)
            top_p = logits.float().softmax(-1).topk(k, dim=-1)
            n = logits.shape[1]
            ids[chunk, c, :n] = top_p.indices.numpy()
            probs[chunk, c, :n] = top_p.values.numpy()
    np.savez(out.with_suffix(".tmp.npz"), ids=ids, probs=probs)
    out.with_suffix(".tmp.npz").replace(out)


def ensemble_partner(config: PipelineConfig, top: TeacherTop) -> TeacherTop | None:
    """The preset's `ensemble_with` model over the same cache as `top`, or None. It must read the cached encoder
    layers as they are: the same weights below `top.frozen`, to float16 (the precision of exported checkpoints and
    of the cache)."""
    if not config.ensemble_with:
        return None
    model = load_run_model(config, config.ensemble_with)
    if model.tokenizer.tokenizer.get_vocab() != top.model.tokenizer.tokenizer.get_vocab():
        raise SystemExit(f"{config.ensemble_with}: another tokenizer than this preset's teacher; an ensemble "
                         "averages next-token scores, so both need the same")
    def cached(key: str) -> bool:  # the encoder's input layers and its layers below top.frozen
        parts = key.split(".")
        return parts[0] != "layer_norm" and not (parts[0] == "layers" and int(parts[1]) >= top.frozen)

    ours, theirs = top.model.encoder.state_dict(), model.encoder.state_dict()
    if any(k not in theirs or not torch.equal(v.half(), theirs[k].half()) for k, v in ours.items() if cached(k)):
        raise SystemExit(f"{config.ensemble_with}: its encoder's cached layers differ from this preset's teacher's, "
                         "so it cannot read this preset's cache")
    return TeacherTop(model, top.frozen).eval()


def run(config: PipelineConfig, token_targets: bool = True) -> None:
    model = load_trained_teacher(config)
    # memory_dropout 1.0: a teacher that never reads the encoder's frames, in training or after (yamnet_tags)
    top = TeacherTop(model, frozen_layers(config), config.memory_dropout).eval()
    partner = ensemble_partner(config, top)
    if partner is not None and token_targets:
        raise SystemExit("pseudo: an ensemble teacher gives no token distributions; add --no-token-targets")
    for split in SPLITS:
        pseudo_captions(config, top, split, partner)
    if token_targets:
        token_distributions(config, top)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_preset_arguments(parser)
    parser.add_argument("--no-token-targets", action="store_true",
                        help="skip the teacher's top-k token distributions (train_topk.npz): only token-KD students "
                             "need them, and they take as long as the pseudo captions")


def main(args: argparse.Namespace) -> int:
    run(config_from_args(args), token_targets=not args.no_token_targets)
    return 0
