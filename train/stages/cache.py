"""`python -m train cache`: what is expensive and fixed, computed once.

- the word tokenizer, from the captioned train set (`tokenizer.json`);
- the teacher's initial encoder: Whisper tiny.en converted (`teacher-init`), or random weights in the tiny preset;
- the outputs of the teacher encoder's frozen lower layers for every scene of every split, as float16 memmaps
  (`cache/<split>.f16` + `cache/<split>.json`). Training the teacher's top layers and decoder then costs a
  fraction of running the whole encoder each step. With the preset's `teacher_augment` share, that share of the
  train scenes is cached as a re-recorded copy (`train/core/augment.py`: another EQ, room, noise, speed and gain,
  drawn per scene), so a teacher trained on cached outputs still hears more than the corpus's recording chains;
- for a teacher with a tagger (`teacher_tagger`), YAMNet's logits of every 0.96 s patch of every scene
  (`cache/<split>.tags.f16` + `.tags.json`), after the encoder's caches.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from tqdm import tqdm

from eacap.features import WhisperLogMel
from eacap.models import WhisperEncoder
from eacap.models.yamnet import AudioTagger, TaggerConfig
from train.core.config import PipelineConfig, add_preset_arguments, config_from_args
from train.core.data import CACHE_AUGMENT_PURPOSE, load_split, pad_waveforms, rerecorded
from train.core.models import build_tokenizer, frozen_layers, initial_tagger, initial_teacher_encoder
from train.core.teacher_cache import cache_path
from train.corpus.datasets import item_waveform

SPLITS = ("train", "val", "test", "audio_only")


@torch.inference_mode()
def fill_cache(config: PipelineConfig, split: str, part: str, width: int, t_max_of, compute, batch_size: int = 16
               ) -> None:
    """One cached array of a split (`teacher_cache.cache_path(config, split, part)`): `compute(waveforms, lengths)`
    -> (float [B, T, width], valid lengths [B]) for each batch of the split's clips, in order; `t_max_of(seconds)`
    is the rows' length for the split's longest clip. Resumable: a killed run continues where it stopped."""
    meta_path = cache_path(config, split, part)
    if meta_path.is_file():
        return
    items = load_split(config, split)
    share = config.teacher_augment if split == "train" else 0.0  # validation and test stay as recorded
    partial = meta_path.with_suffix(".partial.json")
    data_path = meta_path.with_suffix(".f16")
    data_path.parent.mkdir(parents=True, exist_ok=True)
    # The memmap is filled in order and `partial` records how far.
    done = json.loads(partial.read_text())["done"] if partial.is_file() and data_path.is_file() else 0
    lengths = json.loads(partial.read_text())["lengths"] if done else []
    # Scenes are at most 10 s, but a user's data set may hold up to 30 s: size the cache for the longest item.
    longest = max((item.duration or 30.0) for item in items) if items else 0.0
    t_max = t_max_of(longest)
    data = np.memmap(data_path, dtype=np.float16, mode="r+" if done else "w+", shape=(len(items), t_max, width))
    tic = time.time()
    name = f"cache {split}" + (f" {part}" if part else "")
    for start in tqdm(range(done, len(items), batch_size), desc=name, initial=done // batch_size,
                      total=(len(items) + batch_size - 1) // batch_size, mininterval=2.0):
        chunk = items[start: start + batch_size]
        w, n = pad_waveforms(rerecorded([item_waveform(item) for item in chunk], range(start, start + len(chunk)),
                                        share, config.seed, 0, CACHE_AUGMENT_PURPOSE))
        rows, out_lengths = compute(w, n)
        t = min(rows.shape[1], t_max)
        # Rows past a clip's end hold whatever the padding became: store zeros, so a clip's rows never depend on
        # which clips shared its batch.
        rows = rows.masked_fill(torch.arange(rows.shape[1])[None, :, None] >= out_lengths[:, None, None], 0.0)
        data[start: start + len(chunk)] = 0
        data[start: start + len(chunk), :t] = rows[:, :t].numpy().astype(np.float16)
        lengths += [min(int(x), t_max) for x in out_lengths]
        data.flush()
        partial.write_text(json.dumps({"done": start + len(chunk), "lengths": lengths}))
    meta = {"ids": [item.audio_id for item in items], "lengths": lengths, "shape": [len(items), t_max, width],
            "rerecorded_share": share, "seconds": time.time() - tic}
    meta_path.write_text(json.dumps(meta))
    partial.unlink(missing_ok=True)
    print(f"{name}: {len(items)} clips, {data_path.stat().st_size / 1e6:.0f} MB, {meta['seconds']:.0f} s")


def cache_split(config: PipelineConfig, encoder: WhisperEncoder, split: str) -> None:
    """The outputs of the encoder's frozen layers."""
    frontend, k = WhisperLogMel(), frozen_layers(config)

    def compute(w, n):
        feats, frames = frontend(w, n)
        out_lengths = encoder.output_lengths(frames)
        return encoder.run_layers(encoder.embed(feats, frames), out_lengths, end=k), out_lengths

    fill_cache(config, split, "", encoder.config.width,
               lambda seconds: min(encoder.config.max_positions, int(np.ceil(seconds * 16000 / 160 / 2)) + 1), compute)


def cache_tags(config: PipelineConfig, tagger: AudioTagger, split: str) -> None:
    """YAMNet's logits of every patch (the tagger's frozen part)."""
    c = tagger.config
    fill_cache(config, split, "tags", c.classes,
               lambda seconds: int(tagger.patch_counts(torch.tensor([int(seconds * 100)]))[0]),
               tagger.scores)


def run(config: PipelineConfig, splits: tuple[str, ...] = SPLITS) -> None:
    build_tokenizer(config)
    encoder = initial_teacher_encoder(config).eval()
    for split in splits:
        cache_split(config, encoder, split)
    if config.teacher_tagger:
        tagger = AudioTagger(TaggerConfig()).eval()
        tagger.yamnet.load_state_dict(initial_tagger(config).state_dict())
        for split in splits:
            cache_tags(config, tagger, split)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_preset_arguments(parser)
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS),
                        help="cache only these splits (the teacher stage needs train and val; pseudo adds audio_only)")


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    run(config_from_args(args), tuple(args.splits))
    return 0
