"""`PY -m train.stages.external_encoders.embed MODULE CLIPS.json OUT.npz [--scores]`: embed the probe's clip lists
(JSON with "train" and "test" lists of 16 kHz files) with one external encoder module, in the Python that has its
packages. `--scores`: the module's own class scores (`embed.scores`, with the class names `embed.labels`) instead
of its embeddings. Only numpy and soundfile are needed besides the module's own dependencies."""
from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

MAX_SAMPLES = 160_000  # the first 10 s, as the in-project encoders are probed


def load_module(module: str):
    """A module of this package by name, or any Python file defining `load()` by path."""
    if module.endswith(".py"):
        spec = importlib.util.spec_from_file_location(Path(module).stem, module)
        loaded = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loaded)
        return loaded
    return importlib.import_module(f"train.stages.external_encoders.{module}")


def main(module: str, clips: str, out: str, scores: bool = False) -> None:
    embed = load_module(module).load()
    extra = {"labels": np.array(embed.labels)} if scores else {}
    if scores:
        embed = embed.scores
    lists = json.loads(open(clips, encoding="utf-8").read())
    start, result = time.perf_counter(), {}
    for split in ("train", "test"):
        rows = []
        for path in lists[split]:
            audio, rate = sf.read(path, dtype="float32", frames=MAX_SAMPLES)
            if rate != 16000:
                raise SystemExit(f"{path}: {rate} Hz; the sound banks are 16 kHz, rebuild them")
            rows.append(np.asarray(embed(audio), dtype=np.float32).reshape(-1))
        result[split] = np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)
    seconds = (time.perf_counter() - start) / (len(lists["train"]) + len(lists["test"]))
    np.savez(out, seconds_per_clip=np.array(seconds), **result, **extra)


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5) or sys.argv[4:] not in ([], ["--scores"]):
        raise SystemExit(__doc__)
    main(*sys.argv[1:4], scores=sys.argv[4:] == ["--scores"])
