"""`python -m train realworld`: the cross-source test (`train/core/held_out.py`) for each `--model`: caption and score
recordings from whole packages never used in training, and write `results/realworld_<model>.json`.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from eacap.decoding import DecodingOptions
from train.core.config import add_preset_arguments, config_from_args
from train.core.ensemble import add_reading_arguments, load_reading
from train.core.held_out import HELD_OUT_BANK, build_items, paired, score


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_preset_arguments(parser)
    parser.add_argument("--model", action="append",
                        help="'teacher', a student run name or a checkpoint folder (repeatable)")
    parser.add_argument("--paired", nargs=2, type=Path, metavar=("A.json", "B.json"),
                        help="compare two results files of this stage clip by clip (McNemar) instead of captioning")
    parser.add_argument("--bank", type=Path, default=HELD_OUT_BANK, help="held-out sound bank (default %(default)s)")
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--no-repeat-ngram", type=int, default=None,
                        help="no_repeat_ngram_size for decoding (default: eacap's default)")
    parser.add_argument("--repeat-sounds", action="store_true",
                        help="let captions name a sound twice (turns off eacap's no_repeat_sounds rule)")
    parser.add_argument("--tag", default="", help="suffix of the results file, e.g. the decoding setting")
    add_reading_arguments(parser)


def main(args: argparse.Namespace) -> int:
    if args.paired:
        a, b = (json.loads(path.read_text()) for path in args.paired)
        result = paired(a, b)
        print(f"names every sound, clip by clip over {result['clips']} clips: only A ({args.paired[0]}) "
              f"{result['only_a']}, only B ({args.paired[1]}) {result['only_b']}, both {result['both']}, neither "
              f"{result['neither']}; exact McNemar p = {result['p_value']:.3f}")
        return 0
    if not args.model:
        raise SystemExit("realworld: give --model (one or more) or --paired A.json B.json")
    config = config_from_args(args)
    items = build_items(args.bank)
    options = replace(DecodingOptions(beam_size=args.beam_size), no_repeat_sounds=not args.repeat_sounds)
    if args.no_repeat_ngram is not None:
        options = replace(options, no_repeat_ngram_size=args.no_repeat_ngram)
    for name in args.model:
        model, reading = load_reading(config, name, args)
        score(config, name, model, options, args.bank, args.tag + reading, items)
    return 0
