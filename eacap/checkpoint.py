"""Checkpoint folders: save and load a `CaptionModel` with its tokenizer, locally or from the Hugging Face Hub.

A checkpoint is a folder (Hugging Face style, so the same folder can be pushed to the Hub as a model repo):
- `config.json`: `{"format": "eacap", "format_version": 1, "model": {...architecture...}, ...}`, and the keywords of
  the sounds the model was trained to name (`"sound_keywords"`: {class: [word, ...]}, used by decoding)
- `model.safetensors`: the weights (safetensors only: nothing is ever unpickled)
- `tokenizer.json`: the word-level tokenizer (Hugging Face `tokenizers` format)
- `README.md`: the model card
Every way a checkpoint can be broken gives a `CheckpointError` that names the file or id and says what to do.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .devices import DeviceError, resolve_device
from .models import CaptionModel, ModelConfig
from .sounds import check_keywords
from .tokenizer import CaptionTokenizer

FORMAT = "eacap"
FORMAT_VERSION = 1
CONFIG, WEIGHTS, TOKENIZER, CARD = "config.json", "model.safetensors", "tokenizer.json", "README.md"
REQUIRED_FILES = (CONFIG, WEIGHTS, TOKENIZER)


class CheckpointError(ValueError):
    """A checkpoint cannot be found or loaded; the message names the file or id and the fix."""


def save_checkpoint(model: CaptionModel, folder: str | Path, card: str | None = None, extra: dict | None = None,
                    half: bool = False) -> Path:
    """Write `model` (with its tokenizer) as a checkpoint folder; `extra` goes into config.json (e.g. metrics).

    `half` stores floating-point weights as float16 (half the size; `load_model` casts them back to float32)."""
    if model.tokenizer is None:
        raise CheckpointError("cannot save a model without its tokenizer: attach one (model.tokenizer = ...)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": model.config.to_dict(), **(extra or {})}
    if model.sound_keywords is not None:
        config["sound_keywords"] = model.sound_keywords
    # Write to temporary names first, then rename: an interrupted save never leaves a mixed checkpoint.
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        config["weights_dtype"] = "float16"
    save_file(state, folder / (WEIGHTS + ".tmp"), metadata={"format": FORMAT})
    model.tokenizer.save(folder / (TOKENIZER + ".tmp"))
    (folder / (CONFIG + ".tmp")).write_text(json.dumps(config, indent=2) + "\n")
    for name in (WEIGHTS, TOKENIZER, CONFIG):
        os.replace(folder / (name + ".tmp"), folder / name)
    (folder / CARD).write_text(card if card is not None else default_card(model, folder.name))
    return folder


def default_card(model: CaptionModel, name: str) -> str:
    c = model.config
    return (f"# {name}\n\neacap {c.role} captioning model: {c.encoder.kind} encoder, {c.decoder.layers}-layer "
            f"d{c.decoder.width} Transformer decoder, {model.num_parameters():,} parameters, "
            f"vocabulary of {c.decoder.vocab_size} words.\n\nLoad it with `eacap.load_model(\"{name}\")`.\n")


def resolve(name_or_path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """A local checkpoint folder, or the local snapshot of a Hub repo id (downloaded unless HF_HUB_OFFLINE=1)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    name = str(name_or_path)
    if path.exists():
        raise CheckpointError(f"{name} is a file, not a checkpoint folder: pass the folder that holds {CONFIG}")
    parts = name.split("/")
    if len(parts) != 2 or not all(parts) or name.startswith((".", "~")):
        raise CheckpointError(f"no checkpoint folder at {name!r}, and it is not a Hub id of the form 'owner/name': "
                              "check the path, or train one with `python -m train all`")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(name, allow_patterns=[*REQUIRED_FILES, CARD], cache_dir=cache_dir))
    except RepositoryNotFoundError as error:
        raise CheckpointError(f"the Hub has no model repo {name!r} (or it is private): check the id") from error
    except LocalEntryNotFoundError as error:
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
        hint = ("offline mode is on (HF_HUB_OFFLINE=1, eacap's default): set HF_HUB_OFFLINE=0 to download it"
                if offline else "the Hub could not be reached: check the network, or download it where you can")
        raise CheckpointError(f"Hub model {name!r} is not in the local cache and {hint}") from error
    except HfHubHTTPError as error:
        raise CheckpointError(f"could not download Hub model {name!r}: {error}") from error


