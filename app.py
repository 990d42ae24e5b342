"""eacap's web app: caption a sound with the teacher and the distilled student, side by side.

    python app.py            # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT change it)

UI only: every number and plot comes from `eacap.compare` and `eacap.plots`; this file picks the models,
calls them, and formats what they return. Models are loaded once at start-up from `checkpoints/` (or the
folder in `EACAP_CHECKPOINTS`), warmed up, and the example gallery is computed once per model pair.

API (gradio_client): `/caption` (one model, JSON), `/compare` (both models, JSON) and `/timeline` (both models'
timelines of the whole recording, JSON); see README.md.
"""
from __future__ import annotations

import os

# Offline by default (a Hub miss costs tens of seconds of retries on a closed network). Set before the imports
# below: huggingface_hub and gradio read them at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import logging
import re
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np

from eacap import SAMPLE_RATE, AudioError, CaptionModel, CheckpointError, DecodingOptions, load_audio, load_model, plots
from eacap.checkpoint import CONFIG, read_config
from eacap.compare import Comparison, Gallery, compare, gallery
from eacap.devices import DEVICE_VARIABLE, DeviceError, device_name, resolve_device
from eacap.timeline import Timeline, caption_timeline, clock_time

log = logging.getLogger("eacap.app")

try:  # Hugging Face's ZeroGPU: a Space's GPU is lent only inside functions its `spaces.GPU` decorates
    import spaces
except ImportError:
    spaces = None


def on_gpu(handler):
    """`handler` as a ZeroGPU task where the `spaces` package is installed; unchanged elsewhere."""
    return spaces.GPU(handler) if spaces is not None else handler


HERE = Path(__file__).resolve().parent
EXAMPLES_DIR = HERE / "examples"
AUDIO_SUFFIXES = (".flac", ".ogg", ".wav", ".mp3")
TITLE = "eacap: teacher vs. distilled student audio captioning"
# A Hub model id, "owner/name". Anything else typed into a model box must be a folder listed there:
# arbitrary server paths are refused, so a public Space cannot be used to probe its file system.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
# Models kept in memory besides the two defaults: enough to flip between a few choices, bounded so that
# users typing Hub ids cannot fill the machine's memory.
MODEL_CACHE_SIZE = 4
# One model run at a time by default: on a small CPU machine two runs at once would each time the other's
# load (and latency is what the app shows), and it bounds memory. More on bigger hardware.
CONCURRENCY = int(os.environ.get("EACAP_CONCURRENCY", "1"))
QUEUE_SIZE = int(os.environ.get("EACAP_QUEUE_SIZE", "64"))
MAX_FILE_SIZE = "200mb"  # an hour of MP3 or 16 kHz FLAC fits (the timeline captions up to an hour)
BEAM_MAX = 8
NO_AUDIO = "No audio: upload a file, record with the microphone, or pick one of the examples."

HOW_TO_READ = {  # one sentence under each plot
    "timing": "**Latency by stage.** Wall-clock time per stage for this clip (shorter is faster); decode/resample is "
              "shared by both models and is not counted in the speed-up.",
    "similarity": "**Embedding similarity.** Cosine between the student's and the teacher's encoder frames after the "
                  "distillation heads: a bright diagonal band means the student hears the same events at the same "
                  "times as the teacher; the curve below follows that agreement along the clip.",
    "logmel": "**Log-mel spectrogram.** What the student hears: time runs left to right, pitch bottom to top, brighter "
              "is louder.",
    "gallery": "**Example gallery.** Each row is the student's embedding of one example clip compared with the "
               "teacher's embedding of every example: a bright diagonal means the student's embedding is closest to "
               "the teacher's embedding of the same clip (top-1 is how often that happens).",
}
CSS = """
.caption textarea { font-size: 1.2rem !important; line-height: 1.45 !important; }
.how-to-read { color: var(--body-text-color-subdued); font-size: 0.9rem; }
.how-to-read p { margin-top: 0 !important; }
"""


class InputError(ValueError):
    """A problem with what the user chose or uploaded; shown to them as it is."""


# -- models --------------------------------------------------------------------------------------------------


