"""`python -m train evaluate --model teacher|<student run name>`: caption the test split end to end (waveform in,
beam-3 caption out, exactly as the app and CLI do) and score it. Writes `results/<model>.json` (another `--split`:
`results/<split>/<model>.json`).

Metrics: BLEU-1..4, METEOR (needs Java), ROUGE-L, CIDEr-D, SBERT-sim (eacap.metrics), and event-F1: the sound
classes a caption names (the corpus's keywords) against the classes really in the scene. Also the model's
parameters and its median single-clip latency on a 10 s test scene.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from eacap.decoding import DecodingOptions
from eacap.metrics import caption_metrics, event_f1
from eacap.models import CaptionModel
from train.core import held_out
from train.core.config import PipelineConfig, add_preset_arguments, config_from_args
from train.core.data import class_keywords, load_split, run_path
from train.core.ensemble import add_reading_arguments, load_reading
from train.core.models import load_run_model
from train.core.runs import checkpoint_run, targets_decoding
from train.corpus.datasets import item_waveform


def latency(model: CaptionModel, wave: np.ndarray, options: DecodingOptions, repeats: int = 5) -> float:
    model.caption_batch([wave], options)  # warm-up
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        model.caption_batch([wave], options)
        times.append(time.perf_counter() - tic)
    return float(np.median(times))


def evaluate(config: PipelineConfig, name: str, split: str = "test", batch_size: int = 16, meteor: bool = True,
             sbert: bool = True, cross_source: bool = False, repeat_sounds: bool = False,
             reading: argparse.Namespace | None = None) -> dict:
    """Caption `split` with the model and score it; `repeat_sounds` turns eacap's `no_repeat_sounds` rule off (the
    options used are recorded in the results file); `reading`: how the model is read (`add_reading_arguments`:
    its tag tokens alone, or together with another model)."""
    if reading is None:
        model, suffix = load_run_model(config, name), ""
    else:
        model, suffix = load_reading(config, name, reading)
    source, name = name, (checkpoint_run(name) or name) + suffix
    items = load_split(config, split)
    options = DecodingOptions(config.eval_beam, config.eval_max_length, no_repeat_sounds=not repeat_sounds)
    tic = time.time()
    captions = model.caption_many((item_waveform(item) for item in items), options, batch_size=batch_size)
    predictions = {item.audio_id: caption.text for item, caption in zip(items, captions)}
    decode_seconds = time.time() - tic
    references = {item.audio_id: list(item.captions) for item in items}
    scores = caption_metrics(predictions, references, meteor=meteor, sbert=sbert)
    events = event_f1(predictions, {item.audio_id: set(item.events) for item in items}, class_keywords(config))
    ten_second = max(items, key=lambda item: item.duration or 0.0)
    result = {
        "model": name, "source": source, "role": model.role, "preset": config.name, "seed": config.seed, "split": split,
        "clips": len(items), "metrics": {k: v for k, v in scores.items() if k != "notes"},
        "event_f1": {k: events[k] for k in ("precision", "recall", "f1", "macro_f1")},
        "notes": scores.get("notes", []), "parameters": model.num_parameters(),
        "latency_seconds": latency(model, item_waveform(ten_second), options),
        "latency_clip_seconds": ten_second.duration, "decode_seconds": decode_seconds, "options": options.__dict__,
        "kd_targets_decoding": targets_decoding(config, source) if model.role == "student" else None,
        "audio_only_scenes": config.audio_only_scenes,  # the audio-only pool a student run could draw from
        "examples": [{"audio_id": i.audio_id, "prediction": predictions[i.audio_id], "reference": i.captions[0]}
                     for i in items[:8]],
    }
    # Other splits than the test split go in a folder of their own: the report's tables are of the test split.
    out = run_path(config, "results", *([] if split == "test" else [split]), f"{name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    m = result["metrics"]
    print(f"{name}: CIDEr-D {m['cider_d']:.3f}  BLEU-4 {m['bleu_4']:.3f}  ROUGE-L {m['rouge_l']:.3f}  "
          f"SBERT {m.get('sbert_sim', float('nan')):.3f}  event-F1 {result['event_f1']['f1']:.3f}  -> {out}")
    if cross_source and (held_out.HELD_OUT_BANK / "manifest.csv").is_file() and sbert:
        # The measure that matters, beside the in-corpus one: the same model on the held-out packages.
        held_out.score(config, source, model, options, tag=suffix)
    elif cross_source:
        print(f"{name}: cross-source test skipped: no held-out bank at {held_out.HELD_OUT_BANK} "
              f"(`python -m train soundbank --held-out` builds it)")
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_preset_arguments(parser)
    parser.add_argument("--model", required=True,
                        help="'teacher', a student run name (folder under students/) or a checkpoint folder")
    parser.add_argument("--split", default="test", help="split to score (default: test)")
    parser.add_argument("--no-meteor", action="store_true", help="skip METEOR (saves the ~10 s JVM start)")
    parser.add_argument("--no-sbert", action="store_true", help="skip SBERT-sim")
    parser.add_argument("--no-cross-source", action="store_true",
                        help="skip the cross-source test (`train realworld`), run after the split when the held-out "
                             "bank exists")
    parser.add_argument("--repeat-sounds", action="store_true",
                        help="let captions name a sound twice (turns off eacap's no_repeat_sounds rule)")
    add_reading_arguments(parser)


def main(args: argparse.Namespace) -> int:
    evaluate(config_from_args(args), args.model, args.split, meteor=not args.no_meteor, sbert=not args.no_sbert,
             cross_source=not args.no_cross_source, repeat_sounds=args.repeat_sounds, reading=args)
    return 0