def load_model(name_or_path: str | Path, device: str | torch.device = "cpu",
               cache_dir: str | Path | None = None, half: bool = False) -> CaptionModel:
    """Load a checkpoint folder or Hub repo id into an eval-mode `CaptionModel` with its tokenizer attached.

    `device`: "cpu" (default), "cuda", "cuda:N" or "auto" (the GPU when there is one). `half` runs the encoder and
    the decoder in float16 on a GPU (the front-end and the decoder's scores stay float32); a CPU runs float16
    slower than float32, so there it is refused.
    """
    try:
        target = resolve_device(device)
    except DeviceError as error:
        raise CheckpointError(str(error)) from None
    if half and target.type != "cuda":
        raise CheckpointError("half precision needs a GPU (device cuda): on a CPU float16 is slower than float32")
    folder = resolve(name_or_path, cache_dir)
    for file in REQUIRED_FILES:
        if not (folder / file).is_file():
            raise CheckpointError(f"{folder / file} is missing: a checkpoint needs {', '.join(REQUIRED_FILES)}")
    config = read_config(folder / CONFIG)
    try:
        tokenizer = CaptionTokenizer.from_file(folder / TOKENIZER)
    except Exception as error:  # tokenizers raises bare Exceptions for malformed JSON
        raise CheckpointError(f"{folder / TOKENIZER} is not a valid tokenizer file ({error}): "
                              "re-export the checkpoint") from error
    if tokenizer.vocab_size != config.decoder.vocab_size:
        raise CheckpointError(f"{folder / TOKENIZER} has {tokenizer.vocab_size} words but {folder / CONFIG} says "
                              f"{config.decoder.vocab_size}: the files come from different models")
    try:
        state = load_file(folder / WEIGHTS, device="cpu")
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{folder / WEIGHTS} is truncated or corrupt ({error}): "
                              "re-download or re-export it") from error
    model = CaptionModel(config, tokenizer, source=str(name_or_path))
    check_state(model, state, folder / WEIGHTS)
    model.load_state_dict(state)  # copies into the model's float32 parameters, also from float16 weights
    model.sound_keywords = read_sound_keywords(folder / CONFIG)
    model = model.to(target).eval()
    return model.half_precision() if half else model


def _config_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is not valid JSON ({error}): re-export the checkpoint") from error
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an eacap checkpoint config (no \"format\": \"{FORMAT}\")")
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {data.get('format_version')!r}; this eacap reads version "
                              f"{FORMAT_VERSION}: upgrade eacap or re-export the checkpoint")
    return data


def read_config(path: Path) -> ModelConfig:
    data = _config_json(path)
    try:
        return ModelConfig.from_dict(data["model"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path} has an invalid model description ({type(error).__name__}: {error})") from error


def read_sound_keywords(path: Path) -> dict[str, list[str]] | None:
    """The sound keywords in a checkpoint's config.json, or None when it has none (an older export)."""
    keywords = _config_json(path).get("sound_keywords")
    try:
        return None if keywords is None else check_keywords(keywords)
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}; fix or remove \"sound_keywords\" "
                              "(re-export the checkpoint)") from error


def check_state(model: CaptionModel, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        details = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                details.append(f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}")
        raise CheckpointError(f"{path} does not match {path.parent / CONFIG} ({'; '.join(details)}): "
                              "the files come from different models; re-export the checkpoint")
