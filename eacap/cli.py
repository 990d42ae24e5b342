"""Command line: `python -m eacap caption FILE...`, `python -m eacap compare FILE` and `python -m eacap stream`.

Exit codes: 0 all went well; 1 some input could not be captioned (the others still were); 2 the command itself
cannot run (bad option, missing or broken checkpoint). Errors are one line naming the input and the fix.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from . import graphs
from .audio import AudioError, load_audio, open_stream
from .checkpoint import CheckpointError, load_model
from .decoding import DecodingOptions
from .live import HOP_SECONDS as LIVE_HOP
from .live import PCM_FORMATS, LiveCaptioner, byte_stream_chunks
from .live import WINDOW_SECONDS as LIVE_WINDOW
from .requests import BEAM_SIZE, MAX_LENGTH, RequestError, decoding_request
from .timeline import FORMATS, WINDOW_SECONDS, caption_timeline, clock_time, render

# The shipped checkpoints live next to the package (the repository root), not in the working directory, so the
# CLI finds them wherever it is run from; EACAP_CHECKPOINTS points elsewhere, as it does for the app.
CHECKPOINTS = Path(os.environ.get("EACAP_CHECKPOINTS") or Path(__file__).resolve().parent.parent / "checkpoints")
EXIT_INPUT, EXIT_USAGE = 1, 2


class UsageError(Exception):
    """The command cannot run at all; the message says what to change."""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly as Unix tools do. Point stdout at devnull so the
        # interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eacap", description="Efficient audio captioning.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    caption = commands.add_parser("caption", help="caption audio files",
                                  description="Caption audio files: one line per file, in the order given.")
    caption.add_argument("files", nargs="+", metavar="FILE",
                         help="WAV, FLAC, OGG or MP3 files (the first 30 s of each)")
    caption.add_argument("--model", help=f"checkpoint folder or Hub id (default: {CHECKPOINTS / 'student'})")
    caption.add_argument("--batch-size", type=positive, default=8, help="files captioned together (default 8)")
    add_decoding_options(caption)
    caption.add_argument("--json", action="store_true", help="one JSON object per line instead of FILE<TAB>CAPTION")
    timeline = caption.add_argument_group(
        "timeline", "caption the whole recording (up to 1 hour) window by window, as segments with start/end times")
    timeline.add_argument("--timeline", action="store_true", help="caption every window, not only the first 30 s")
    timeline.add_argument("--format", choices=FORMATS, default=None,
                          help="timeline output: text (START-END<TAB>caption), json (a line per segment), srt or vtt "
                               "(default text; --json means json)")
    timeline.add_argument("--window", type=float, default=WINDOW_SECONDS,
                          help=f"seconds each caption hears (default {WINDOW_SECONDS:g})")
    timeline.add_argument("--hop", type=float, default=None, help="seconds between windows (default half the window)")
    timeline.add_argument("--out", metavar="DIR", help="write one timeline file per input into DIR (FILE.srt, ...)")
    caption.set_defaults(run=run_caption)

    compare = commands.add_parser("compare", help="caption one file with the teacher and the student and compare them",
                                  description="Caption one file with both models: captions, timings, speed-up and "
                                              "how close the student's encoder is to the teacher's.")
    compare.add_argument("file", metavar="FILE")
    compare.add_argument("--teacher", help=f"teacher checkpoint folder or Hub id (default: {CHECKPOINTS / 'teacher'})")
    compare.add_argument("--student", help=f"student checkpoint folder or Hub id (default: {CHECKPOINTS / 'student'})")
    add_decoding_options(compare)
    compare.add_argument("--json", action="store_true", help="print one JSON object")
    compare.add_argument("--plots", metavar="DIR", help="save timing.png, similarity.png and logmel.png in DIR")
    compare.set_defaults(run=run_compare)

    stream = commands.add_parser(
        "stream", help="caption a live stream from stdin (raw 16 kHz PCM or an audio file) as it plays",
        description="Caption a live stream: the last --window seconds every --hop seconds, one line per caption that "
                    "changes. `ffmpeg -i SOURCE -f s16le -ac 1 -ar 16000 - | python -m eacap stream` captions any "
                    "source ffmpeg can read.")
    stream.add_argument("--input", default="-", metavar="FILE",
                        help="an audio file to caption as if it were playing, or - for stdin (default)")
    stream.add_argument("--model", action="append", metavar="DIR|HUB_ID",
                        help="a model to caption with (repeat for more; default: the student)")
    stream.add_argument("--both", action="store_true", help="caption with the default teacher and student")
    stream.add_argument("--window", type=float, default=LIVE_WINDOW, help=f"seconds each caption hears "
                        f"(default {LIVE_WINDOW:g})")
    stream.add_argument("--hop", type=float, default=LIVE_HOP, help=f"seconds between captions (default {LIVE_HOP:g})")
    stream.add_argument("--sample-format", choices=sorted(PCM_FORMATS), default="s16le",
                        help="raw PCM on stdin: 16-bit or 32-bit float little-endian, mono, 16 kHz (default s16le)")
    stream.add_argument("--every", action="store_true", help="print every caption, not only those that change")
    stream.add_argument("--json", action="store_true", help="one JSON object per caption instead of a line")
    add_decoding_options(stream)
    stream.set_defaults(run=run_stream)
    return parser


def add_device_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", type=str.lower,
                        help="where the models run: auto (a GPU when there is one), cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--half", action="store_true",
                        help="float16 encoder and decoder on a GPU (faster; captions can differ slightly)")


def add_decoding_options(parser: argparse.ArgumentParser) -> None:
    add_device_options(parser)
    defaults = DecodingOptions()
    parser.add_argument("--beam-size", type=positive, default=defaults.beam_size,
                        help=f"beam width, {BEAM_SIZE[0]}-{BEAM_SIZE[1]}; 1 is greedy (default {defaults.beam_size})")
    parser.add_argument("--max-length", type=positive, default=defaults.max_length,
                        help=f"longest caption in tokens, </s> included, {MAX_LENGTH[0]}-{MAX_LENGTH[1]} "
                             f"(default {defaults.max_length})")


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# -- caption ------------------------------------------------------------------------------------------------

def run_caption(args) -> int:
    if args.timeline:
        return run_timeline(args)
    if args.format or args.out or args.hop is not None or args.window != WINDOW_SECONDS:
        raise UsageError("--format, --window, --hop and --out describe a timeline: add --timeline")
    model = load(args.model, "student", "--model", args)
    options = decoding_options(args, model)
    failed = False
    for result in caption_files(model, args.files, options, args.batch_size):
        failed |= "error" in result
        print_result(result, args.json)
    return EXIT_INPUT if failed else 0


def caption_files(model, files: list[str], options: DecodingOptions, batch_size: int) -> Iterator[dict]:
    """One result per file, in order, as soon as its batch is captioned (`batch_size` clips per model call); a file
    that cannot be read gets an `error` entry instead. Files are read as the batches need them."""
    entries: deque[dict] = deque()

    def readable():
        for file in files:
            start = time.perf_counter()
            try:
                audio = load_audio(file)
            except AudioError as error:
                entries.append({"file": file, "error": str(error)})
                continue
            entries.append({"file": file, "load_seconds": time.perf_counter() - start, "audio": audio})
            yield audio.waveform

    for captions, seconds in model.caption_batches(readable(), options, batch_size):
        share = seconds / len(captions)  # the clips share one padded model call: each is charged an equal share
        for caption in captions:
            while "audio" not in entries[0]:
                yield entries.popleft()
            result = entries.popleft()
            audio = result.pop("audio")
            result.update(caption=caption.text, score=round(caption.score, 4), duration=round(audio.duration, 3),
                          seconds=round(result.pop("load_seconds") + share, 4), model=model.source,
                          silent=caption.silent, warnings=audio.warnings)
            yield result
    yield from entries  # files after the last readable one that could not be read


def print_result(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, ensure_ascii=False), flush=True)
        return
    if "error" in result:
        print(f"error: {result['error']}", file=sys.stderr, flush=True)
        return
    for warning in result["warnings"]:
        print(f"warning: {result['file']}: {warning}", file=sys.stderr)
    print(f"{result['file']}\t{result['caption']}", flush=True)


TIMELINE_SUFFIX = {"text": ".txt", "json": ".jsonl", "srt": ".srt", "vtt": ".vtt"}


def run_timeline(args) -> int:
    fmt = args.format or ("json" if args.json else "text")
    if fmt in ("srt", "vtt") and len(args.files) > 1 and not args.out:
        raise UsageError(f"{fmt.upper()} holds one recording: caption one file, or pass --out DIR for a file each")
    out = Path(args.out) if args.out else None
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(f"cannot create {out} ({error.strerror}): pass another --out DIR") from None
    model = load(args.model, "student", "--model", args)
    options = decoding_options(args, model)
    failed = False
    for file in args.files:
        try:
            timeline = caption_with_progress(model, file, options, args)
        except AudioError as error:
            failed = True
            print(json.dumps({"file": file, "error": str(error)}) if fmt == "json" else f"error: {error}",
                  file=sys.stdout if fmt == "json" else sys.stderr, flush=True)
            continue
        except ValueError as error:  # window/hop
            raise UsageError(f"{error}: change --window/--hop") from None
        for warning in timeline.warnings:
            print(f"warning: {file}: {warning}", file=sys.stderr)
        text = render(timeline, fmt)
        if out is not None:
            path = out / (Path(file).name + TIMELINE_SUFFIX[fmt])
            path.write_text(text, encoding="utf-8")
            print(f"{file}\t{path}\t{len(timeline.segments)} segments, {timeline.duration:.1f} s", flush=True)
        elif fmt == "text" and len(args.files) > 1:
            print("".join(f"{file}\t{line}\n" for line in text.splitlines()), end="", flush=True)
        else:
            print(text, end="", flush=True)
    return EXIT_INPUT if failed else 0


def caption_with_progress(model, file: str, options: DecodingOptions, args):
    """caption_timeline with a progress bar on stderr once a file needs more than one batch (a terminal only)."""
    from tqdm import tqdm

    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None and total > args.batch_size:
            bar = tqdm(total=total, unit="window", desc=Path(file).name, file=sys.stderr, leave=False, disable=None)
        if bar is not None:
            bar.update(done - bar.n)

    try:
        return caption_timeline(model, file, options, window=args.window, hop=args.hop, batch_size=args.batch_size,
                                progress=progress)
    finally:
        if bar is not None:
            bar.close()


# -- compare ------------------------------------------------------------------------------------------------

def run_stream(args) -> int:
    graphs.long_running()   # live captions run until stopped: compiled decoding steps pay off
    if args.both and args.model:
        raise UsageError("--both means the default teacher and student: leave out --model, or leave out --both")
    if args.both:
        models = [load(None, "teacher", "--model", args), load(None, "student", "--model", args)]
    else:
        models = [load(name, "student", "--model", args) for name in (args.model or [None])]
    options = decoding_options(args, *models)
    from_stdin = args.input == "-"
    try:
        live = LiveCaptioner(models, args.window, args.hop, options, threaded=from_stdin)
    except ValueError as error:
        raise UsageError(f"{error}: change --window/--hop") from None
    warnings: list[str] = []
    try:
        if from_stdin:
            chunks = byte_stream_chunks(sys.stdin.buffer, args.sample_format, warnings=warnings)
        else:  # a file plays through the same windows, captioned inline: every hop, none skipped
            chunks = file_chunks(args.input)
        for chunk in chunks:
            print_live(live.feed(chunk), args)
    except AudioError as error:
        print(f"error: {error}", file=sys.stderr)
        live.finish()
        return EXIT_INPUT
    finally:
        if not live.closed:
            print_live(live.finish(), args)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for name, stats in live.stats().items():
        print(f"{name}: {stats['windows']} windows captioned, {stats['skipped']} skipped, "
              f"{stats['compute_per_window'] * 1000:.0f} ms per window (real-time factor "
              f"{stats['real_time_factor']:.2f} at a {args.hop:g} s hop), mean lag {stats['mean_lag'] * 1000:.0f} ms",
              file=sys.stderr)
    return 0


def file_chunks(path: str, seconds: float = 0.25) -> Iterator:
    with open_stream(path) as stream:
        for warning in stream.warnings:
            print(f"warning: {stream.name}: {warning}", file=sys.stderr)
        start = 0.0
        while start < stream.duration:
            yield stream.read(start, min(seconds, stream.duration - start))
            start += seconds


def print_live(captions, args) -> None:
    for caption in captions:
        if not (caption.changed or args.every):
            continue
        if args.json:
            print(json.dumps(caption.to_dict(), ensure_ascii=False), flush=True)
        else:
            print(f"{clock_time(caption.end)}\t{caption.role}\t{caption.text}", flush=True)


def run_compare(args) -> int:
    from .compare import compare

    teacher = load(args.teacher, "teacher", "--teacher", args)
    student = load(args.student, "student", "--student", args)
    options = decoding_options(args, teacher, student)
    try:
        result = compare(args.file, teacher, student, options)
    except AudioError as error:
        if args.json:
            print(json.dumps({"file": args.file, "error": str(error)}, ensure_ascii=False))
        else:
            print(f"error: {error}", file=sys.stderr)
        return EXIT_INPUT
    except ValueError as error:  # a student that was not distilled from this teacher
        raise UsageError(str(error)) from None
    saved = save_plots(result, Path(args.plots)) if args.plots else []
    if args.json:
        print(json.dumps({**result.to_dict(), "plots": [str(p) for p in saved]}, ensure_ascii=False))
    else:
        print_comparison(result, saved)
    return 0


def print_comparison(result, saved: list[Path]) -> None:
    for warning in result.warnings:
        print(f"warning: {result.name}: {warning}", file=sys.stderr)
    print(f"{result.name} ({result.duration:.2f} s)")
    for run in (result.teacher, result.student):
        print(f"  {run.role:<8} {run.caption}")
    print(f"\n  {'':<8} {'params':>8} {'frontend':>9} {'encoder':>9} {'decoder':>9} {'total':>9}")
    for run in (result.teacher, result.student):
        cells = "".join(f"{run.seconds[s] * 1000:>7.1f}ms" for s in ("frontend", "encoder", "decoder", "total"))
        print(f"  {run.role:<8} {run.parameters / 1e6:>7.2f}M {cells}")
    print(f"\n  speed-up: {result.speedup:.1f}x (model stages; loading the file took "
          f"{result.teacher.seconds['load'] * 1000:.1f} ms, shared)")
    print(f"  clip cosine in the distillation space: {result.clip_cosine:.3f}")
    for path in saved:
        print(f"  saved {path}")


def save_plots(result, folder: Path) -> list[Path]:
    from . import plots

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create the plots folder {folder} ({error.strerror}): "
                         "pass another --plots DIR") from None
    figures = {"timing.png": plots.timing_figure(result), "similarity.png": plots.similarity_figure(result),
               "logmel.png": plots.logmel_figure(result)}
    paths = []
    for name, figure in figures.items():
        figure.savefig(folder / name, dpi=120)
        paths.append(folder / name)
    return paths


# -- shared -------------------------------------------------------------------------------------------------

def load(name: str | None, role: str, option: str, args=None):
    if name is None:
        default = CHECKPOINTS / role
        if not default.is_dir():
            raise UsageError(f"no {role} checkpoint at {default}: train one with `python -m train all`, "
                             f"pass {option} DIR|HUB_ID, or set EACAP_CHECKPOINTS to a folder with {role}/ in it")
        name = str(default)
    device, half = (getattr(args, "device", "cpu"), getattr(args, "half", False)) if args else ("cpu", False)
    try:
        return load_model(name, device=device, half=half)
    except CheckpointError as error:
        raise UsageError(str(error)) from None


def decoding_options(args, *models) -> DecodingOptions:
    """The request's decoding options, within the limits the app and the bench share (`eacap.requests`)."""
    try:
        return decoding_request(args.beam_size, args.max_length, *models)
    except RequestError as error:
        option = "--beam-size" if str(error).startswith("beam_size") else "--max-length"
        raise UsageError(f"{error}: change {option}") from None