@dataclass
class ModelBank:
    """The checkpoint folders on offer, the loaded models, and the per-pair example galleries.

    Folders are found once at start-up; a folder that is not a readable checkpoint is listed in `problems`
    (shown in the page), never fatal. Models load on first use and stay cached (the defaults always).
    """
    root: Path
    examples: list[Path] = field(default_factory=list)
    roles: dict[str, str] = field(default_factory=dict)       # folder name -> "teacher" | "student"
    problems: list[str] = field(default_factory=list)
    _models: OrderedDict = field(default_factory=OrderedDict)  # choice -> CaptionModel, least recently used first
    _galleries: dict = field(default_factory=dict)             # (teacher choice, student choice) -> Gallery | None
    _lock: threading.RLock = field(default_factory=threading.RLock)
    device: object = field(default_factory=lambda: resolve_device("cpu"))  # torch.device: where every model runs

    @classmethod
    def scan(cls, root: str | Path, examples: list[Path] | None = None) -> "ModelBank":
        bank = cls(Path(root).expanduser().resolve(), list(examples or []))
        try:  # a GPU when there is one, unless $EACAP_DEVICE says otherwise
            bank.device = resolve_device(os.environ.get(DEVICE_VARIABLE, "auto"))
        except DeviceError as error:
            bank.problems.append(f"{DEVICE_VARIABLE}: {error}; running on the CPU")
            bank.device = resolve_device("cpu")
        log.info("models run on %s (%s)", bank.device, device_name(bank.device))
        if not bank.root.is_dir():
            bank.problems.append(f"the checkpoints folder {bank.root} does not exist")
            return bank
        for folder in sorted(p for p in bank.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if not (folder / CONFIG).is_file():
                continue  # not a checkpoint (e.g. a cache or notes folder): nothing to report
            try:
                bank.roles[folder.name] = read_config(folder / CONFIG).role
            except CheckpointError as error:
                bank.problems.append(str(error))
        return bank

    def choices(self, role: str) -> list[str]:
        return [name for name, r in self.roles.items() if r == role]

    def default(self, role: str) -> str | None:
        """The folder named after the role if there is one (the shipped layout), else the first of that role."""
        names = self.choices(role)
        return role if role in names else (names[0] if names else None)

    @property
    def ready(self) -> bool:
        return self.default("teacher") is not None and self.default("student") is not None

    def get(self, choice: str | None, role: str | None) -> CaptionModel:
        """The model for a folder name or Hub id picked or typed in the `role` box (None: any role), loaded once."""
        choice = (choice or "").strip() or (self.default(role) if role else None)
        if not choice:
            raise InputError(f"No {role or 'caption'} model is available. {self.setup_hint()}")
        if choice not in self.roles and not HUB_ID.match(choice):
            offered = ", ".join(self.choices(role) if role else self.roles) or "none"
            raise InputError(f"{choice!r} is neither a {role or 'model'} folder in {self.root.name}/ ({offered}) "
                             "nor a Hub model id of the form owner/name")
        with self._lock:
            if choice in self._models:
                self._models.move_to_end(choice)
                model = self._models[choice]
            else:
                source = self.root / choice if choice in self.roles else choice
                log.info("loading %s model %s", role or "caption", source)
                model = load_model(source, device=self.device)  # CheckpointError names the file and the fix
                model.source = choice  # results name it as it was chosen: the folder name or Hub id
                self._models[choice] = model
                self._evict()
        if role and model.role != role:
            raise InputError(f"{choice!r} is a {model.role} checkpoint; choose a {role} model in the {role} box")
        return model

    def _evict(self) -> None:
        pinned = {self.default("teacher"), self.default("student")}
        spare = [name for name in self._models if name not in pinned]
        for name in spare[: max(0, len(spare) - MODEL_CACHE_SIZE)]:
            del self._models[name]
            self._galleries = {pair: g for pair, g in self._galleries.items() if name not in pair}

    def gallery(self, teacher: str, student: str) -> Gallery | None:
        """Student-vs-teacher embeddings of the example clips, computed once per model pair (None: no examples)."""
        if len(self.examples) < 2:  # one clip has nothing to be told apart from
            return None
        pair = (teacher, student)
        with self._lock:
            if pair not in self._galleries:
                t, s = self.get(teacher, "teacher"), self.get(student, "student")
                names = [example_label(path) for path in self.examples]
                self._galleries[pair] = gallery([str(p) for p in self.examples], t, s, names=names)
            return self._galleries[pair]

    def warm_up(self) -> None:
        """Load the default pair, run it once (first calls are slow) and compute its gallery, before users come."""
        if not self.ready:
            return
        teacher, student = self.default("teacher"), self.default("student")
        if spaces is not None and self.device.type == "cuda":
            return  # ZeroGPU lends the GPU per request: no work may run on it at start-up
        try:
            started = time.perf_counter()
            noise = 0.05 * np.random.default_rng(0).standard_normal(SAMPLE_RATE).astype(np.float32)
            compare((SAMPLE_RATE, noise), self.get(teacher, "teacher"), self.get(student, "student"))
            self.gallery(teacher, student)
            log.info("models ready in %.1f s", time.perf_counter() - started)
        except (CheckpointError, InputError, ValueError) as error:
            # Broken defaults: the page still opens, says what is wrong, and other folders/Hub ids can be tried.
            self.problems.append(f"the default models could not be prepared: {error}")

    def setup_hint(self) -> str:
        return (f"There are no teacher and student checkpoints in {self.root}. Train them with `python -m train all`, "
                "point the EACAP_CHECKPOINTS environment variable at a folder holding `teacher/` and `student/` "
                "checkpoint folders, or type Hub model ids (owner/name) in the model boxes "
                "(with HF_HUB_OFFLINE=0 to allow downloads).")


def example_label(path: Path) -> str:
    return path.stem.replace("_", " ").replace("-", " ")


def find_examples(folder: Path = EXAMPLES_DIR) -> list[Path]:
    return sorted(p for p in folder.glob("*") if p.suffix.lower() in AUDIO_SUFFIXES) if folder.is_dir() else []


# -- formatting --------------------------------------------------------------------------------------------


def format_seconds(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.1f} ms" if seconds < 0.01 else f"{seconds * 1000:.0f} ms"


def format_count(n: int) -> str:
    """Three significant digits: 8.21 M, 248 k, 32.3 k."""
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return str(n)


def model_stats(run) -> str:
    return (f"**{format_seconds(run.seconds['total'])}** · {format_count(run.parameters)} parameters · "
            f"log-prob/token {run.score:.2f} · `{run.name}`")


def summary(result: Comparison, gallery_result: Gallery | None) -> str:
    teacher, student = result.teacher, result.student
    size = teacher.parameters / max(student.parameters, 1)
    faster = (f"**{result.speedup:.1f}× faster**" if result.speedup >= 1
              else f"**{1 / result.speedup:.1f}× slower**")
    text = (f"The student captioned this clip {faster} than the teacher with **{size:.1f}× fewer parameters**. "
            f"Clip-level embedding cosine (student vs. teacher, in the distillation space): "
            f"**{result.clip_cosine:.2f}**")
    if gallery_result is not None:
        text += f"; example gallery top-1 match: **{gallery_result.top1:.0%}** of {len(gallery_result.names)} clips"
    return text + "."


def audio_info(result: Comparison) -> str:
    lines = [f"**{result.name}** · {result.duration:.2f} s"]
    lines += [f"⚠️ {warning}" for warning in result.warnings]
    return "  \n".join(lines)


# -- handlers (plain functions of plain values, so tests call them directly) -----------------------------------


class Captioner:
    """What the UI and the API call. Raises `gr.Error` with a message that names the problem."""

    def __init__(self, bank: ModelBank):
        self.bank = bank

    @classmethod
    def from_folder(cls, checkpoints: str | Path | None = None, examples: str | Path | None = None) -> "Captioner":
        """Models from `checkpoints` (default: $EACAP_CHECKPOINTS, else checkpoints/), loaded and warmed up now."""
        checkpoints = checkpoints or os.environ.get("EACAP_CHECKPOINTS") or HERE / "checkpoints"
        bank = ModelBank.scan(checkpoints, find_examples(Path(examples) if examples else EXAMPLES_DIR))
        bank.warm_up()
        return cls(bank)

    def caption(self, audio: str | None, model: str | None = None, beam_size: float = 3,
                max_length: float = 30) -> dict:
        """Caption `audio` (a file path) with one model: a folder name or Hub id (default: the student)."""
        with user_errors():
            choice = (model or "").strip() or "student"
            if choice in self.bank.roles:
                chosen = self.bank.get(choice, self.bank.roles[choice])
            elif choice in ("teacher", "student"):  # the default model of that role
                chosen = self.bank.get(None, choice)
            else:  # a Hub id, of either role
                chosen = self.bank.get(choice, None)
            options = decoding_options(beam_size, max_length)
            source = require_audio(audio)
            started = time.perf_counter()
            clip = load_audio(source)
            load = time.perf_counter() - started
            result = chosen.caption_batch([clip.waveform], options)[0]
            seconds = {"load": load, **result.seconds}
            seconds["total"] = sum(v for k, v in seconds.items() if k != "load")  # like compare(): model stages
            for warning in clip.warnings:
                gr.Warning(warning)
            return {"model": chosen.source, "role": chosen.role, "caption": result.text, "score": result.score,
                    "parameters": chosen.num_parameters(), "seconds": seconds, "name": clip.name,
                    "duration": clip.duration, "warnings": clip.warnings,
                    "options": {"beam_size": options.beam_size, "max_length": options.max_length}}

    def compare(self, audio: str | None, teacher: str | None = None, student: str | None = None,
                beam_size: float = 3, max_length: float = 30) -> dict:
        """Both models on `audio`: captions, timings, parameters, speed-up and embedding similarity, as JSON."""
        result, gallery_result = self._compare(audio, teacher, student, beam_size, max_length)
        return api_result(result, gallery_result)

    def _compare(self, audio, teacher, student, beam_size, max_length) -> tuple[Comparison, Gallery | None]:
        with user_errors():
            teacher_model, student_model = self.bank.get(teacher, "teacher"), self.bank.get(student, "student")
            options = decoding_options(beam_size, max_length)
            result = compare(require_audio(audio), teacher_model, student_model, options)
            for warning in result.warnings:
                gr.Warning(warning)
            try:
                gallery_result = self.bank.gallery(teacher_model.source, student_model.source)
            except ValueError as error:  # a broken example must not cost the user their result
                log.warning("no gallery for %s / %s: %s", teacher_model.source, student_model.source, error)
                gallery_result = None
            return result, gallery_result

    def timeline(self, audio: str | None, teacher: str | None = None, student: str | None = None,
                 beam_size: float = 3, max_length: float = 30, progress=gr.Progress()) -> dict:
        """Both models' timelines of the whole recording (any length up to an hour), as JSON."""
        timelines = self._timelines(audio, teacher, student, beam_size, max_length, progress)
        return timeline_result(*timelines)

    def _timelines(self, audio, teacher, student, beam_size, max_length, progress) -> tuple[Timeline, Timeline]:
        with user_errors():
            chosen = self.bank.get(teacher, "teacher"), self.bank.get(student, "student")
            options = decoding_options(beam_size, max_length)
            source = require_audio(audio)
            timelines = []
            for i, model in enumerate(chosen):
                def report(done, total, i=i, role=model.role):
                    progress((i * total + done) / (2 * total), desc=f"{role}: window {done} of {total}")
                timelines.append(caption_timeline(model, source, options, progress=report))
            for warning in timelines[0].warnings:
                gr.Warning(warning)
            return tuple(timelines)

    def timeline_view(self, audio, teacher, student, beam_size, max_length, progress=gr.Progress()) -> tuple:
        """The timeline section's outputs: the two segment tables, the summary line and the JSON."""
        timelines = self._timelines(audio, teacher, student, beam_size, max_length, progress)
        return (*(segment_rows(t) for t in timelines), timeline_summary(*timelines), timeline_result(*timelines))

    def compare_view(self, audio, teacher, student, beam_size, max_length) -> tuple:
        """The page's outputs, in `OUTPUT_NAMES` order."""
        result, gallery_result = self._compare(audio, teacher, student, beam_size, max_length)
        return (result.teacher.caption, model_stats(result.teacher), result.student.caption,
                model_stats(result.student), summary(result, gallery_result),
                plots.timing_figure(result), plots.similarity_figure(result), plots.logmel_figure(result),
                audio_info(result), gallery_view(gallery_result), api_result(result, gallery_result))

    def gallery_view(self, teacher: str | None = None, student: str | None = None):
        try:
            return gallery_view(self.bank.gallery(teacher or self.bank.default("teacher"),
                                                  student or self.bank.default("student")))
        except ValueError:  # no or broken default models: the status line says why
            return None

    def page_load(self, teacher, student, beam_size, max_length, request: gr.Request):
        """`?example=NAME` in the address runs that example at once: a link that shows a result, no clicks."""
        wanted = (request.query_params.get("example") or "").strip().lower() if request else ""
        if not wanted:
            return (gr.skip(),) * (1 + len(OUTPUT_NAMES))
        matches = [p for p in self.bank.examples if wanted in (p.name.lower(), p.stem.lower(),
                                                               example_label(p).lower())]
        if not matches:
            names = ", ".join(p.stem for p in self.bank.examples) or "none"
            raise gr.Error(f"no example called {wanted!r} (examples: {names})", print_exception=False)
        path = str(matches[0])
        return (path, *self.compare_view(path, teacher, student, beam_size, max_length))

    def status(self) -> str:
        lines = []
        if not self.bank.ready:
            lines.append(f"⚠️ **No models yet.** {self.bank.setup_hint()}")
        lines += [f"⚠️ {problem}" for problem in self.bank.problems]
        return "  \n".join(lines)


OUTPUT_NAMES = ("teacher_caption", "teacher_stats", "student_caption", "student_stats", "summary", "timing_plot",
                "similarity_plot", "logmel_plot", "audio_info", "gallery_plot", "json")


@contextmanager
def user_errors():
    """Turns what the user can fix (bad audio, bad model choice, bad options) into a `gr.Error` naming it;
    anything else is logged with its traceback and reported as a bug, never shown as a traceback."""
    try:
        yield
    except gr.Error:
        raise
    except AudioError as error:
        raise gr.Error(f"Cannot caption this audio: {error}", title="Audio problem", print_exception=False) from error
    except ValueError as error:  # CheckpointError, InputError, DecodingOptions and compare() checks
        raise gr.Error(str(error), title="Cannot run the models", print_exception=False) from error
    except Exception as error:
        log.exception("unexpected failure")
        raise gr.Error(f"Captioning failed unexpectedly ({type(error).__name__}: {error}). This is a bug in eacap; "
                       "please report it with the audio file.", title="Internal error") from error


def require_audio(audio) -> str:
    if audio is None or (isinstance(audio, str) and not audio.strip()):
        raise InputError(NO_AUDIO)
    if isinstance(audio, dict):  # a FileData payload passed straight through by some API clients
        audio = audio.get("path") or audio.get("url")
    if not isinstance(audio, str):
        raise InputError(f"expected an audio file, got {type(audio).__name__}")
    return audio


def decoding_options(beam_size, max_length) -> DecodingOptions:
    # Sliders give floats; API callers may send anything. Range checks live in DecodingOptions.validate.
    try:
        beam, length = float(beam_size), float(max_length)
    except (TypeError, ValueError):
        raise InputError(f"beam size and max length must be numbers, got {beam_size!r} and {max_length!r}") from None
    if not (beam.is_integer() and length.is_integer()):
        raise InputError(f"beam size and max length must be whole numbers, got {beam_size} and {max_length}")
    if not 1 <= beam <= BEAM_MAX:
        raise InputError(f"beam size must be between 1 and {BEAM_MAX}, got {beam:g}")
    return DecodingOptions(beam_size=int(beam), max_length=int(length))


def api_result(result: Comparison, gallery_result: Gallery | None) -> dict:
    data = result.to_dict()
    data["gallery"] = (None if gallery_result is None else
                       {"names": list(gallery_result.names), "top1": float(gallery_result.top1),
                        "diagonal": [float(x) for x in np.diag(gallery_result.matrix)]})
    return data


TIMELINE_COLUMNS = ["Start", "End", "Caption"]


def segment_rows(timeline: Timeline) -> list[list]:
    return [[clock_time(s.start), clock_time(s.end), s.text] for s in timeline.segments]


def timeline_summary(teacher: Timeline, student: Timeline) -> str:
    def one(t: Timeline) -> str:
        return (f"**{t.role.capitalize()}**: {len(t.segments)} segments in {format_seconds(t.seconds)} "
                f"({t.duration / t.seconds:.0f}x real time)")
    windows = sum(segment.windows for segment in teacher.segments)
    return (f"{clock_time(teacher.duration)} of audio, {windows} windows of {teacher.window:g} s. "
            f"{one(teacher)}; {one(student)}; the student was **{teacher.seconds / student.seconds:.1f}x** faster "
            "(decoding the file included). Click a row to play from there.")


def timeline_result(teacher: Timeline, student: Timeline) -> dict:
    return {"teacher": teacher.to_dict(), "student": student.to_dict(),
            "speedup": teacher.seconds / student.seconds}


def segment_start(role: str):
    """A select handler: where the clicked row's segment starts, in seconds (from the JSON, which keeps exact
    times; the table shows mm:ss)."""
    def start(timelines: dict | None, event: gr.SelectData) -> float:
        try:
            return float(timelines[role]["segments"][event.index[0]]["start"])
        except (TypeError, KeyError, IndexError):
            return 0.0
    return start


# The player is the page's only <audio> element inside the Sound box: seek it and play from there.
SEEK_JS = """(start) => {
  const root = document.querySelector('#sound');
  const player = root && (root.querySelector('audio')
                          || root.querySelector('wave, div')?.shadowRoot?.querySelector('audio'));
  if (player) { player.currentTime = start; player.play().catch(() => {}); }
  return start;
}"""


def gallery_view(gallery_result: Gallery | None):
    return None if gallery_result is None else plots.gallery_figure(gallery_result)


# -- the page ------------------------------------------------------------------------------------------------


def caption_length_limit(bank: ModelBank) -> int:
    """The decoder's position table bounds the caption length: offer what both default models can do."""
    try:
        return min(bank.get(None, role).config.decoder.max_length - 1 for role in ("teacher", "student"))
    except ValueError:  # no or broken defaults: the status line says so; keep the usual limit
        return 47


def build_demo(captioner: Captioner | None = None) -> gr.Blocks:
    """The Gradio app. Tests pass a `Captioner` over small checkpoints; `python app.py` uses checkpoints/."""
    captioner = captioner or Captioner.from_folder()
    bank = captioner.bank
    length_max = caption_length_limit(bank)
    models = {"concurrency_id": "models", "concurrency_limit": "default"}

    with gr.Blocks(title="eacap: efficient audio captioning") as demo:
        gr.Markdown(f"# {TITLE}\nUpload or record a sound (its first 30 s are captioned here; the timeline below "
                    "captions a whole recording). A large **teacher** "
                    "(Whisper-tiny encoder) and a small, fast **student** distilled from it (EfficientNet-style CNN) "
                    "each describe it; below, how long each took and how close the student's embeddings are to "
                    "the teacher's.")
        status = captioner.status()
        gr.Markdown(status, visible=bool(status), elem_id="status")

        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=320):
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Sound", elem_id="sound")
                button = gr.Button("Caption with both models", variant="primary")
                if bank.examples:
                    examples = gr.Examples([[str(p)] for p in bank.examples], inputs=[audio],
                                           label="Examples (one click captions it)",
                                           example_labels=[example_label(p) for p in bank.examples],
                                           examples_per_page=10, api_visibility="private")
                else:
                    examples = None
                    gr.Markdown("No example clips in examples/.", elem_classes="how-to-read")
                with gr.Accordion("Models and decoding", open=False):
                    hub_info = "a folder in checkpoints/ or a Hub id (owner/name)"
                    teacher = gr.Dropdown(bank.choices("teacher"), value=bank.default("teacher"), label="Teacher",
                                          info=hub_info, allow_custom_value=True)
                    student = gr.Dropdown(bank.choices("student"), value=bank.default("student"), label="Student",
                                          info=hub_info, allow_custom_value=True)
                    beam = gr.Slider(1, BEAM_MAX, value=3, step=1, label="Beam size",
                                     info="1 = greedy; wider beams are slower but often better")
                    length = gr.Slider(5, length_max, value=min(30, length_max), step=1, label="Max caption length",
                                       info="in words, end-of-caption included")
            with gr.Column(scale=3, min_width=420):
                with gr.Row(equal_height=True):
                    with gr.Column(elem_id="teacher-panel"):
                        teacher_caption = gr.Textbox(label="Teacher caption", lines=2, interactive=False,
                                                     elem_classes="caption", buttons=["copy"])
                        teacher_stats = gr.Markdown("", elem_classes="how-to-read")
                    with gr.Column(elem_id="student-panel"):
                        student_caption = gr.Textbox(label="Student caption", lines=2, interactive=False,
                                                     elem_classes="caption", buttons=["copy"])
                        student_stats = gr.Markdown("", elem_classes="how-to-read")
                result_summary = gr.Markdown("")

        with gr.Accordion("Timeline: the whole recording, window by window (any length up to 1 hour)", open=True,
                          elem_id="timeline"):
            timeline_button = gr.Button("Caption the whole recording as a timeline")
            timeline_info = gr.Markdown("Long recordings are captioned in 10 s windows, 5 s apart; neighbouring "
                                        "windows that say the same merge into one segment.",
                                        elem_classes="how-to-read")
            with gr.Row(equal_height=False):
                teacher_timeline = gr.Dataframe(headers=TIMELINE_COLUMNS, label="Teacher timeline", interactive=False,
                                                wrap=True, column_widths=["12%", "12%", "76%"],
                                                elem_id="teacher-timeline")
                student_timeline = gr.Dataframe(headers=TIMELINE_COLUMNS, label="Student timeline", interactive=False,
                                                wrap=True, column_widths=["12%", "12%", "76%"],
                                                elem_id="student-timeline")
            with gr.Accordion("Timelines as JSON (what the /timeline API returns)", open=False):
                timeline_raw = gr.JSON(label="Timelines")
            seek_to = gr.Number(visible=False)

        # The figures carry their own titles, so the plots show no label (it would cover the title).
        with gr.Row(equal_height=False):
            with gr.Column():
                timing_plot = gr.Plot(show_label=False)
                gr.Markdown(HOW_TO_READ["timing"], elem_classes="how-to-read")
                logmel_plot = gr.Plot(show_label=False)
                info = gr.Markdown("")
                gr.Markdown(HOW_TO_READ["logmel"], elem_classes="how-to-read")
            with gr.Column():
                similarity_plot = gr.Plot(show_label=False)
                gr.Markdown(HOW_TO_READ["similarity"], elem_classes="how-to-read")
        with gr.Row(equal_height=False):
            with gr.Column():
                gallery_plot = gr.Plot(captioner.gallery_view(), show_label=False)
                gr.Markdown(HOW_TO_READ["gallery"], elem_classes="how-to-read")
            with gr.Column():
                with gr.Accordion("Result as JSON (what the /compare API returns)", open=False):
                    raw = gr.JSON(label="Result")

        inputs = [audio, teacher, student, beam, length]
        outputs = [teacher_caption, teacher_stats, student_caption, student_stats, result_summary, timing_plot,
                   similarity_plot, logmel_plot, info, gallery_plot, raw]
        assert len(outputs) == len(OUTPUT_NAMES)
        button.click(on_gpu(captioner.compare_view), inputs, outputs, api_visibility="private", **models)
        if examples is not None:  # one click on an example captions it
            examples.load_input_event.then(on_gpu(captioner.compare_view), inputs, outputs,
                                           api_visibility="private",
                                           **models)
        timeline_button.click(on_gpu(captioner.timeline_view), inputs,
                              [teacher_timeline, student_timeline, timeline_info, timeline_raw],
                              api_visibility="private", **models)
        for role, table in (("teacher", teacher_timeline), ("student", student_timeline)):
            table.select(segment_start(role), [timeline_raw], seek_to, api_visibility="private").then(
                None, seek_to, None, js=SEEK_JS)
        demo.load(on_gpu(captioner.page_load), [teacher, student, beam, length], [audio, *outputs],
                  api_visibility="private",
                  **models)

        # The API: JSON in, JSON out, on the same inputs. Hidden buttons carry them, so API users get one
        # JSON value instead of the page's eleven outputs (plots included).
        api_model = gr.Textbox("student", visible=False, label="model")
        api_out = gr.JSON(visible=False, label="result")
        gr.Button(visible=False).click(on_gpu(captioner.caption), [audio, api_model, beam, length], api_out,
                                       api_name="caption", **models)
        gr.Button(visible=False).click(on_gpu(captioner.compare), inputs, api_out, api_name="compare", **models)
        gr.Button(visible=False).click(on_gpu(captioner.timeline), inputs, api_out, api_name="timeline", **models)

    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    return demo


def launch(demo: gr.Blocks, **options):
    """Launch with the page's theme settings and upload limit; `options` go to `demo.launch`."""
    settings = {"css": CSS, "max_file_size": MAX_FILE_SIZE, "server_name": os.environ.get("GRADIO_SERVER_NAME",
                "127.0.0.1"), "server_port": int(os.environ.get("GRADIO_SERVER_PORT", "7860"))}
    return demo.launch(**{**settings, **options})


if __name__ == "__main__":  # before build_demo, so start-up (loading, warm-up) is logged
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)  # the app's own start-up steps; not every HTTP request of its libraries

demo = build_demo()

if __name__ == "__main__":
    launch(demo)
