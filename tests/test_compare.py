"""eacap.compare and eacap.plots on tiny random models and generated tones."""
import io
import json

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from conftest import make_tiny_models, tone

from eacap import AudioError, CaptionModel, DecodingOptions, load_audio
from eacap.compare import compare, cosine_along_time, gallery
from eacap.models import KDConfig, ModelConfig
from eacap.models.presets import student_config
from eacap.plots import gallery_figure, logmel_figure, similarity_figure, timing_figure

OPTIONS = DecodingOptions(beam_size=2, max_length=6)


@pytest.fixture(scope="module")
def models():
    return make_tiny_models()


@pytest.fixture(scope="module")
def comparison(models):
    teacher, student = models
    return compare((16000, tone(2.0)), teacher, student, OPTIONS)


def twin_student(teacher: CaptionModel) -> CaptionModel:
    """A "student" identical to the teacher, with identical KD heads: its embeddings equal the teacher's."""
    c = teacher.config
    width = c.encoder.out_dim
    twin = CaptionModel(ModelConfig("student", c.frontend, c.encoder, c.decoder, KDConfig(dim=8, teacher_dim=width)),
                        teacher.tokenizer).eval()
    twin.load_state_dict(teacher.state_dict(), strict=False)
    twin.teacher_proj.load_state_dict(twin.student_proj.state_dict())
    return twin


def test_comparison_shapes_and_ranges(models, comparison):
    teacher, student = models
    wave = torch.from_numpy(tone(2.0))[None]
    n = torch.tensor([wave.shape[1]])
    with torch.inference_mode():
        t_frames = int(teacher.encode(wave, n)[1][0])
        s_frames = int(student.encode(wave, n)[1][0])
    assert comparison.frame_cosine.shape == (s_frames, t_frames)
    assert comparison.time_cosine.shape == comparison.time_axis.shape == (min(s_frames, t_frames),)
    assert np.all(np.diff(comparison.time_axis) > 0)
    assert 0 < comparison.time_axis[0] and comparison.time_axis[-1] < comparison.duration == pytest.approx(2.0)
    for values in (comparison.frame_cosine, comparison.time_cosine, [comparison.clip_cosine]):
        assert np.all(np.abs(values) <= 1 + 1e-5)
    assert comparison.logmel.shape == (64, 201)  # 2 s at a 10 ms hop, centred frames

    for run, model in ((comparison.teacher, teacher), (comparison.student, student)):
        assert run.parameters == model.num_parameters()
        assert all(run.seconds[stage] > 0 for stage in ("load", "frontend", "encoder", "decoder", "total"))
        assert run.seconds["total"] >= run.seconds["frontend"] + run.seconds["encoder"] + run.seconds["decoder"]
        # the caption is the model's own, as caption_batch gives it
        assert run.caption == model.caption_batch([tone(2.0)], OPTIONS)[0].text
    totals = comparison.teacher.seconds["total"], comparison.student.seconds["total"]
    assert comparison.speedup == pytest.approx(totals[0] / totals[1])


def test_clip_cosine_matches_a_separate_encoder_pass(models, comparison):
    teacher, student = models
    wave = torch.from_numpy(tone(2.0))[None]
    n = torch.tensor([wave.shape[1]])
    with torch.inference_mode():
        s = student.kd_embedding(student.encode(wave, n)[0], "student")[0].mean(0)
        t = student.kd_embedding(teacher.encode(wave, n)[0], "teacher")[0].mean(0)
    assert comparison.clip_cosine == pytest.approx(float(torch.cosine_similarity(s, t, dim=0)), abs=1e-5)


def test_to_dict_is_json_serialisable(comparison):
    summary = json.loads(json.dumps(comparison.to_dict()))
    assert summary["teacher"]["caption"] == comparison.teacher.caption
    assert summary["speedup"] == comparison.speedup and summary["clip_cosine"] == comparison.clip_cosine
    assert len(summary["time_cosine"]) == len(comparison.time_cosine)
    assert "frame_cosine" not in summary  # big matrices only when asked
    full = json.loads(json.dumps(comparison.to_dict(matrices=True)))
    assert np.array(full["frame_cosine"]).shape == comparison.frame_cosine.shape
    assert np.array(full["logmel"]).shape == comparison.logmel.shape


def test_an_identical_student_agrees_everywhere(models):
    teacher, _ = models
    result = compare(load_audio(tone(1.5), 16000), teacher, twin_student(teacher), OPTIONS)
    assert result.clip_cosine == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(result.time_cosine, 1.0, atol=1e-5)
    np.testing.assert_allclose(np.diag(result.frame_cosine), 1.0, atol=1e-5)
    assert result.teacher.caption == result.student.caption
    assert result.teacher.seconds["load"] == 0.0  # an Audio was passed: nothing was loaded


