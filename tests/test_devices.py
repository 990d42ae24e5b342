"""Devices end to end (eacap.devices, load_model, the CLI and the bench) and the decode loop's invariants.

What runs without a GPU is tested everywhere; the GPU paths are tested where PyTorch sees one and skipped elsewhere.
"""
import json

import numpy as np
import pytest
import torch
from conftest import make_tiny_models, tone

import eacap
from eacap import bench, cli, decoding
from eacap.decoding import NoRepeatNgram, ban, block_repeats, decode, token_mask
from eacap.devices import DeviceError, device_name, resolve_device

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


def test_resolve_device_names_and_refusals():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == resolve_device("auto") == torch.device("cuda" if CUDA else "cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(DeviceError, match="unknown device 'gpu0'.*auto, cpu, cuda"):
        resolve_device("gpu0")
    with pytest.raises(DeviceError, match="'mps' is not supported"):
        resolve_device("mps")
    if not CUDA:
        with pytest.raises(DeviceError, match="PyTorch sees no CUDA GPU.*--device cpu"):
            resolve_device("cuda")
    assert "cores" in device_name(torch.device("cpu"))


def test_load_model_device_and_half_errors(tiny_checkpoints):
    _, student = tiny_checkpoints
    model = eacap.load_model(student, device="auto")
    assert model.device == resolve_device("auto")
    with pytest.raises(eacap.CheckpointError, match="unknown device"):
        eacap.load_model(student, device="gpu0")
    with pytest.raises(eacap.CheckpointError, match="half precision needs a GPU"):
        eacap.load_model(student, device="cpu", half=True)


def test_cli_device_option(tiny_checkpoints, wav_file, capsys):
    _, student = tiny_checkpoints
    assert cli.main(["caption", wav_file, "--model", student, "--device", "cpu"]) == 0
    assert capsys.readouterr().out.startswith(wav_file)
    assert cli.main(["caption", wav_file, "--model", student, "--device", "gpu0"]) == 2
    assert "unknown device 'gpu0'" in capsys.readouterr().err
    if not CUDA:
        assert cli.main(["caption", wav_file, "--model", student, "--device", "cuda"]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err
        assert cli.main(["caption", wav_file, "--model", student, "--half"]) == 2
        assert "half precision needs a GPU" in capsys.readouterr().err


def test_bench_reports_device_and_operation_counts(tiny_checkpoints, capsys):
    teacher, student = tiny_checkpoints
    args = ["--teacher", teacher, "--student", student, "--repeats", "1", "--batch", "2", "--warmup", "1",
            "--seconds", "1", "--tokens", "4", "--no-reference", "--device", "cpu"]
    assert bench.main(args + ["--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["device"] == "cpu" and "cores" in result["device_name"] and result["half"] is False
    for m in result["models"].values():
        ops = m["aten_ops_per_caption"]
        assert min(ops["frontend"], ops["encoder"], ops["decoder"]) > 0
        assert ops["total"] == ops["frontend"] + ops["encoder"] + ops["decoder"]
    t, s = (result["models"][r]["aten_ops_per_caption"]["total"] for r in ("teacher", "student"))
    assert result["speedup"]["aten_ops"] == pytest.approx(t / s)
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    assert "device: cpu (" in out and "aten operator calls per caption" in out
    assert bench.main(args + ["--half"]) == 2
    assert "--half needs a GPU" in capsys.readouterr().err


def test_decoding_checks_for_the_end_at_any_interval_with_the_same_result(monkeypatch):
    """Steps after a clip has finished change nothing it returns, so reading 'all done' back every step (a CPU) or
    every few steps (a GPU) gives the same captions and scores."""
    teacher, student = make_tiny_models()
    frames = torch.randn(3, 5, student.config.encoder.out_dim)
    lengths = torch.tensor([5, 4, 2])
    special = student.tokenizer.special
    # One thread: with two, the steps' thread choice (`decoding.StepThreads`) alternates one and two threads while it
    # times them, so the two decodes could multiply on different thread counts, which changes the last bits
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for beam in (1, 3):
            options = eacap.DecodingOptions(beam_size=beam, max_length=12)
            every_step = decode(student.decoder, frames, lengths, special, options)
            with monkeypatch.context() as patch:
                patch.setattr(decoding, "_check_every", lambda device: 5)
                every_fifth = decode(student.decoder, frames, lengths, special, options)
            assert every_fifth.tokens == every_step.tokens and every_fifth.scores == every_step.scores
    finally:
        torch.set_num_threads(threads)


def test_no_repeat_ngram_on_a_longer_buffer_reads_only_the_written_tokens():
    history = torch.tensor([[5, 6, 5, 7, 1, 1, 1], [8, 8, 9, 8, 1, 1, 1]])  # 4 written tokens, then padding
    for n in (1, 2, 3):
        whole = block_repeats(torch.zeros(2, 12), history[:, :4], n)
        buffered = NoRepeatNgram(n)(torch.zeros(2, 12), history, 4)
        assert torch.equal(whole, buffered), n


def test_token_mask_sets_only_the_hits():
    tokens = torch.tensor([[1, 2, 2], [3, 3, 0]])
    hit = torch.tensor([[True, False, True], [False, False, False]])
    assert token_mask(tokens, hit, 4).tolist() == [[False, True, True, False], [False] * 4]


@pytest.mark.parametrize("compiling", [False, True])
def test_ban_sets_only_the_hits_and_keeps_every_other_score(compiling, monkeypatch):
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: compiling)   # the compiled steps' form
    logp = torch.randn(2, 4).log_softmax(-1)
    logp[1, 3] = float("-inf")
    tokens = torch.tensor([[1, 2, 2], [3, 3, 0]])
    hit = torch.tensor([[True, False, True], [False, True, False]])   # token 2 missed once and hit once
    out = ban(logp.clone(), tokens, hit)
    assert torch.isinf(out).tolist() == [[False, True, True, False], [False, False, False, True]]
    kept = ~torch.isinf(out)
    assert torch.equal(out[kept], logp[kept]) and bool((out[~kept] == float("-inf")).all())


def test_compiled_steps_filters_ban_exactly_what_the_eager_ones_do(monkeypatch):
    """The score filters take another form inside compiled steps (`decoding.ban`, `SoundWords.block_named`): the
    same scores, to the bit, on random histories rich in keywords and clause words, eager and static."""
    from eacap.sounds import SoundWords
    from train.corpus.manifest import load_classes

    keywords = {name: entry["keywords"] for name, entry in load_classes().items() if not name.startswith("_")}
    words = sorted({w for ks in keywords.values() for k in ks for w in k.split()} | {"while", "and", "as", "a"})
    vocab = {w: i for i, w in enumerate(["<pad>", "<s>", "</s>", "<unk>"] + words)}
    sounds = SoundWords.build(vocab, keywords)
    rules = [NoRepeatNgram(n) for n in (1, 2, 3)] + [decoding.NoRepeatSounds(sounds, "cpu")]
    generator = torch.Generator().manual_seed(0)
    for trial in range(300):
        rows, t = (int(torch.randint(low, high, (1,), generator=generator)) for low, high in ((1, 20), (1, 16)))
        pool = torch.randint(0, len(vocab), (5 if trial % 2 else len(vocab),), generator=generator)
        history = pool[torch.randint(0, len(pool), (rows, t + 2), generator=generator)]
        history[:, t:] = vocab["<pad>"]   # a static step's buffer: unwritten positions hold <pad>
        logp = torch.randn(rows, len(vocab), generator=generator).log_softmax(-1)
        for rule in rules:
            for position in (t, torch.tensor([t])):
                written = history if torch.is_tensor(position) else history[:, :t]
                monkeypatch.setattr(torch.compiler, "is_compiling", lambda: False)
                eager = rule(logp.clone(), written, position)
                monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
                compiled = rule(logp.clone(), written, position)
                assert torch.equal(eager, compiled), (trial, rule, position)
    monkeypatch.undo()


@needs_cuda
def test_gpu_captions_match_the_cpu_and_half_precision_mostly_agrees(tiny_checkpoints):
    teacher, student = tiny_checkpoints
    clips = [tone(1.0, freq=f) for f in (220, 440, 880, 1760)] + [np.random.default_rng(0).standard_normal(24000)
                                                                  .astype(np.float32) * 0.1]
    for path in (teacher, student):
        cpu = [c.text for c in eacap.load_model(path).caption_batch(clips)]
        gpu = [c.text for c in eacap.load_model(path, device="cuda").caption_batch(clips)]
        # GPU kernels sum in another order: a near-tie between two words may go the other way, rarely
        assert sum(g == c for g, c in zip(gpu, cpu)) >= len(clips) - 1
        half = eacap.load_model(path, device="cuda", half=True).caption_batch(clips)
        assert len(half) == len(clips) and all(isinstance(c.text, str) for c in half)
