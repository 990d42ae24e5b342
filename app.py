"""eacap's web app: caption a sound with the teacher and the distilled student, side by side.

    python app.py            # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT change it)

UI only: every number and plot comes from `eacap.compare` and `eacap.plots`; this file picks the models,
calls them, and formats what they return. Models are loaded once at start-up from `checkpoints/` (or the
folder in `EACAP_CHECKPOINTS`), warmed up, and the example gallery is computed once per model pair.

API (gradio_client): `/caption` (one model, JSON), `/compare` (both models, JSON) and `/timeline` (both models'
timelines of the whole recording, JSON); see README.md.

Built to be public (README.md, "Running it as a public Space"): every request argument is checked by
`eacap.requests` before any work; models come only from an allow-list (the checkpoint folders found at start-up and
the Hub ids in $EACAP_HUB_MODELS); timelines queue apart from the short requests, so a long recording never holds
up a caption; one client may have only so many requests waiting; uploads are deleted after a while. The limits are
`Settings`, read from the environment.
"""
from __future__ import annotations

import os

# Offline by default (a Hub miss costs tens of seconds of retries on a closed network). Set before the imports
# below: huggingface_hub and gradio read them at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import inspect
import logging
import math
import re
import threading
import time
from collections import OrderedDict, deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np

from eacap import SAMPLE_RATE, AudioError, CaptionModel, CheckpointError, graphs, load_audio, load_model, plots
from eacap.audio import MAX_SECONDS, MAX_SOURCE_SECONDS, open_stream
from eacap.checkpoint import CONFIG, read_config
from eacap.compare import Comparison, Gallery, compare, gallery
from eacap.devices import DEVICE_VARIABLE, DeviceError, device_name, resolve_device
from eacap.live import HOP_SECONDS as LIVE_HOP
from eacap.live import WINDOW_SECONDS as LIVE_WINDOW
from eacap.live import LiveCaptioner, Resampler
from eacap.requests import BEAM_SIZE, MAX_LENGTH, RequestError, decoding_request, model_name, shown, total_seconds
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
# A Hub model id, "owner/name", as $EACAP_HUB_MODELS lists them. Requests may name only the checkpoint folders found
# at start-up and those ids: nothing a client types is ever looked up as a server path or sent to the Hub.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
# Models kept in memory besides the two defaults: enough to flip between a few choices, bounded so that
# the allowed Hub ids cannot fill the machine's memory.
MODEL_CACHE_SIZE = 4
SHORT, TIMELINES = "models", "timelines"  # the two queues (Gradio concurrency groups): short requests, timelines
LIVE = "live"  # live captions' chunks: quick to take (the models caption in threads of their own), queued apart
LIVE_SESSIONS = 4         # live captioning sessions at once; more are told to try again
LIVE_IDLE_SECONDS = 30.0  # a session fed nothing for this long has been left (a closed tab): its place is freed
LIVE_HISTORY = 8          # recent captions shown per model
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


class SettingsError(ValueError):
    """An environment setting the app cannot run with; raised at start-up, naming the variable."""


# -- settings ------------------------------------------------------------------------------------------------


def env_number(environ, name: str, default: float, low: float, high: float, whole: bool = True) -> float:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (low <= value <= high and (value.is_integer() or not whole)):
        kind = "a whole number" if whole else "a number"
        raise SettingsError(f"{name} must be {kind} from {low:g} to {high:g}, got {shown(text)}")
    return int(value) if whole else value


FILE_SIZE = re.compile(r"^\d+(\.\d+)?\s*(b|kb|mb|gb)?$", re.IGNORECASE)


