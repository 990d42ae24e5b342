"""The training pipeline on the tiny preset: end to end, resumable, data-parallel, every KD variant.

Everything runs in a temp folder (scenes from a generated fixture bank, random tiny teacher), never the full corpus.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import eacap
from train.core import models, runs
from train.core.config import PRESETS, Schedule
from train.core.trainer import Trainer
from train.stages import pipeline, student, teacher

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """`train all --preset tiny` once, in a temp working directory; yields (config, workdir)."""
    work = tmp_path_factory.mktemp("tiny")
    previous = os.getcwd()
    os.chdir(work)
    try:
        config = replace(PRESETS["tiny"], run_dir=work / "runs" / "tiny")
        timings = pipeline.run(config)
        yield config, work, timings
    finally:
        os.chdir(previous)


def losses(log: Path, key: str = "loss") -> list[float]:
    return [json.loads(line)[key] for line in log.read_text().splitlines()]


def test_all_stages_run_and_losses_go_down(tiny_run):
    config, work, timings = tiny_run
    for stage in ("scenes", "cache", "teacher", "pseudo", "student", "evaluate", "export"):
        assert stage in timings
    for log in (config.run_dir / "teacher" / "log.jsonl",
                config.run_dir / "students" / "seq_contrastive_audio_seed0" / "log.jsonl"):
        values = losses(log)
        assert len(values) == config.teacher.steps
        assert np.mean(values[-10:]) < 0.8 * np.mean(values[:10]), log
    result = json.loads((config.run_dir / "results" / "teacher.json").read_text())
    assert {"bleu_4", "rouge_l", "cider_d"} <= set(result["metrics"]) and result["clips"] == 20
    assert 0.0 <= result["event_f1"]["f1"] <= 1.0 and result["latency_seconds"] > 0
    assert "| teacher |" in (config.run_dir / "RESULTS.md").read_text()
    # exported checkpoints are ordinary eacap checkpoints, with model cards
    wave = np.sin(np.linspace(0, 2000, 32000)).astype(np.float32) * 0.2
    for role in ("teacher", "student"):
        model = eacap.load_model(config.run_dir / "checkpoints" / role)
        assert model.role == role and isinstance(model.caption_batch([wave])[0].text, str)
        assert "## Reproduce" in (config.run_dir / "checkpoints" / role / "README.md").read_text()


def test_rerun_skips_finished_stages(tiny_run):
    config, work, _ = tiny_run
    os.chdir(work)
    try:
        before = (config.run_dir / "teacher" / "state.safetensors").stat().st_mtime
        result = teacher.run(config)
        assert result["resumed"] and result["step"] == config.teacher.steps
        assert (config.run_dir / "teacher" / "state.safetensors").stat().st_mtime == before
    finally:
        os.chdir(REPO)


def copy_inputs(config, target: Path):
    target.mkdir(parents=True)
    for name in ("tokenizer.json", "teacher_encoder_init.safetensors", "cache", "pseudo"):
        src = config.run_dir / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, target / name)
    return replace(config, run_dir=target)


def test_resume_after_a_kill_matches_an_uninterrupted_run(tiny_run, tmp_path):
    config, work, _ = tiny_run
    os.chdir(work)
    try:
        straight, resumed = copy_inputs(config, tmp_path / "a"), copy_inputs(config, tmp_path / "b")
        recipe = runs.Recipe("seq+contrastive", audio_only=True)
        teacher.run(straight, steps=12)
        teacher.run(resumed, steps=12, stop_after=5)  # the "kill": stops with a checkpoint at step 5
        assert json.loads((resumed.run_dir / "teacher" / "state.json").read_text())["step"] == 5
        teacher.run(resumed, steps=12)
        student.run(straight, recipe, steps=8)
        student.run(resumed, recipe, steps=8, stop_after=3)
        student.run(resumed, recipe, steps=8)
        for part in ("teacher", "students/seq_contrastive_audio_seed0"):
            a = load_file(straight.run_dir / part / "state.safetensors")
            b = load_file(resumed.run_dir / part / "state.safetensors")
            for key in a:
                if key.startswith("model."):
                    assert np.allclose(a[key].numpy(), b[key].numpy(), atol=1e-6), (part, key)
    finally:
        os.chdir(REPO)


def test_two_process_ddp_agrees_with_one_process(tiny_run, tmp_path):
    config, work, _ = tiny_run
    one, two = copy_inputs(config, tmp_path / "one"), copy_inputs(config, tmp_path / "two")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    common = ["-m", "train", "teacher", "--preset", "tiny", "--steps", "10"]
    subprocess.run([sys.executable, *common, "--run-dir", str(one.run_dir)], cwd=work, env=env, check=True,
                   capture_output=True)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run([*torchrun, *common, "--run-dir", str(two.run_dir)], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    a = load_file(one.run_dir / "teacher" / "state.safetensors")
    b = load_file(two.run_dir / "teacher" / "state.safetensors")
    for key in (k for k in a if k.startswith("model.") and a[k].dtype.is_floating_point):
        diff = float((a[key] - b[key]).norm() / (a[key].norm() + 1e-12))
        assert diff < 1e-2, (key, diff)  # same global batch and loss: equal up to float summation order


@pytest.mark.parametrize("kd,fraction", [("none", None), ("seq", None), ("token", None), ("seq+mse", 0.25),
                                         ("seq+contrastive", 0.1)])
def test_every_kd_variant_trains(tiny_run, tmp_path, kd, fraction):
    config, work, _ = tiny_run
    os.chdir(work)
    try:
        run = copy_inputs(config, tmp_path / "v")
        recipe = runs.Recipe(kd, label_fraction=fraction)
        result = student.run(run, recipe, steps=4)
        assert result["step"] == 4
        log = losses(runs.student_dir(run, recipe) / "log.jsonl", "sup")
        assert all(np.isfinite(log))
    finally:
        os.chdir(REPO)


@pytest.mark.parametrize("shape, hop, layers", [("fast", 320, 1), ("lite", 640, 1), ("slim", 640, 1)])
def test_other_shape_students_train_and_reload_with_their_architecture(tiny_run, tmp_path, shape, hop, layers):
    """--shape fast|lite|slim: its own run name, its architecture recorded in the run, and evaluation rebuilds that one
    (the tiny preset's decoder already has one layer and is narrower than 128)."""
    from train.core.models import load_run_model
    config, work, _ = tiny_run
    os.chdir(work)
    try:
        run = copy_inputs(config, tmp_path / shape)
        recipe = runs.Recipe("seq+contrastive", audio_only=True, shape=shape)
        assert recipe.name == f"seq_contrastive_audio_{shape}"
        assert student.run(run, recipe, steps=3)["step"] == 3
        model = load_run_model(run, f"{recipe.name}_seed{run.seed}")
        assert model.config.frontend.hop_length == hop and model.config.decoder.layers == layers
        assert isinstance(model.caption_batch([np.zeros(16000, dtype=np.float32) + 0.01])[0].text, str)
        # shipped with this shape, its model card and config name the command that trains it, and `--only
        # student` leaves the teacher's checkpoint alone
        from train.stages import export
        shipping = replace(run, student_shape=shape)
        assert runs.shipped_student(shipping) == f"{recipe.name}_seed{run.seed}"
        assert runs.command(shipping, "student", f"{recipe.name}_seed{run.seed}") == (
            f"python -m train student --preset tiny --kd seq+contrastive --audio-only --shape {shape} --steps 3")
        out = tmp_path / f"{shape}_checkpoints"
        export.export(shipping, out, roles=("student",))
        assert not (out / "teacher").exists()
        assert f"--shape {shape} --steps 3" in (out / "student" / "README.md").read_text()
        assert eacap.load_model(out / "student").config.frontend.hop_length == hop
    finally:
        os.chdir(REPO)
    with pytest.raises(ValueError, match="--shape must be one of"):
        runs.Recipe("seq", shape="huge")


def test_prune_into_keeps_the_first_layers_and_the_strongest_ffn_units():
    """--init-from, full size: base -> slim copies the CNN, KD heads, embeddings and decoder layer 0's attention
    exactly, drops layer 1, and keeps the 512 of 1,024 FFN units with the largest |W_in row| x |W_out column|."""
    from eacap.models import CaptionModel
    from eacap.models.presets import student_config
    from eacap.tokenizer import CaptionTokenizer
    tokenizer = CaptionTokenizer.train(["a dog barks", "rain falls on a roof"])
    torch.manual_seed(0)
    base = CaptionModel(student_config(tokenizer.vocab_size, "full"), tokenizer)
    slim = CaptionModel(student_config(tokenizer.vocab_size, "full", shape="slim"), tokenizer)
    report = student.prune_into(slim, base)
    assert report["dropped"] == ["decoder.layers.1"] and report["fresh"] == []
    assert report["pruned"] == ["decoder.layers.0.ffn.0.weight", "decoder.layers.0.ffn.0.bias",
                                "decoder.layers.0.ffn.3.weight"]
    b, s = base.state_dict(), slim.state_dict()
    for name in s:
        if "ffn.0" not in name and "ffn.3.weight" not in name:
            assert torch.equal(s[name], b[name]), name
    gain = b["decoder.layers.0.ffn.0.weight"].norm(dim=1) * b["decoder.layers.0.ffn.3.weight"].norm(dim=0)
    kept = [i for i in range(1024) if any(torch.equal(b["decoder.layers.0.ffn.0.weight"][i], row)
                                          for row in s["decoder.layers.0.ffn.0.weight"])]
    assert kept == sorted(gain.topk(512).indices.tolist())  # the strongest units, in their order
    assert torch.equal(s["decoder.layers.0.ffn.3.weight"], b["decoder.layers.0.ffn.3.weight"][:, kept])
    assert torch.equal(s["decoder.layers.0.ffn.0.bias"], b["decoder.layers.0.ffn.0.bias"][kept])
    lite = CaptionModel(student_config(tokenizer.vocab_size, "full", shape="lite"), tokenizer)
    assert "decoder.embed.weight" in student.prune_into(lite, base)["fresh"]  # another width: left fresh
    wider = student.prune_into(CaptionModel(student_config(tokenizer.vocab_size, "full"), tokenizer), slim)
    assert wider["pruned"] == [] and "decoder.layers.0.ffn.0.weight" in wider["fresh"]  # grown, not pruned: fresh
    assert "decoder.layers.1.ffn.0.weight" in wider["fresh"] and wider["dropped"] == []
    other = CaptionModel(student_config(5, "full", shape="slim"), CaptionTokenizer.train(["x"]))
    with pytest.raises(ValueError, match="tokenizer differs"):
        student.prune_into(other, base)


def test_init_from_a_trained_student_is_recorded_and_reproducible(tiny_run, tmp_path):
    """`student --shape slim --init-from <run>`: a `_pruned` run that starts from that run's weights, says so in
    init.json, the model card and the command; resuming it from another source is refused."""
    from train.core.models import load_run_model
    from train.stages import export
    config, work, _ = tiny_run
    os.chdir(work)
    try:
        run = copy_inputs(config, tmp_path / "init")
        shutil.copytree(config.run_dir / "students" / "seq_contrastive_audio_seed0",
                        run.run_dir / "students" / "seq_contrastive_audio_seed0")
        shipping = replace(run, student_shape="slim", student_init="base")
        trained = replace(shipping, student=replace(run.student, lr=1e-3))  # as `--lr 0.001` makes it
        recipe = runs.shipped_recipe(shipping)
        assert (recipe.init_from, recipe.name) == ("seq_contrastive_audio_seed0", "seq_contrastive_audio_slim_pruned")
        folder = runs.student_dir(shipping, recipe)
        with pytest.raises(ValueError, match="no trained student"):
            student.run(trained, replace(recipe, init_from="missing_run"), steps=1)
        assert student.run(trained, recipe, steps=2, stop_after=1)["step"] == 1
        init = json.loads((folder / runs.INIT_FILE).read_text())
        assert init["run"] == "seq_contrastive_audio_seed0" and init["pruned"] and not init["fresh"]
        assert init["trained_by"].startswith("python -m train student --preset tiny --kd seq+contrastive --audio-only")
        with pytest.raises(ValueError, match="started from seq_contrastive_audio_seed0"):
            student.run(trained, replace(recipe, init_from=str(config.run_dir / "checkpoints" / "teacher")), steps=2)
        assert student.run(trained, recipe, steps=2)["step"] == 2  # resumed from its checkpoint
        command = runs.command(shipping, "student", folder.name)
        assert command == ("python -m train student --preset tiny --kd seq+contrastive --audio-only --shape slim "
                           "--init-from seq_contrastive_audio_seed0 --steps 2 --lr 0.001")
        export.export(shipping, tmp_path / "out", roles=("student",))
        card = (tmp_path / "out" / "student" / "README.md").read_text()
        assert "Started from the trained student `seq_contrastive_audio_seed0`" in card and command in card
        assert init["trained_by"] in card
        model = load_run_model(shipping, folder.name)
        assert model.config.decoder.ffn == load_run_model(run, "seq_contrastive_audio_seed0").config.decoder.ffn // 2
    finally:
        os.chdir(REPO)


def test_lite_shape_full_size():
    from eacap.models.presets import student_config
    config = student_config(613, "full", shape="lite")
    assert (config.frontend.n_fft, config.frontend.hop_length) == (1024, 640)
    assert (config.decoder.width, config.decoder.layers, config.decoder.ffn) == (128, 2, 512)
    assert config.encoder == dataclasses.replace(student_config(613, "full").encoder, activation="relu")
    assert config.decoder.activation == "relu"


def test_slim_shape_full_size():
    """slim: lite's 40 ms frames, but the base CNN and activations and a d256 decoder of one layer, FFN 512."""
    from eacap.models.presets import student_config
    base, config = student_config(613, "full"), student_config(613, "full", shape="slim")
    assert (config.frontend.n_fft, config.frontend.hop_length) == (1024, 640)
    assert config.encoder == base.encoder and config.kd == base.kd
    assert config.decoder == dataclasses.replace(base.decoder, layers=1, ffn=512)


def test_spec_augment_time_stripes_cover_the_same_duration_at_any_hop(tiny_run, monkeypatch):
    """Time-mask widths are counted in 10 ms frames: at a 40 ms hop the same setting masks a quarter the frames."""
    from train.core import data
    config, work, _ = tiny_run
    os.chdir(work)
    seen = {}
    real = data.spec_augment_masks
    monkeypatch.setattr(data, "spec_augment_masks",
                        lambda frames, n_mels, rng, spec: (seen.setdefault(frames, spec)
                                                           and real(frames, n_mels, rng, spec)))
    try:
        config = dataclasses.replace(config, spec_augment=(64, 2, 8, 2))
        items = data.load_split(config, "train")
        for hop in (160, 320, 640):
            seen.clear()
            data.audio_batch(items, np.arange(2), config, 0, 8, hop)
            assert set(seen.values()) == {(64 * 160 // hop, 2, 8, 2)}, hop
    finally:
        os.chdir(REPO)


def test_teacher_restores_from_its_checkpoint_and_checkpoints_evaluate(tiny_run, tmp_path):
    """A fresh machine has no teacher run: `teacher --from-checkpoint` makes the exported teacher the run's result
    (stages after it then skip training), and `evaluate --model <checkpoint folder>` scores an exported model
    under the run it came from."""
    from train.stages import evaluate
    config, work, _ = tiny_run
    os.chdir(work)
    try:
        run = copy_inputs(config, tmp_path / "restored")
        record = teacher.restore(run, config.run_dir / "checkpoints" / "teacher")
        assert record["trained_by"] and (run.run_dir / "teacher" / "best.safetensors").is_file()
        assert teacher.run(run) == record  # no training: the restored teacher is the result
        restored = models.load_trained_teacher(run).state_dict()
        exported = eacap.load_model(config.run_dir / "checkpoints" / "teacher").state_dict()
        assert all(torch.equal(restored[k], exported[k]) for k in exported)
        result = evaluate.evaluate(run, str(config.run_dir / "checkpoints" / "student"), meteor=False, sbert=False)
        assert result["model"] == "seq_contrastive_audio_seed0" and result["source"].endswith("student")
        assert (run.run_dir / "results" / "seq_contrastive_audio_seed0.json").is_file()
        # another split goes in a folder of its own and leaves the test split's file as it was
        evaluate.evaluate(run, str(config.run_dir / "checkpoints" / "student"), "val", meteor=False, sbert=False)
        assert json.loads((run.run_dir / "results" / "val" / "seq_contrastive_audio_seed0.json").read_text())[
            "split"] == "val"
        assert json.loads((run.run_dir / "results" / "seq_contrastive_audio_seed0.json").read_text())["split"] == "test"
        bad = replace(run, model_size="full")  # another architecture: refused, with what to do instead
        with pytest.raises(ValueError, match="not this preset's teacher architecture"):
            teacher.restore(bad, config.run_dir / "checkpoints" / "teacher")
    finally:
        os.chdir(REPO)


def test_full_preset_results_are_committed_files():
    from train.core.data import RESULTS_ROOT, run_path
    assert run_path(PRESETS["full"], "results", "teacher.json") == RESULTS_ROOT / "full" / "teacher.json"
    assert run_path(PRESETS["full"], "cache") == Path("data/runs/full/cache")
    custom = replace(PRESETS["full"], run_dir=Path("/tmp/elsewhere"))
    assert run_path(custom, "results") == Path("/tmp/elsewhere/results")
    base = PRESETS["whisper_base"]
    assert run_path(base, "results", "teacher.json") == RESULTS_ROOT / "whisper_base" / "teacher.json"
    assert run_path(base, "cache") == Path("data/runs/whisper_base/cache")


def test_whisper_base_preset_builds_a_wider_teacher_and_student_heads():
    """The whisper_base preset: Whisper base's encoder shape, the decoder reading 512-d frames, and the student's
    teacher projection sized for them; the full preset keeps tiny.en."""
    from eacap.models.presets import student_config
    base, full = PRESETS["whisper_base"], PRESETS["full"]
    teacher_arch = base.teacher_model(100)
    assert (teacher_arch.encoder.width, teacher_arch.encoder.layers, teacher_arch.decoder.memory_dim) == (512, 6, 512)
    assert full.teacher_model(100).encoder.width == 384
    assert student_config(100, teacher_dim=teacher_arch.encoder.out_dim).kd.teacher_dim == 512
    assert (base.teacher_augment, base.augment, base.scenes) == (0.5, 0.5, "full")
    extra = PRESETS["base_extra"]   # the same recipe on the bank with the extra sources, the shipped tokenizer kept
    assert (extra.teacher_encoder, extra.teacher_augment, extra.scenes) == ("base", 0.5, "extra")
    assert (REPO / extra.tokenizer_from).is_file() and extra.run_dir == Path("data/runs/base_extra")
    with pytest.raises(ValueError, match="unknown teacher encoder 'large'"):
        replace(full, teacher_encoder="large").teacher_model(100)


def test_teacher_with_a_tagger_caches_trains_exports_and_teaches(tiny_run, tmp_path):
    """teacher_tagger="yamnet": the cache holds YAMNet's scores beside the encoder's outputs; the teacher starts from
    one without a tagger, trains on both (hiding its frames from a share of clips), exports into a checkpoint that
    captions as the run's model does, and its pseudo embeddings average its frames' and its tokens' means."""
    from train.core.teacher_cache import HiddenCache, TeacherTop
    from train.stages import cache, export, pseudo
    config, work, _ = tiny_run
    os.chdir(work)
    try:
        tagged = replace(copy_inputs(config, tmp_path / "tagged"), teacher_tagger="yamnet", memory_dropout=0.5)
        shutil.rmtree(tagged.run_dir / "pseudo")
        cache.run(tagged, ("train", "val", "audio_only"))
        train_cache = HiddenCache(tagged, "train")
        inputs = train_cache.batch(np.arange(3))
        assert inputs["scores"].shape[-1] == 521 and (inputs["counts"] >= 1).all()
        new = teacher.start_from(models.build_teacher(tagged), config.run_dir / "checkpoints" / "teacher")
        assert new and all(k.startswith(("tagger.norm", "tagger.proj", "tagger.positions")) for k in new)
        teacher.run(tagged, steps=6, init_from=str(config.run_dir / "checkpoints" / "teacher"))
        source = config.run_dir / "checkpoints" / "teacher"
        expected = f"python -m train teacher --preset tiny --init-from {source} --steps 6"
        assert runs.command(tagged, "teacher", "teacher") == expected
        with pytest.raises(ValueError, match="resume it with that --init-from"):
            teacher.run(tagged, steps=6, init_from=str(tmp_path / "another"))
        trained = models.load_trained_teacher(tagged)
        top = TeacherTop(trained, models.frozen_layers(tagged), memory_dropout=1.0).train()
        assert torch.equal(top.memory(inputs).memory_lengths, inputs["counts"])  # all frames hidden: tokens alone
        top.eval()  # a decoder trained on the tokens alone is validated on them alone
        assert torch.equal(top.memory(inputs).memory_lengths, inputs["counts"])
        shown = TeacherTop(trained, models.frozen_layers(tagged), memory_dropout=0.5).eval().memory(inputs)
        assert torch.equal(shown.memory_lengths, inputs["lengths"] + inputs["counts"])
        one = top.memory(train_cache.batch(np.arange(1)))
        assert torch.allclose(one.embedding()[0], (one.frames[0].mean(0) + one.tokens[0].mean(0)) / 2, atol=1e-5)
        pseudo.run(tagged, token_targets=False)
        assert np.load(tagged.run_dir / "pseudo" / "train_embedding.npy").shape[1] == trained.config.decoder.memory_dim
        folder = export.export(tagged, tmp_path / "export", roles=("teacher",))[0]
        shipped = eacap.load_model(folder)
        assert shipped.tagger is not None and "tagger" in json.loads((folder / "config.json").read_text())["model"]
        card = (folder / "README.md").read_text()
        assert "YAMNet" in card and "# the teacher this one starts from" in card
        wave = np.sin(np.linspace(0, 3000, 48000)).astype(np.float32) * 0.2
        assert shipped.caption_batch([wave])[0].text == trained.caption_batch([wave])[0].text
    finally:
        os.chdir(REPO)


def test_teacher_cache_rerecords_its_share_of_train_scenes(tiny_run, tmp_path):
    """teacher_augment: that share of train scenes is cached as a re-recorded copy (the same ones on every run);
    validation stays as recorded."""
    from train.core.teacher_cache import HiddenCache
    from train.stages import cache
    config, work, _ = tiny_run
    os.chdir(work)
    try:
        shutil.copytree(config.run_dir, tmp_path / "aug", ignore=shutil.ignore_patterns("cache", "teacher", "students",
                                                                                          "pseudo", "checkpoints"))
        augmented = replace(config, run_dir=tmp_path / "aug", teacher_augment=0.5)
        cache.run(augmented, ("train", "val"))
        clean_train, aug_train = HiddenCache(config, "train"), HiddenCache(augmented, "train")
        # A re-recorded neighbour changes a batch's padded length, which can move an output by a float16 rounding
        # step; a re-recorded scene differs by far more.
        differs = [np.abs(clean_train.data[i].astype(np.float32) - aug_train.data[i]).max() > 0.05
                   for i in range(len(clean_train.ids))]
        assert 0.25 < np.mean(differs) < 0.8, f"{np.mean(differs):.0%} of train scenes re-recorded, expected ~50%"
        assert aug_train.meta["rerecorded_share"] == 0.5
        assert np.array_equal(HiddenCache(config, "val").data, HiddenCache(augmented, "val").data)
        again = replace(augmented, run_dir=tmp_path / "again")
        shutil.copytree(tmp_path / "aug", tmp_path / "again", ignore=shutil.ignore_patterns("cache"))
        cache.run(again, ("train",))
        assert np.array_equal(HiddenCache(again, "train").data, aug_train.data)
    finally:
        os.chdir(REPO)


def test_bad_recipe_is_a_clear_error():
    done = subprocess.run([sys.executable, "-m", "train", "student", "--preset", "tiny", "--kd", "none",
                           "--audio-only"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and "--audio-only needs a KD target" in done.stderr


def test_real_sounds_and_report(tiny_run):
    """Captions of the app's examples and of fresh TTS speech land in the report, teacher next to student."""
    from train.stages import report, side_by_side

    config, work, _ = tiny_run
    os.chdir(work)
    try:
        rows = json.loads(side_by_side.run(config).read_text())
        assert len(rows) >= len(list(side_by_side.EXAMPLES.glob("*.flac")))
        assert all(isinstance(r["teacher"], str) and r["student_ms"] > 0 for r in rows)
        text = report.report(config).read_text()
        assert "## Real sounds" in text and rows[0]["file"] in text
    finally:
        os.chdir(REPO)


def test_ablation_rows_train_score_and_report(tiny_run, tmp_path):
    """`train ablation` trains and scores each row once, then `train report` tables it with the claims checked."""
    from train.stages import ablation, report

    config, work, _ = tiny_run
    os.chdir(work)
    try:
        run = copy_inputs(config, tmp_path / "a")
        shutil.copytree(config.run_dir / "results", run.run_dir / "results", dirs_exist_ok=True)
        recipes = [(runs.Recipe("token"), 0), (runs.Recipe("seq+contrastive"), 0)]
        names = ablation.run_rows(run, 3, recipes, repeat_sounds=True)
        assert names == ["ablation3/token_seed0", "ablation3/seq_contrastive_seed0"]
        targets = json.loads((run.run_dir / "pseudo" / "train_decoding.json").read_text())
        assert targets["no_repeat_sounds"] and targets["no_repeat_ngram_size"] == 2  # eacap's defaults
        for name in names:
            result = json.loads((run.run_dir / "results" / f"{name}.json").read_text())
            assert result["model"] == name and len(losses(run.run_dir / "students" / f"{name}/log.jsonl")) == 3
            # what each row was scored with, and what its seq-KD targets were decoded with, are recorded
            assert result["options"]["no_repeat_sounds"] is False and result["kd_targets_decoding"] == targets
        stamp = (run.run_dir / "results" / f"{names[0]}.json").stat().st_mtime
        ablation.run_rows(run, 3, recipes)  # finished rows are skipped, not retrained
        assert (run.run_dir / "results" / f"{names[0]}.json").stat().st_mtime == stamp
        text = report.report(run, tmp_path / "R.md").read_text()
        assert "## Ablation: every student row at 3 steps" in text
        assert "| + token-KD |" in text and "**Encoder-level KD beats decoder-level (token) KD**" in text
        assert ("Decoding rules of the scored captions: n-gram 2; of the teacher's seq-KD targets: n-gram 2 + sounds."
                in text) and "not all made alike" not in text
    finally:
        os.chdir(REPO)


class _Regression(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def forward(self, batch):
        return ((self.layer(batch["x"]) - batch["y"]) ** 2).mean(), {}


def test_sigterm_stops_with_a_checkpoint_and_the_same_command_resumes(tmp_path, capsys):
    """kill (SIGTERM) mid-run: the current step finishes, a resumable checkpoint is written, the process exits
    with 128 + 15 instead of going on with a half-trained model; rerunning completes the schedule."""
    schedule = Schedule(steps=8, batch_size=4, lr=1e-2, warmup=2, checkpoint_seconds=3600.0)

    def make_batch(step, dist):
        if step == 3 and not getattr(make_batch, "sent", False):
            make_batch.sent = True
            os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-step, as a `kill` would
        g = torch.Generator().manual_seed(step)
        return {"x": torch.randn(4, 4, generator=g), "y": torch.randn(4, 1, generator=g)}

    model = _Regression()
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        Trainer(tmp_path, model, model, schedule, make_batch).fit()
    assert stopped.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers restored
    assert json.loads((tmp_path / "state.json").read_text())["step"] == 4
    assert "stopped by SIGTERM at step 4" in capsys.readouterr().err
    model = _Regression()
    result = Trainer(tmp_path, model, model, schedule, make_batch).fit()
    assert result["resumed"] and result["step"] == 8


def test_report_leads_with_the_cross_source_test(tiny_run, tmp_path):
    """realworld_*.json and encoder_probe.json become the report's first tables, and are never read as model rows."""
    from train.core.data import run_path
    from train.stages import report

    config, work, _ = tiny_run
    os.chdir(work)
    results = run_path(config, "results")
    candidate = run_path(PRESETS["whisper_base"], "results", "realworld_teacher.json")  # relative: under `work`
    written = [results / "realworld_teacher.json", results / "encoder_probe.json", candidate]
    try:
        candidate.parent.mkdir(parents=True, exist_ok=True)
        score = {"n": 3, "names_all": 1 / 3, "names_any": 2 / 3, "repeats": 0.0, "event_precision": 0.5,
                 "event_recall": 0.25, "event_f1": 0.33, "sbert_sim": 0.4}
        written[0].write_text(json.dumps({"model": "teacher", "all": score, "single": score, "mix": {},
                                          "sources": ["pkg-a"], "options": {"no_repeat_ngram_size": 2,
                                                                                  "no_repeat_sounds": True}}))
        probe = {"linear": {"accuracy": 0.5, "balanced_accuracy": 0.4},
                 "knn": {"accuracy": 0.3, "balanced_accuracy": 0.2},
                 "dim": 8, "seconds_per_clip": 0.01}
        top = {"frozen": {"accuracy": 0.25, "balanced_accuracy": 0.5}, "fine-tuned": {"accuracy": 0.75,
                                                                                      "balanced_accuracy": 1.0}}
        written[1].write_text(json.dumps({"train_clips": 10, "test_clips": 4, "classes": ["dog", "rain"],
                                          "encoders": {"Whisper base, frozen": probe,
                                                       "YAMNet": {**probe, "external": True}},
                                          "top_layer": {"Whisper base, augmented": top}}))
        candidate.write_text(written[0].read_text())
        text = report.report(config).read_text()
        assert text.index("## Cross-source test") < text.index("## Every model trained")
        assert "| teacher | n-gram 2 + sounds | 33.3% | 33.3% | 0.0% | 0.50 / 0.25 | 0.0% | 0.400 |" in text
        # a candidate of another preset follows
        assert "| teacher (`--preset whisper_base`) | n-gram 2 + sounds | 33.3% |" in text
        assert "| Whisper base, frozen | 8 | 50.0% | 40.0% | 30.0% | 20.0% | 10 ms |" in text
        assert "| YAMNet * | 8 | 50.0% |" in text  # an encoder from a package the project does not install
        assert "| Whisper base, augmented | 25.0% (50.0%) | 75.0% (100.0%) |" in text
    finally:
        for path in written:
            path.unlink(missing_ok=True)
        os.chdir(REPO)


def test_an_ensemble_teacher_makes_pseudo_targets_from_one_cache(tiny_run, tmp_path):
    """ensemble_with: the preset's teacher and another checkpoint decode the cached clips as one; with the other's
    share 0 (and the same model on both sides, exported) the targets are the teacher's own. A partner needs the same
    tokenizer and the cache's encoder layers, and gives no token distributions."""
    from train.stages import pseudo
    config, work, _ = tiny_run
    os.chdir(work)
    try:
        exported = config.run_dir / "checkpoints" / "teacher"
        run = replace(copy_inputs(config, tmp_path / "ensemble"), ensemble_with=str(exported), ensemble_weight=0.0)
        shutil.copytree(config.run_dir / "teacher", run.run_dir / "teacher")
        shutil.rmtree(run.run_dir / "pseudo")
        with pytest.raises(SystemExit, match="no-token-targets"):
            pseudo.run(run)
        pseudo.run(run, token_targets=False)
        for split in pseudo.SPLITS:
            mine, theirs = (folder / "pseudo" / f"{split}.jsonl" for folder in (run.run_dir, config.run_dir))
            assert [json.loads(line)["caption"] for line in mine.read_text().splitlines()] == \
                [json.loads(line)["caption"] for line in theirs.read_text().splitlines()]
            assert np.allclose(np.load(run.run_dir / "pseudo" / f"{split}_embedding.npy"),
                               np.load(config.run_dir / "pseudo" / f"{split}_embedding.npy"), atol=1e-3)
        changed = eacap.load_model(exported)
        with torch.no_grad():
            changed.encoder.conv1.weight.add_(0.1)
        other = eacap.save_checkpoint(changed, tmp_path / "changed")
        shutil.rmtree(run.run_dir / "pseudo")
        with pytest.raises(SystemExit, match="cannot read this preset's cache"):
            pseudo.run(replace(run, ensemble_with=str(other)), token_targets=False)
    finally:
        os.chdir(REPO)
