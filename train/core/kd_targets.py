"""The students' KD targets: the trained teacher's knowledge, cached per clip by `train pseudo` under `pseudo/`
(its captions, clip embeddings and token distributions, and how the captions were decoded), read back here.
"""
from __future__ import annotations

import json

import numpy as np

from train.core.config import PipelineConfig
from train.core.data import run_path


def read_pseudo(config: PipelineConfig, split: str) -> tuple[list[str], np.ndarray]:
    """The teacher's caption and clip embedding of every clip of the split (sequence- and encoder-level KD)."""
    path = run_path(config, "pseudo", f"{split}.jsonl")
    if not path.is_file():
        raise FileNotFoundError(f"no teacher pseudo captions at {path}: run `python -m train pseudo --preset "
                                f"{config.name}`")
    captions = [json.loads(line)["caption"] for line in path.read_text().splitlines()]
    return captions, np.load(run_path(config, "pseudo", f"{split}_embedding.npy"))


def read_token_targets(config: PipelineConfig) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's top-k next-token distributions on the train split's captions (ids, probs), for token-level KD."""
    path = run_path(config, "pseudo", "train_topk.npz")
    if not path.is_file():
        raise FileNotFoundError(f"no teacher token distributions at {path}: run `python -m train pseudo --preset "
                                f"{config.name}` without --no-token-targets")
    topk = np.load(path)
    return topk["ids"], topk["probs"]


def pseudo_decoding(config: PipelineConfig, split: str = "train") -> dict | None:
    """The decoding options of the split's pseudo captions (None: made before they were recorded)."""
    path = run_path(config, "pseudo", f"{split}_decoding.json")
    return json.loads(path.read_text()) if path.is_file() else None