@dataclass(frozen=True)
class Settings:
    """What a running app allows and keeps; `from_env` reads each from its EACAP_* variable (README.md lists them)."""
    # Model runs at once in each queue. One by default: on a small CPU machine two runs at once would each time the
    # other's (latency is what the app shows), and it bounds memory. More on bigger hardware.
    concurrency: int = 1                  # EACAP_CONCURRENCY: /caption, /compare, the page's compare, page loads
    timeline_concurrency: int = 1         # EACAP_TIMELINE_CONCURRENCY: /timeline and the page's timeline
    queue_size: int = 64                  # EACAP_QUEUE_SIZE: requests waiting in all queues together
    client_queue: int = 8                 # EACAP_CLIENT_QUEUE: requests one client may have waiting (0: no limit)
    timeline_minutes: float = 10.0        # EACAP_TIMELINE_MAX_MINUTES: longest recording a timeline takes
    upload_minutes: float = 60.0          # EACAP_UPLOAD_MINUTES: uploads are deleted this long after they came
    max_file_size: str = "200mb"          # EACAP_MAX_FILE_SIZE: largest upload (an hour of MP3 or 16 kHz FLAC)
    hub_models: tuple[str, ...] = ()      # EACAP_HUB_MODELS: Hub ids requests may name besides the folders
    proxy_hops: int = 0                   # EACAP_PROXY_HOPS: proxies in front (a Space has one): who the client is

    @classmethod
    def from_env(cls, environ=None) -> "Settings":
        env = os.environ if environ is None else environ
        hub = tuple(dict.fromkeys(name.strip() for name in env.get("EACAP_HUB_MODELS", "").split(",") if name.strip()))
        for name in hub:
            if not HUB_ID.match(name) or len(name) > 200:
                raise SettingsError(f"EACAP_HUB_MODELS: {shown(name)} is not a Hub model id of the form owner/name")
        size = env.get("EACAP_MAX_FILE_SIZE", "").strip() or cls.max_file_size
        if not FILE_SIZE.match(size):
            raise SettingsError(f"EACAP_MAX_FILE_SIZE must be a size such as 200mb or 1gb, got {shown(size)}")
        return cls(
            concurrency=env_number(env, "EACAP_CONCURRENCY", cls.concurrency, 1, 64),
            timeline_concurrency=env_number(env, "EACAP_TIMELINE_CONCURRENCY", cls.timeline_concurrency, 1, 64),
            queue_size=env_number(env, "EACAP_QUEUE_SIZE", cls.queue_size, 1, 10_000),
            client_queue=env_number(env, "EACAP_CLIENT_QUEUE", cls.client_queue, 0, 10_000),
            timeline_minutes=env_number(env, "EACAP_TIMELINE_MAX_MINUTES", cls.timeline_minutes, 0.5,
                                        MAX_SOURCE_SECONDS / 60, whole=False),
            upload_minutes=env_number(env, "EACAP_UPLOAD_MINUTES", cls.upload_minutes, 0.01, 7 * 24 * 60, whole=False),
            max_file_size=size.replace(" ", "").lower(),
            hub_models=hub,
            proxy_hops=env_number(env, "EACAP_PROXY_HOPS", 1 if env.get("SPACE_ID") else 0, 0, 8),
        )

    @property
    def delete_cache(self) -> tuple[int, int]:
        """Gradio's (how often, how old) in seconds: uploads older than `upload_minutes`, looked for every 5 min
        (more often for short ages), so one is gone at most 5 min after its time."""
        age = max(1, round(self.upload_minutes * 60))
        return min(300, max(1, age // 4)), age


# -- models --------------------------------------------------------------------------------------------------


@dataclass
class ModelBank:
    """The models on offer, the loaded models, and the per-pair example galleries.

    On offer: the checkpoint folders found once at start-up and the Hub ids in `hub` (nothing else, whatever a
    request names). A folder that is not a readable checkpoint is listed in `problems` (shown in the page), never
    fatal. Models load on first use and stay cached (the defaults always).
    """
    root: Path
    examples: list[Path] = field(default_factory=list)
    hub: tuple[str, ...] = ()                                  # Hub ids requests may name (EACAP_HUB_MODELS)
    roles: dict[str, str] = field(default_factory=dict)       # folder name -> "teacher" | "student"
    problems: list[str] = field(default_factory=list)
    _models: OrderedDict = field(default_factory=OrderedDict)  # choice -> CaptionModel, least recently used first
    _galleries: dict = field(default_factory=dict)             # (teacher choice, student choice) -> Gallery | None
    _lock: threading.RLock = field(default_factory=threading.RLock)
    device: object = field(default_factory=lambda: resolve_device("cpu"))  # torch.device: where every model runs

    @classmethod
    def scan(cls, root: str | Path, examples: list[Path] | None = None, hub: tuple[str, ...] = ()) -> "ModelBank":
        bank = cls(Path(root).expanduser().resolve(), list(examples or []), tuple(hub))
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

    def offered(self, role: str | None) -> list[str]:
        """What the `role` box (None: any role) offers: that role's folders, then the allowed Hub ids."""
        return [*(self.choices(role) if role else self.roles), *self.hub]

    def resolve(self, choice, role: str | None) -> str:
        """The folder name or allowed Hub id a request names (empty: the role's default). Anything else gets one
        message, whatever it is, so that it never tells whether such a path exists on the server."""
        if choice is None or (isinstance(choice, str) and not choice.strip()):
            name = self.default(role) if role else None
            if not name:
                raise InputError(f"No {role or 'caption'} model is available. {self.setup_hint()}")
            return name
        name = model_name(choice)  # text of at most 200 characters, or RequestError
        if name in self.roles or name in self.hub:
            return name
        folders = ", ".join(self.choices(role) if role else self.roles) or "none"
        raise InputError(f"unknown model {shown(name)}: choose one of: {folders} "
                         f"(and Hub ids the server allows: {', '.join(self.hub) or 'none'})")

    def get(self, choice, role: str | None) -> CaptionModel:
        """The model for a folder name or allowed Hub id picked or typed in the `role` box (None: any role), loaded
        once."""
        choice = self.resolve(choice, role)
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
            # Twice: on a CPU the second call starts compiling the decoding steps in the background (eacap.graphs),
            # so the compile runs now rather than beside the first users' requests. 5 s: compiled steps serve clips
            # of any length from two encoder frames up, and a 1 s clip has fewer.
            noise = 0.05 * np.random.default_rng(0).standard_normal(5 * SAMPLE_RATE).astype(np.float32)
            for _ in range(2):
                compare((SAMPLE_RATE, noise), self.get(teacher, "teacher"), self.get(student, "student"))
            self.gallery(teacher, student)
            log.info("models ready in %.1f s", time.perf_counter() - started)
        except (CheckpointError, InputError, ValueError) as error:
            # Broken defaults: the page still opens, says what is wrong, and other folders/Hub ids can be tried.
            self.problems.append(f"the default models could not be prepared: {error}")

    def setup_hint(self) -> str:
        return (f"There are no teacher and student checkpoints in {self.root}. Train them with `python -m train all`, "
                "point the EACAP_CHECKPOINTS environment variable at a folder holding `teacher/` and `student/` "
                "checkpoint folders, or list Hub model ids (owner/name) in EACAP_HUB_MODELS "
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

    def __init__(self, bank: ModelBank, settings: Settings | None = None):
        self.bank = bank
        self.settings = settings or Settings()
        self.live_sessions = LiveSessions()

    @classmethod
    def from_folder(cls, checkpoints: str | Path | None = None, examples: str | Path | None = None,
                    settings: Settings | None = None) -> "Captioner":
        """Models from `checkpoints` (default: $EACAP_CHECKPOINTS, else checkpoints/), loaded and warmed up now;
        `settings` default to the environment's."""
        settings = settings or Settings.from_env()
        checkpoints = checkpoints or os.environ.get("EACAP_CHECKPOINTS") or HERE / "checkpoints"
        bank = ModelBank.scan(checkpoints, find_examples(Path(examples) if examples else EXAMPLES_DIR),
                              settings.hub_models)
        graphs.long_running()   # a server: compiled decoding steps on a CPU pay off (eacap.graphs)
        bank.warm_up()
        return cls(bank, settings)

    def caption(self, audio: str | None, model: str | None = None, beam_size: float = 3,
                max_length: float = 30) -> dict:
        """Caption `audio` (a file path) with one model: a folder name or allowed Hub id (default: the student)."""
        with user_errors("/caption"):
            choice = "student" if model is None or (isinstance(model, str) and not model.strip()) else model
            choice = model_name(choice)
            decoding_request(beam_size, max_length)  # the cheap checks before any model is loaded
            if choice in self.bank.roles:
                chosen = self.bank.get(choice, self.bank.roles[choice])
            elif choice in ("teacher", "student") and choice not in self.bank.hub:  # that role's default model
                chosen = self.bank.get(None, choice)
            else:  # an allowed Hub id, of either role (anything else is refused)
                chosen = self.bank.get(choice, None)
            options = decoding_request(beam_size, max_length, chosen)
            source = require_audio(audio)
            started = time.perf_counter()
            clip = load_audio(source)
            load = time.perf_counter() - started
            result = chosen.caption_batch([clip.waveform], options)[0]
            seconds = {"load": load, **result.seconds}
            seconds["total"] = total_seconds(seconds)  # like compare(): the model stages
            for warning in clip.warnings:
                gr.Warning(warning)
            return {"model": chosen.source, "role": chosen.role, "caption": result.text, "score": result.score,
                    "parameters": chosen.num_parameters(), "seconds": seconds, "name": clip.name,
                    "duration": clip.duration, "warnings": clip.warnings,
                    "options": {"beam_size": options.beam_size, "max_length": options.max_length}}

    def compare(self, audio: str | None, teacher: str | None = None, student: str | None = None,
                beam_size: float = 3, max_length: float = 30) -> dict:
        """Both models on `audio`: captions, timings, parameters, speed-up and embedding similarity, as JSON."""
        result, gallery_result = self._compare(audio, teacher, student, beam_size, max_length, "/compare")
        return api_result(result, gallery_result)

    def _compare(self, audio, teacher, student, beam_size, max_length,
                 what: str) -> tuple[Comparison, Gallery | None]:
        with user_errors(what):
            self.bank.resolve(teacher, "teacher")  # names on offer, or the one message for any other
            self.bank.resolve(student, "student")
            decoding_request(beam_size, max_length)  # the cheap checks before any model is loaded
            teacher_model, student_model = self.bank.get(teacher, "teacher"), self.bank.get(student, "student")
            options = decoding_request(beam_size, max_length, teacher_model, student_model)
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
        """Both models' timelines of the whole recording (up to the app's limit, 10 min by default), as JSON."""
        timelines = self._timelines(audio, teacher, student, beam_size, max_length, progress, "/timeline")
        return timeline_result(*timelines)

    def _timelines(self, audio, teacher, student, beam_size, max_length, progress,
                   what: str) -> tuple[Timeline, Timeline]:
        with user_errors(what):
            self.bank.resolve(teacher, "teacher")  # names on offer, or the one message for any other
            self.bank.resolve(student, "student")
            decoding_request(beam_size, max_length)  # the cheap checks before any model is loaded or file read
            source = require_audio(audio)
            self.check_timeline_length(source)
            chosen = self.bank.get(teacher, "teacher"), self.bank.get(student, "student")
            options = decoding_request(beam_size, max_length, *chosen)
            timelines = []
            for i, model in enumerate(chosen):
                def report(done, total, i=i, role=model.role):
                    progress((i * total + done) / (2 * total), desc=f"{role}: window {done} of {total}")
                timelines.append(caption_timeline(model, source, options, progress=report))
            for warning in timelines[0].warnings:
                gr.Warning(warning)
            return tuple(timelines)

    def check_timeline_length(self, source: str) -> None:
        """Refuses a recording longer than the app's timeline limit, from its header (nothing is decoded)."""
        limit = self.settings.timeline_minutes * 60
        with open_stream(source) as stream:  # AudioError for what no timeline could take (format, rate, > 1 h)
            duration, name = stream.duration, stream.name
        if duration > limit:
            raise InputError(f"{name}: {duration / 60:.1f} min of audio is over this app's timeline limit of "
                             f"{limit / 60:g} min (EACAP_TIMELINE_MAX_MINUTES); the command line has no such limit "
                             f"up to its {MAX_SOURCE_SECONDS / 3600:g} hour: python -m eacap caption FILE --timeline")

    def timeline_view(self, audio, teacher, student, beam_size, max_length, progress=gr.Progress()) -> tuple:
        """The timeline section's outputs: the two segment tables, the summary line and the JSON."""
        timelines = self._timelines(audio, teacher, student, beam_size, max_length, progress, "the page's timeline")
        return (*(segment_rows(t) for t in timelines), timeline_summary(*timelines), timeline_result(*timelines))

    def compare_view(self, audio, teacher, student, beam_size, max_length) -> tuple:
        """The page's outputs, in `OUTPUT_NAMES` order."""
        result, gallery_result = self._compare(audio, teacher, student, beam_size, max_length, "the page's compare")
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
            with user_errors("page load"):
                names = ", ".join(p.stem for p in self.bank.examples) or "none"
                raise InputError(f"no example called {shown(wanted)} (examples: {names})")
        path = str(matches[0])
        return (path, *self.compare_view(path, teacher, student, beam_size, max_length))

    def live_chunk(self, chunk, session: "LiveSession | None", teacher, student, beam_size, max_length) -> tuple:
        """One chunk of the microphone's stream: (session, teacher caption, student caption, summary, history).
        The first chunk opens the session with the models and options chosen then."""
        with user_errors("live captions"):
            if session is None:
                models = [self.bank.get(teacher, "teacher"), self.bank.get(student, "student")]
                session = self.live_sessions.open(models, decoding_request(beam_size, max_length, *models))
            if chunk is not None:
                rate, samples = chunk
                session.feed(rate, samples)
            return (session, *live_view(session))

    def live_stop(self, session: "LiveSession | None") -> tuple:
        """Recording stopped: the session ends and nothing of it is kept; the last captions stay on the page."""
        if session is not None:
            self.live_sessions.close(session)
            return None, live_view(session)[2]
        return None, gr.skip()

    def status(self) -> str:
        lines = []
        if not self.bank.ready:
            lines.append(f"⚠️ **No models yet.** {self.bank.setup_hint()}")
        lines += [f"⚠️ {problem}" for problem in self.bank.problems]
        return "  \n".join(lines)


class LiveSession:
    """One browser's live captions: a resampler for its microphone and a `LiveCaptioner` over both models."""

    def __init__(self, models: list[CaptionModel], options):
        self.captioner = LiveCaptioner(models, LIVE_WINDOW, LIVE_HOP, options, history=LIVE_HISTORY)
        self.resample = Resampler()
        self.last_fed = time.monotonic()

    def feed(self, rate, samples) -> None:
        self.last_fed = time.monotonic()
        self.captioner.feed(self.resample(rate, samples))


class LiveSessions:
    """The live sessions running, at most LIVE_SESSIONS; a session not fed for LIVE_IDLE_SECONDS is dropped."""

    def __init__(self):
        self.open_sessions: list[LiveSession] = []
        self.lock = threading.Lock()

    def open(self, models: list[CaptionModel], options) -> LiveSession:
        with self.lock:
            now = time.monotonic()
            for left in [s for s in self.open_sessions if now - s.last_fed > LIVE_IDLE_SECONDS]:
                self._drop(left)
            if len(self.open_sessions) >= LIVE_SESSIONS:
                log.warning("refused live captions: %d sessions are running", len(self.open_sessions))
                raise gr.Error(f"busy: {len(self.open_sessions)} live captioning sessions are running, the most "
                               f"this server takes; try again in a minute", title="Busy", print_exception=False)
            session = LiveSession(models, options)
            self.open_sessions.append(session)
            return session

    def close(self, session: LiveSession) -> None:
        with self.lock:
            if session in self.open_sessions:
                self._drop(session)

    def _drop(self, session: LiveSession) -> None:
        self.open_sessions.remove(session)
        session.captioner.finish(timeout=0)


def live_view(session: LiveSession) -> tuple[str, str, str, list[list]]:
    """Both models' latest captions, a line on each model's pace and the recent captions, newest first."""
    recent = session.captioner.recent()
    stats = session.captioner.stats()
    latest, lines = {}, []
    for worker in session.captioner.workers:
        captions, pace = recent[worker.name], stats[worker.name]
        latest[worker.model.role] = captions[-1].text if captions else ""
        if pace["windows"]:
            lines.append(f"**{worker.model.role.capitalize()}**: lag {pace['last_lag'] * 1000:.0f} ms, real-time "
                         f"factor {pace['real_time_factor']:.2f} ({pace['windows']} windows captioned, "
                         f"{pace['skipped']} skipped)")
    heard = f"{clock_time(session.captioner.seconds)} heard; the last {LIVE_WINDOW:g} s captioned every {LIVE_HOP:g} s"
    history = sorted((c for captions in recent.values() for c in captions), key=lambda c: (-c.end, c.role))
    rows = [[clock_time(c.end), c.role, c.text] for c in history]
    return latest.get("teacher", ""), latest.get("student", ""), "  \n".join([heard, *lines]), rows


OUTPUT_NAMES = ("teacher_caption", "teacher_stats", "student_caption", "student_stats", "summary", "timing_plot",
                "similarity_plot", "logmel_plot", "audio_info", "gallery_plot", "json")


@contextmanager
def user_errors(what: str = "request"):
    """Turns what the user can fix (bad audio, bad model choice, bad options) into a `gr.Error` naming it, and logs
    one line saying what was refused and why; anything else is logged with its traceback and reported as a bug,
    never shown as a traceback."""
    try:
        yield
    except gr.Error:
        raise
    except AudioError as error:
        log.info("refused %s: %s", what, error)
        raise gr.Error(f"Cannot caption this audio: {error}", title="Audio problem", print_exception=False) from error
    except RequestError as error:  # an argument out of bounds (eacap.requests)
        log.info("refused %s: %s", what, error)
        raise gr.Error(str(error), title="Invalid request", print_exception=False) from error
    except ValueError as error:  # CheckpointError, InputError, DecodingOptions and compare() checks
        log.info("refused %s: %s", what, error)
        raise gr.Error(str(error), title="Cannot run the models", print_exception=False) from error
    except Exception as error:
        log.exception("unexpected failure in %s", what)
        raise gr.Error(f"Captioning failed unexpectedly ({type(error).__name__}: {str(error)[:200]}). This is a bug "
                       "in eacap; please report it with the audio file.", title="Internal error",
                       print_exception=False) from error


def require_audio(audio) -> str:
    if audio is None or (isinstance(audio, str) and not audio.strip()):
        raise InputError(NO_AUDIO)
    if isinstance(audio, dict):  # a FileData payload passed straight through by some API clients
        audio = audio.get("path") or audio.get("url")
    if not isinstance(audio, str):
        raise InputError(f"expected an audio file, got {type(audio).__name__}")
    return audio


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


# -- each client's share of the queues ---------------------------------------------------------------------------


def client_of(request, proxy_hops: int = 0) -> str:
    """Who sent a request, as the per-client limit counts them: the peer's address or, behind `proxy_hops` proxies,
    the address the outermost proxy saw (X-Forwarded-For read from the right, so what a client writes there itself
    cannot make it pass for someone else)."""
    if request is None:
        return "unknown"
    if proxy_hops:
        headers = getattr(request, "headers", None) or {}
        forwarded = [part.strip() for part in (headers.get("x-forwarded-for") or "").split(",") if part.strip()]
        if forwarded:
            return forwarded[-min(proxy_hops, len(forwarded))]
    return getattr(getattr(request, "client", None), "host", None) or "unknown"


def admitted_requests(demo: gr.Blocks) -> list:
    """The HTTP requests of the admitted events Gradio holds, queued or running. Read from its queue's internals
    (Gradio 6), on the event loop, where the (async) validators run."""
    queue = demo._queue
    events = [event for waiting in list(queue.event_queue_per_concurrency_id.values()) for event in list(waiting.queue)]
    events += [event for job in list(queue.active_jobs) if job for event in job]
    return [event.request for event in events if event.fn.validator is not None]


@dataclass
class Ticket:
    client: str
    group: str     # SHORT or TIMELINES
    since: float   # time.monotonic() at admission


class Admission:
    """Each client's share of the queues: at most `limit` of its requests waiting or running at once (0: no limit).

    Gradio runs an event's validator before it queues the request, so a refused request never waits and costs no
    queue place: `validator(...)` admits a request and takes a ticket for it, and `handler(...)` gives the ticket
    back when the request's handler returns. A request that leaves the queue without running (its client went away)
    never gives its ticket back: when a client reaches the limit, its tickets are checked against what Gradio still
    holds for it (`live`) and the stale ones are dropped. The wait a refusal names comes from the last requests'
    times in the same queue.
    """

    GRACE = 5.0  # s: a ticket this young may belong to a request Gradio is still queueing
    FIRST_GUESS = {SHORT: 2.0, TIMELINES: 60.0}  # s a request takes, until some have been timed

    def __init__(self, limit: int, concurrency: dict[str, int], proxy_hops: int = 0, live=None):
        self.limit, self.concurrency, self.proxy_hops = limit, dict(concurrency), proxy_hops
        self.live = live  # () -> the requests of the admitted events Gradio holds (`admitted_requests`)
        self.tickets: list[Ticket] = []  # in the order they were taken
        self.recent = {group: deque(maxlen=20) for group in self.concurrency}
        self._lock = threading.Lock()

    def admit(self, what: str, group: str, request) -> str | None:
        """None if the request may queue (it then holds a ticket); else why not, logged in one line."""
        if not self.limit:
            return None
        client = client_of(request, self.proxy_hops)
        with self._lock:
            held = [t for t in self.tickets if t.client == client]
            if len(held) >= self.limit:
                self._drop_stale(client, held)
                held = [t for t in self.tickets if t.client == client]
            if len(held) < self.limit:
                self.tickets.append(Ticket(client, group, time.monotonic()))
                return None
            wait = self._wait(client)
        log.warning("refused %s from %s: busy, %d of its requests already waiting or running (limit %d)",
                    what, client, len(held), self.limit)
        return f"busy: you already have {len(held)} requests waiting; try again in about {wait} s"

    def release(self, group: str, request, seconds: float) -> None:
        client = client_of(request, self.proxy_hops)
        with self._lock:
            self.recent[group].append(seconds)
            for i, ticket in enumerate(self.tickets):
                if ticket.client == client and ticket.group == group:
                    del self.tickets[i]
                    break

    def _drop_stale(self, client: str, held: list[Ticket]) -> None:
        if self.live is None:
            return
        try:
            live = sum(client_of(request, self.proxy_hops) == client for request in self.live())
        except Exception:  # another Gradio version's internals: keep counting tickets only
            log.exception("cannot read Gradio's queue; stale tickets are kept")
            self.live = None
            return
        young = sum(time.monotonic() - t.since < self.GRACE for t in held)
        for ticket in held[: max(0, len(held) - live - young)]:  # the oldest: their requests have left the queue
            self.tickets.remove(ticket)

    def _wait(self, client: str) -> int:
        """Seconds until the client's first request is likely done: the requests admitted before it in its queue,
        run `concurrency` at a time, at the recent mean time of that queue."""
        waits = []
        for group, concurrency in self.concurrency.items():
            queue = [t for t in self.tickets if t.group == group]
            ahead = next((i for i, t in enumerate(queue) if t.client == client), None)
            if ahead is not None:
                times = self.recent[group]
                mean = sum(times) / len(times) if times else self.FIRST_GUESS[group]
                waits.append(mean * (ahead // concurrency + 1))
        return max(1, math.ceil(min(waits, default=1)))

    def validator(self, what: str, group: str, inputs: int):
        """A Gradio validator for an event with `inputs` inputs: admits the request or refuses it as busy."""
        async def validate(*args):
            message = self.admit(what, group, args[-1])
            # The message goes to the first input (the sound, on the page); the rest are fine.
            checks = [gr.validate(message is None or i > 0, (message or "") if i == 0 else "") for i in range(inputs)]
            return checks[0] if inputs == 1 else checks

        request = inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request)
        values = [inspect.Parameter(f"value{i}", inspect.Parameter.POSITIONAL_OR_KEYWORD) for i in range(inputs)]
        validate.__signature__ = inspect.Signature([*values, request])
        validate.__annotations__ = {"request": gr.Request}
        return validate

    def handler(self, group: str, fn):
        """`fn` taking the client's request as an added last argument (Gradio passes it): the request's ticket is
        given back when `fn` returns. `fn` gets the request too if it has a `request` parameter."""
        signature = inspect.signature(fn)
        passes_request = "request" in signature.parameters

        def run(*args):
            *values, request = args
            started = time.perf_counter()
            try:
                return fn(*values, request) if passes_request else fn(*values)
            finally:
                self.release(group, request, time.perf_counter() - started)

        request = inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                    annotation=gr.Request)
        params = [p for p in signature.parameters.values() if p.name != "request"]
        run.__signature__ = signature.replace(parameters=[*params, request])
        run.__annotations__ = {"request": gr.Request}
        run.__name__, run.__qualname__, run.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        return run


# -- the page ------------------------------------------------------------------------------------------------


def caption_length_limit(bank: ModelBank) -> int:
    """The decoder's position table bounds the caption length: offer what both default models can do."""
    try:
        return min(MAX_LENGTH[1], *(bank.get(None, role).config.decoder.max_length - 1
                                    for role in ("teacher", "student")))
    except ValueError:  # no or broken defaults: the status line says so; keep the shared limit
        return MAX_LENGTH[1]


def build_demo(captioner: Captioner | None = None) -> gr.Blocks:
    """The Gradio app. Tests pass a `Captioner` over small checkpoints; `python app.py` uses checkpoints/. The
    limits are the captioner's `settings`."""
    captioner = captioner or Captioner.from_folder()
    bank, settings = captioner.bank, captioner.settings
    length_max = caption_length_limit(bank)
    admission = Admission(settings.client_queue,
                          {SHORT: settings.concurrency, TIMELINES: settings.timeline_concurrency}, settings.proxy_hops)
    queues = {SHORT: {"concurrency_id": SHORT, "concurrency_limit": "default"},
              TIMELINES: {"concurrency_id": TIMELINES, "concurrency_limit": settings.timeline_concurrency}}

    def event(what: str, group: str, handler, inputs: list) -> dict:
        """An event's handler, inputs, queue and validator: timelines queue apart from the short requests (so one
        never waits behind a timeline), and every request counts against its client's share of the queues."""
        return {"fn": admission.handler(group, on_gpu(handler)), "inputs": inputs,
                "validator": admission.validator(what, group, len(inputs)), **queues[group]}

    with gr.Blocks(title="eacap: efficient audio captioning", delete_cache=settings.delete_cache) as demo:
        gr.Markdown(f"# {TITLE}\nUpload or record a sound (its first {MAX_SECONDS:g} s are captioned here; the "
                    "timeline below captions a whole recording). A large **teacher** "
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
                    # Custom values reach the app's own check (one message for anything not on offer), not Gradio's.
                    hub_info = "a folder in checkpoints/ or a Hub id the server allows"
                    teacher = gr.Dropdown(bank.offered("teacher"), value=bank.default("teacher"), label="Teacher",
                                          info=hub_info, allow_custom_value=True)
                    student = gr.Dropdown(bank.offered("student"), value=bank.default("student"), label="Student",
                                          info=hub_info, allow_custom_value=True)
                    beam = gr.Slider(BEAM_SIZE[0], BEAM_SIZE[1], value=3, step=1, label="Beam size",
                                     info="1 = greedy; wider beams are slower but often better")
                    length = gr.Slider(MAX_LENGTH[0], length_max, value=min(30, length_max), step=1,
                                       label="Max caption length", info="in words, end-of-caption included")
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

        with gr.Accordion(f"Timeline: the whole recording, window by window (up to {settings.timeline_minutes:g} min "
                          "here; the command line takes up to an hour)", open=True, elem_id="timeline"):
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

        with gr.Accordion("Live captions: the microphone as you speak, clap or play a sound", open=False,
                          elem_id="live"):
            gr.Markdown(f"Record to start, stop to end. Both models caption the last {LIVE_WINDOW:g} s every "
                        f"{LIVE_HOP:g} s, each as fast as it can: a model still busy with the last window skips the "
                        "next one rather than falling behind. Nothing is kept after you stop.",
                        elem_classes="how-to-read")
            live_audio = gr.Audio(sources=["microphone"], streaming=True, type="numpy", label="Microphone",
                                  elem_id="live-mic")
            live_state = gr.State(None)
            with gr.Row(equal_height=True):
                live_teacher = gr.Textbox(label="Teacher, live", lines=2, interactive=False, elem_id="live-teacher",
                                          elem_classes="caption")
                live_student = gr.Textbox(label="Student, live", lines=2, interactive=False, elem_id="live-student",
                                          elem_classes="caption")
            live_info = gr.Markdown("", elem_id="live-info")
            live_history = gr.Dataframe(headers=["At", "Model", "Caption"], label="Recent captions",
                                        interactive=False, wrap=True, column_widths=["10%", "12%", "78%"],
                                        elem_id="live-history")

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
        button.click(**event("the page's compare", SHORT, captioner.compare_view, inputs), outputs=outputs,
                     api_visibility="private")
        if examples is not None:  # one click on an example captions it
            examples.load_input_event.then(**event("an example", SHORT, captioner.compare_view, inputs),
                                           outputs=outputs, api_visibility="private")
        timeline_button.click(**event("the page's timeline", TIMELINES, captioner.timeline_view, inputs),
                              outputs=[teacher_timeline, student_timeline, timeline_info, timeline_raw],
                              api_visibility="private")
        for role, table in (("teacher", teacher_timeline), ("student", student_timeline)):
            table.select(segment_start(role), [timeline_raw], seek_to, api_visibility="private").then(
                None, seek_to, None, js=SEEK_JS)
        live_audio.stream(on_gpu(captioner.live_chunk), [live_audio, live_state, teacher, student, beam, length],
                          [live_state, live_teacher, live_student, live_info, live_history], stream_every=0.5,
                          time_limit=600, concurrency_id=LIVE, concurrency_limit=LIVE_SESSIONS,
                          api_visibility="private")
        live_audio.stop_recording(captioner.live_stop, [live_state], [live_state, live_info], api_visibility="private")
        demo.load(**event("page load", SHORT, captioner.page_load, [teacher, student, beam, length]),
                  outputs=[audio, *outputs], api_visibility="private")

        # The API: JSON in, JSON out. Hidden buttons carry it, so API users get one JSON value instead of the
        # page's eleven outputs (plots included). Its numbers come in through unbounded Number boxes, not the
        # sliders: whatever a client sends reaches `eacap.requests`, which names the argument and its range.
        api_model = gr.Textbox("student", visible=False, label="model")
        api_beam = gr.Number(3, visible=False, label="beam_size")
        api_length = gr.Number(min(30, length_max), visible=False, label="max_length")
        api_out = gr.JSON(visible=False, label="result")
        api_inputs = [audio, teacher, student, api_beam, api_length]
        gr.Button(visible=False).click(**event("/caption", SHORT, captioner.caption,
                                               [audio, api_model, api_beam, api_length]),
                                       outputs=api_out, api_name="caption")
        gr.Button(visible=False).click(**event("/compare", SHORT, captioner.compare, api_inputs), outputs=api_out,
                                       api_name="compare")
        gr.Button(visible=False).click(**event("/timeline", TIMELINES, captioner.timeline, api_inputs),
                                       outputs=api_out, api_name="timeline")

    demo.queue(default_concurrency_limit=settings.concurrency, max_size=settings.queue_size)
    admission.live = lambda: admitted_requests(demo)
    demo.eacap_settings, demo.eacap_admission = settings, admission
    return demo


def launch(demo: gr.Blocks, **options):
    """Launch with the page's theme settings and the upload limit; `options` go to `demo.launch`."""
    settings = getattr(demo, "eacap_settings", None) or Settings.from_env()
    defaults = {"css": CSS, "max_file_size": settings.max_file_size,
                "server_name": os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                "server_port": int(os.environ.get("GRADIO_SERVER_PORT", "7860"))}
    return demo.launch(**{**defaults, **options})


if __name__ == "__main__":  # before build_demo, so start-up (loading, warm-up) is logged
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)  # the app's own start-up steps; not every HTTP request of its libraries
    logging.getLogger("eacap.graphs").setLevel(logging.INFO)  # compiles and what they gained

demo = build_demo()

if __name__ == "__main__":
    launch(demo)
