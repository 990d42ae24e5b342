"""Teacher vs student on the same input: both captions, where the time goes, and how close the encoders are.

    from eacap.compare import compare
    result = compare("dog.wav", load_model("checkpoints/teacher"), load_model("checkpoints/student"))
    print(result.teacher.caption, result.student.caption, f"{result.speedup:.1f}x", result.clip_cosine)

Timings are wall-clock seconds of one warm pass per model (each model runs once on the input, untimed, the
first time it is compared), under `torch.inference_mode`, stage by stage: front-end, encoder, decoder. Decoding
and resampling the input ("load") happens once and is shared, so the speed-up leaves it out.

Similarity is measured where the student was distilled: the student's KD heads (`student_proj`, `teacher_proj`)
map both encoders' frames into one shared space. The clip cosine is what contrastive encoder KD trains; the
frame matrix and the curve along time show where in the clip the two encoders agree.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .audio import Audio, load_audio
from .decoding import DecodingOptions
from .models import CaptionModel
from .models.caption_model import BatchRun
from .requests import total_seconds

STAGES = ("load", "frontend", "encoder", "decoder")


@dataclass
class ModelRun:
    role: str                   # "teacher" | "student"
    name: str                   # checkpoint path or Hub id (model.source), else the role
    caption: str
    score: float                # length-normalised log-probability of the caption
    parameters: int             # inference parameters (model.num_parameters())
    seconds: dict[str, float]   # "load" (shared), "frontend", "encoder", "decoder", "total" (model stages only)

    def to_dict(self) -> dict:
        return {"role": self.role, "name": self.name, "caption": self.caption, "score": self.score,
                "parameters": self.parameters, "seconds": dict(self.seconds)}


@dataclass
class Comparison:
    name: str
    duration: float
    warnings: list[str]
    teacher: ModelRun
    student: ModelRun
    speedup: float              # teacher total / student total
    clip_cosine: float          # time-mean embeddings in the KD space
    frame_cosine: np.ndarray    # [student_frames, teacher_frames]
    time_axis: np.ndarray       # seconds: centres of the common frames
    time_cosine: np.ndarray     # [len(time_axis)] cosine of the two encoders frame by frame on that grid
    logmel: np.ndarray          # the student's log-mel [n_mels, T] (dB)

    def to_dict(self, matrices: bool = False) -> dict:
        """A JSON-serialisable summary; `matrices=True` adds the frame cosine matrix and the log-mel."""
        data = {"name": self.name, "duration": self.duration, "warnings": list(self.warnings),
                "teacher": self.teacher.to_dict(), "student": self.student.to_dict(),
                "speedup": self.speedup, "clip_cosine": self.clip_cosine,
                "time_axis": _rounded(self.time_axis), "time_cosine": _rounded(self.time_cosine)}
        if matrices:
            data["frame_cosine"] = _rounded(self.frame_cosine)
            data["logmel"] = _rounded(self.logmel, 2)
        return data


@dataclass
class Gallery:
    names: list[str]
    matrix: np.ndarray          # [n, n]: student clip embedding i vs teacher clip embedding j
    top1: float                 # fraction of rows whose best match is their own clip (the diagonal)

    def to_dict(self) -> dict:
        return {"names": list(self.names), "matrix": _rounded(self.matrix), "top1": self.top1}


def compare(source, teacher: CaptionModel, student: CaptionModel,
            options: DecodingOptions = DecodingOptions()) -> Comparison:
    """Caption `source` (anything `load_audio` takes, or an `Audio`) with both models and compare their encoders.

    Raises `AudioError` for bad audio and `ValueError` if the student cannot be compared with this teacher.
    """
    check_pair(teacher, student)
    if isinstance(source, Audio):
        audio, load_seconds = source, 0.0  # loaded by the caller: nothing to time here
    else:
        start = time.perf_counter()
        audio = load_audio(source)
        load_seconds = time.perf_counter() - start

    runs = []
    for model in (teacher, student):
        warm_up(model, audio.waveform, options)
        runs.append(model.run_batch([audio.waveform], options))

    t_run, s_run = runs
    # The KD heads live in the student, which may sit on another device than the teacher.
    t_frames = t_run.frames[0, : int(t_run.frame_lengths[0])].to(s_run.frames.device)
    s_frames = s_run.frames[0, : int(s_run.frame_lengths[0])]
    with torch.inference_mode():
        s_emb = student.kd_embedding(s_frames, "student")
        t_emb = student.kd_embedding(t_frames, "teacher")
        clip = float(F.cosine_similarity(s_emb.mean(0), t_emb.mean(0), dim=0))
        matrix = F.normalize(s_emb, dim=-1) @ F.normalize(t_emb, dim=-1).T
        time_axis, time_cosine = cosine_along_time(s_emb, t_emb, audio.duration)

    teacher_run = _model_run(teacher, t_run, load_seconds)
    student_run = _model_run(student, s_run, load_seconds)
    return Comparison(
        name=audio.name, duration=audio.duration, warnings=list(audio.warnings),
        teacher=teacher_run, student=student_run,
        speedup=teacher_run.seconds["total"] / student_run.seconds["total"],
        clip_cosine=clip, frame_cosine=matrix.cpu().numpy(), time_axis=time_axis, time_cosine=time_cosine,
        logmel=s_run.features[0, :, : int(s_run.feature_lengths[0])].cpu().numpy(),
    )


def gallery(sources: list, teacher: CaptionModel, student: CaptionModel, names: list[str] | None = None) -> Gallery:
    """Cross-match clips: row i is student clip i against every teacher clip j, in the KD space.

    If distillation worked, each student embedding is closest to the teacher embedding of the same clip, so the
    diagonal stands out and `top1` is near 1 (chance is 1/n).
    """
    check_pair(teacher, student)
    if len(sources) < 2:
        raise ValueError(f"a gallery needs at least 2 clips to match against each other, got {len(sources)}")
    if names is not None and len(names) != len(sources):
        raise ValueError(f"got {len(names)} names for {len(sources)} clips: pass one name per clip, or none")
    audios = [s if isinstance(s, Audio) else load_audio(s) for s in sources]
    with torch.inference_mode():
        # One clip at a time: in a padded batch the student's convolutions would see the padding near the end
        # of shorter clips, and the gallery should show the embeddings each clip gets on its own.
        s_emb = torch.stack([_clip_embedding(student, student, a.waveform, "student") for a in audios])
        t_emb = torch.stack([_clip_embedding(teacher, student, a.waveform, "teacher") for a in audios])
        matrix = (F.normalize(s_emb, dim=-1) @ F.normalize(t_emb, dim=-1).T).cpu().numpy()
    top1 = float(np.mean(matrix.argmax(axis=1) == np.arange(len(audios))))
    return Gallery(names=list(names) if names is not None else [a.name for a in audios], matrix=matrix, top1=top1)


def check_pair(teacher: CaptionModel, student: CaptionModel) -> None:
    if student.config.kd is None:
        hint = (" (it is a teacher: pass the teacher and the student the other way round)"
                if student.role == "teacher" else "")
        raise ValueError(f"the student model {student.source!r} has no KD heads{hint}; only a "
                         "student trained with encoder distillation can be compared in the shared embedding space")
    width = teacher.config.encoder.out_dim
    if student.config.kd.teacher_dim != width:
        raise ValueError(f"the student was distilled from a teacher with {student.config.kd.teacher_dim}-d encoder "
                         f"frames, but this teacher's are {width}-d: compare it with the teacher it was trained with")


def warm_up(model: CaptionModel, waveform: np.ndarray, options: DecodingOptions) -> None:
    """Run a model once, untimed, before its first timed run.

    The first pass pays one-off costs (allocator growth, oneDNN kernel selection, lazy initialisation) that can
    be several times a warm pass and say nothing about the model; the app and the CLI keep models loaded, so the
    warm figure is the one a user sees from the second clip on.
    """
    if not model.warmed_up:
        model.run_batch([waveform], options)
        model.warmed_up = True


def cosine_along_time(student_emb: torch.Tensor, teacher_emb: torch.Tensor, duration: float):
    """Cosine of the two embedding sequences frame by frame, on the coarser of the two frame grids.

    Both sequences span the whole clip, at different rates: the student's CNN gives one frame per 32 log-mel frames
    (1.28 s for the shipped student's 40 ms hop), the teacher one per 20 ms. The finer sequence is average-pooled
    onto the coarser grid: each coarse frame summarises its time span, so comparing it with the mean of the fine
    frames in the same span is fairer than picking one fine frame.
    """
    n = min(len(student_emb), len(teacher_emb))

    def pool(emb: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool1d(emb.T[None], n)[0].T if len(emb) != n else emb

    cosine = F.cosine_similarity(pool(student_emb), pool(teacher_emb), dim=-1)
    time_axis = (np.arange(n) + 0.5) * duration / n
    return time_axis, cosine.cpu().numpy()


def _clip_embedding(model: CaptionModel, student: CaptionModel, waveform: np.ndarray, side: str) -> torch.Tensor:
    """A clip's embedding in the KD space, pooled as in training: the student's frames, or the teacher's memory
    (`Memory.embedding`: its frames, and the tag tokens of a teacher with a tagger)."""
    device = next(model.parameters()).device
    wave = torch.as_tensor(waveform, device=device)[None]
    lengths = torch.tensor([wave.shape[1]], device=device)
    frames, frame_lengths = model.encode(wave, lengths)
    pooled = model.memory(wave, lengths, frames, frame_lengths).embedding()[0]
    return student.kd_embedding(pooled.to(next(student.parameters()).device).float(), side).cpu()


def _model_run(model: CaptionModel, run: BatchRun, load_seconds: float) -> ModelRun:
    caption = run.captions[0]
    seconds = {"load": load_seconds, **{s: caption.seconds[s] for s in STAGES[1:]}}
    seconds["total"] = total_seconds(seconds)
    return ModelRun(role=model.role, name=model.source or model.role, caption=caption.text,
                    score=caption.score, parameters=model.num_parameters(), seconds=seconds)


def _rounded(array: np.ndarray, digits: int = 4) -> list:
    return np.round(np.asarray(array, dtype=np.float64), digits).tolist()