def test_cosine_along_time_pools_the_finer_sequence():
    coarse = torch.randn(5, 8)
    fine = coarse.repeat_interleave(4, dim=0)  # the same content at 4x the frame rate
    time_axis, cosine = cosine_along_time(coarse, fine, duration=2.0)
    np.testing.assert_allclose(cosine, 1.0, atol=1e-5)
    np.testing.assert_allclose(time_axis, [0.2, 0.6, 1.0, 1.4, 1.8])


def test_bad_pairs_and_bad_audio_are_refused(models):
    teacher, student = models
    with pytest.raises(ValueError, match="no KD heads.*other way round"):
        compare((16000, tone(1.0)), student, teacher)
    with pytest.raises(ValueError, match="no KD heads"):
        compare((16000, tone(1.0)), teacher, teacher)
    other = CaptionModel(student_config(teacher.config.decoder.vocab_size, "tiny", teacher_dim=99), teacher.tokenizer)
    with pytest.raises(ValueError, match="99-d encoder frames, but this teacher's are 64-d"):
        compare((16000, tone(1.0)), teacher, other)
    with pytest.raises(AudioError, match="only 0.01 s"):
        compare((16000, tone(0.01)), teacher, student)


def test_gallery_of_an_identical_student_is_diagonal(models):
    teacher, _ = models
    clips = [(16000, tone(1.0, freq=f)) for f in (150, 1200, 3000)]
    result = gallery(clips, teacher, twin_student(teacher), names=["low", "mid", "high"])
    assert result.names == ["low", "mid", "high"] and result.matrix.shape == (3, 3)
    np.testing.assert_allclose(np.diag(result.matrix), 1.0, atol=1e-5)
    assert result.top1 == 1.0
    json.dumps(result.to_dict())


def test_gallery_of_a_random_student(models):
    teacher, student = models
    result = gallery([(16000, tone(1.0, freq=f)) for f in (200, 900)], teacher, student)
    assert result.names == ["<array>", "<array>"] and result.matrix.shape == (2, 2)
    assert np.all(np.abs(result.matrix) <= 1 + 1e-5) and result.top1 in (0.0, 0.5, 1.0)
    with pytest.raises(ValueError, match="at least 2 clips"):
        gallery([(16000, tone(1.0))], teacher, student)
    with pytest.raises(ValueError, match="2 names for 3 clips"):
        gallery([(16000, tone(1.0))] * 3, teacher, student, names=["a", "b"])


def _labels(fig):
    return [(ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) for ax in fig.axes]


def test_figures(comparison, models):
    timing = timing_figure(comparison)
    (ax,) = timing.axes
    assert "wall time (ms)" in ax.get_xlabel() and "than the teacher" in ax.get_title()
    assert len(ax.patches) == 2 * 4  # two models x four stages

    similarity = similarity_figure(comparison)
    heat, curve, colorbar = similarity.axes  # the colorbar's axes are added last
    assert colorbar.get_ylabel() == "cosine"
    assert heat.get_xlabel() == "teacher frame time (s)" and f"{comparison.clip_cosine:.2f}" in heat.get_title()
    assert curve.get_xlabel() == "time (s)" and curve.get_ylim() == (-1.05, 1.05)
    np.testing.assert_allclose(curve.lines[0].get_ydata(), comparison.time_cosine)

    logmel = logmel_figure(comparison)
    assert logmel.axes[0].get_ylabel() == "mel bin" and "2.00 s" in logmel.axes[0].get_title()

    teacher, _ = models
    result = gallery([(16000, tone(1.0, freq=f)) for f in (150, 3000)], teacher, twin_student(teacher), ["a", "b"])
    grid = gallery_figure(result)
    assert "top-1 match 100%" in grid.axes[0].get_title()
    assert [t.get_text() for t in grid.axes[0].get_yticklabels()] == ["a", "b"]

    for fig in (timing, similarity, logmel, grid):
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        assert buffer.getvalue().startswith(b"\x89PNG")
    assert plt.get_fignums() == []  # nothing registered with pyplot: no leak in a long-running app


def test_warnings_reach_the_logmel_title(models):
    teacher, student = models
    result = compare((16000, np.zeros(16000, dtype=np.float32)), teacher, student, OPTIONS)
    assert any("silent" in w for w in result.warnings)
    assert "warning: the audio is silent" in logmel_figure(result).axes[0].get_title()
