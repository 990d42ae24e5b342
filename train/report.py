"""`python -m train report`: the results table (markdown) from every results JSON of a pipeline run."""
from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from train.config import PipelineConfig, add_preset_arguments, config_from_args
from train.data import run_path

COLUMNS = [("BLEU-4", "bleu_4"), ("METEOR", "meteor"), ("ROUGE-L", "rouge_l"), ("CIDEr-D", "cider_d"),
           ("SBERT-sim", "sbert_sim")]
ROWS = [  # (row label, run-name pattern without the seed)
    ("teacher", "teacher"),
    ("student, supervised only", "none"),
    ("+ seq-KD", "seq"),
    ("+ token-KD", "token"),
    ("+ seq-KD + enc-KD MSE", "seq_mse"),
    ("+ seq-KD + enc-KD contrastive", "seq_contrastive"),
    ("+ contrastive + audio-only data (shipped)", "seq_contrastive_audio"),
    ("10% labels, seq-KD + MSE", "seq_mse_10pct"),
    ("10% labels, seq-KD + contrastive", "seq_contrastive_10pct"),
    ("25% labels, seq-KD + MSE", "seq_mse_25pct"),
    ("25% labels, seq-KD + contrastive", "seq_contrastive_25pct"),
]


def _fmt(values: list[float]) -> str:
    if not values or any(v is None for v in values):
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def table(results: list[dict]) -> str:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        groups[re.sub(r"_seed\d+$", "", r["model"])].append(r)
    header = ["model", *[c for c, _ in COLUMNS], "event-F1", "params", "latency (ms)", "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    known = {pattern for _, pattern in ROWS}
    rows = ROWS + [(name, name) for name in sorted(groups) if name not in known]
    for label, pattern in rows:
        runs = groups.get(pattern)
        if not runs:
            continue
        cells = [_fmt([r["metrics"].get(key) for r in runs]) for _, key in COLUMNS]
        cells.append(_fmt([r["event_f1"]["f1"] for r in runs]))
        cells.append(f"{runs[0]['parameters'] / 1e6:.2f} M")
        cells.append(f"{np.median([r['latency_seconds'] * 1000 for r in runs]):.0f}")
        cells.append(str(len(runs)))
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(lines)


def real_sounds_section(config: PipelineConfig) -> list[str]:
    path = run_path(config, "results", "real_sounds.json")
    if not path.is_file():
        return []
    rows = json.loads(path.read_text())
    lines = ["## Real sounds", "",
             "Recordings never heard in training (`python -m train real-sounds`): the app's examples, mixed from "
             "recordings of the corpus test split only, and speech recorded with TTS engines. Good and bad alike.", "",
             "| clip | what it is | teacher | student | teacher / student ms |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['file']} | {r['source']} | {r['teacher']} | {r['student']} | "
                     f"{r['teacher_ms']:.0f} / {r['student_ms']:.0f} |")
    return [*lines, ""]


def report(config: PipelineConfig, out: Path | None = None) -> Path:
    paths = sorted(p for p in run_path(config, "results").glob("*.json") if p.name != "real_sounds.json")
    if not paths:
        raise FileNotFoundError(f"no results in {run_path(config, 'results')}: run `python -m train evaluate` first")
    results = [json.loads(p.read_text()) for p in paths]
    notes = sorted({note for r in results for note in r.get("notes", [])})
    text = "\n".join([
        f"# Results ({config.name} preset)", "",
        f"Test split of the scene corpus ({results[0]['clips']} clips), beam {config.eval_beam}; mean ± std over seeds "
        "where several were run. Latency: one 10 s clip, batch 1, timed by `train evaluate` on whatever else the machine was running then (so not comparable across rows run at different times: speed ratios come from `python -m eacap.bench`, which times both models in one run). Regenerate with "
        f"`python -m train report --preset {config.name}`.", "", table(results), "",
        *[f"- {note}" for note in notes], "", *real_sounds_section(config)])
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
