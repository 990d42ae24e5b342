"""`python -m train cache`: what is expensive and fixed, computed once.

- the word tokenizer, from the captioned train set (`tokenizer.json`);
- the teacher's initial encoder: Whisper tiny.en converted (`teacher-init`), or random weights in the tiny preset;
- the outputs of the teacher encoder's frozen lower layers for every scene of every split, as float16 memmaps
  (`cache/<split>.f16` + `cache/<split>.json`). Training the teacher's top layers and decoder then costs a
  fraction of running the whole encoder each step. With the preset's `teacher_augment` share, that share of the
  train scenes is cached as a re-recorded copy (`train.augment`: another EQ, room, noise, speed and gain, drawn
  per scene), so a teacher trained on cached outputs still hears more than the corpus's recording chains.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from eacap.models import CaptionModel, ModelConfig, WhisperEncoder
from eacap.tokenizer import CaptionTokenizer
from train.core.config import PipelineConfig, add_preset_arguments, config_from_args
from train.core.data import CACHE_AUGMENT_PURPOSE, class_keywords, load_split, pad_waveforms, rerecorded, run_path
from train.corpus.datasets import item_waveform

SPLITS = ("train", "val", "test", "audio_only")


def build_tokenizer(config: PipelineConfig) -> CaptionTokenizer:
    path = run_path(config, "tokenizer.json")
    if path.is_file():
        return CaptionTokenizer.from_file(path)
    captions = [c for item in load_split(config, "train") for c in item.captions]
    if config.tokenizer_from:
        tokenizer = CaptionTokenizer.from_file(config.tokenizer_from)
        unknown = sum(ids.count(tokenizer.unk_id) for ids in map(tokenizer.encode, captions))
        words = sum(len(c.split()) for c in captions)
        if unknown > 0.01 * words:
            raise ValueError(f"the tokenizer {config.tokenizer_from} does not know {unknown} of the {words} words of "
                             f"the {config.scenes} corpus's train captions; train one instead (no tokenizer_from)")
        source = f"{config.tokenizer_from} ({unknown} of {words} train-caption words unknown)"
    else:
        tokenizer = CaptionTokenizer.train(captions, min_count=config.tokenizer_min_count)
        source = f"{len(captions)} train captions"
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(path)
    print(f"tokenizer: {tokenizer.vocab_size} words from {source} -> {path}")
    return tokenizer


def caption_model(config: PipelineConfig, model_config: ModelConfig) -> CaptionModel:
    """A new model of this run: its tokenizer and the sound keywords of the corpus's class table attached (so its
    captions never name a sound twice and its exported checkpoint carries them)."""
    model = CaptionModel(model_config, build_tokenizer(config))
    model.sound_keywords = class_keywords(config)
    return model


def initial_teacher_encoder(config: PipelineConfig) -> WhisperEncoder:
    """The same starting encoder for every stage: saved once, so a random tiny init is reproducible too."""
    path = run_path(config, "teacher_encoder_init.safetensors")
    encoder = WhisperEncoder(config.teacher_model(8).encoder)
    if path.is_file():
        encoder.load_state_dict(load_file(path))
        return encoder
    if config.teacher_init == "whisper" and config.teacher_encoder == "tiny.en":  # the `teacher-init` stage's file
        from train.stages.teacher_init import load_whisper_encoder
        encoder = load_whisper_encoder()
    elif config.teacher_init == "whisper":
        from train.stages.teacher_init import pretrained_whisper_encoder
        encoder = pretrained_whisper_encoder(config.teacher_encoder)
    else:
        torch.manual_seed(config.seed)
        encoder = WhisperEncoder(config.teacher_model(8).encoder)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, path)
    return encoder


def frozen_layers(config: PipelineConfig) -> int:
    return config.teacher_model(8).encoder.layers - config.teacher_trainable_layers


class HiddenCache:
    """The frozen-layer outputs of one split: `hidden(i)` -> float16 [T_i, width]."""

    def __init__(self, config: PipelineConfig, split: str):
        meta_path = run_path(config, "cache", f"{split}.json")
        if not meta_path.is_file():
            raise FileNotFoundError(f"no teacher cache for split {split!r} at {meta_path}: run `python -m train cache "
                                    f"--preset {config.name}` first")
        self.meta = json.loads(meta_path.read_text())
        self.ids, self.lengths = self.meta["ids"], np.asarray(self.meta["lengths"])
        self.data = np.memmap(meta_path.with_suffix(".f16"), dtype=np.float16, mode="r", shape=tuple(self.meta["shape"]))

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = torch.as_tensor(self.lengths[indices])
        t = int(lengths.max())
        hidden = torch.from_numpy(np.ascontiguousarray(self.data[indices, :t])).float()
        return hidden, lengths


@torch.inference_mode()
def cache_split(config: PipelineConfig, encoder: WhisperEncoder, split: str, batch_size: int = 16) -> None:
    meta_path = run_path(config, "cache", f"{split}.json")
    if meta_path.is_file():
        return
    from eacap.features import WhisperLogMel

    items = load_split(config, split)
    share = config.teacher_augment if split == "train" else 0.0  # validation and test stay as recorded
    frontend, k = WhisperLogMel(), frozen_layers(config)
    max_frames = encoder.config.max_positions
    width = encoder.config.width
    partial = meta_path.with_suffix(".partial.json")
    data_path = meta_path.with_suffix(".f16")
    data_path.parent.mkdir(parents=True, exist_ok=True)
    # Resumable: the memmap is filled in order and `partial` records how far; a killed run continues there.
    done = json.loads(partial.read_text())["done"] if partial.is_file() and data_path.is_file() else 0
    lengths = json.loads(partial.read_text())["lengths"] if done else []
    # Scenes are at most 10 s, but a user's data set may hold up to 30 s: size the cache for the longest item.
    longest = max((item.duration or 30.0) for item in items) if items else 0.0
    t_max = min(max_frames, int(np.ceil(longest * 16000 / 160 / 2)) + 1)
    data = np.memmap(data_path, dtype=np.float16, mode="r+" if done else "w+", shape=(len(items), t_max, width))
    tic = time.time()
    for start in tqdm(range(done, len(items), batch_size), desc=f"cache {split}", initial=done // batch_size,
                      total=(len(items) + batch_size - 1) // batch_size, mininterval=2.0):
        chunk = items[start: start + batch_size]
        w, n = pad_waveforms(rerecorded([item_waveform(item) for item in chunk], range(start, start + len(chunk)),
                                        share, config.seed, 0, CACHE_AUGMENT_PURPOSE))
        feats, frames = frontend(w, n)
        out_lengths = encoder.output_lengths(frames)
        hidden = encoder.run_layers(encoder.embed(feats, frames), out_lengths, end=k)
        t = min(hidden.shape[1], t_max)
        # Frames past a clip's end hold whatever the padding became: store zeros, so a clip's rows never depend on
        # which clips shared its batch.
        hidden = hidden.masked_fill(torch.arange(hidden.shape[1])[None, :, None] >= out_lengths[:, None, None], 0.0)
        data[start: start + len(chunk)] = 0
        data[start: start + len(chunk), :t] = hidden[:, :t].numpy().astype(np.float16)
        lengths += [min(int(x), t_max) for x in out_lengths]
        data.flush()
        partial.write_text(json.dumps({"done": start + len(chunk), "lengths": lengths}))
    meta = {"ids": [item.audio_id for item in items], "lengths": lengths, "shape": [len(items), t_max, width],
            "frozen_layers": k, "rerecorded_share": share, "seconds": time.time() - tic}
    meta_path.write_text(json.dumps(meta))
    partial.unlink(missing_ok=True)
    print(f"cache {split}: {len(items)} clips, {data_path.stat().st_size / 1e6:.0f} MB, {meta['seconds']:.0f} s")


def run(config: PipelineConfig, splits: tuple[str, ...] = SPLITS) -> None:
    build_tokenizer(config)
    encoder = initial_teacher_encoder(config).eval()
    for split in splits:
        cache_split(config, encoder, split)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_preset_arguments(parser)
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS),
                        help="cache only these splits (the teacher stage needs train and val; pseudo adds audio_only)")


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    run(config_from_args(args), tuple(args.splits))
    return 0
