"""Model shapes, tokenizer, decoding and the checkpoint format (tiny random models, built in temp folders)."""
import json
import shutil

import pytest
import torch
from conftest import CAPTIONS, make_tiny_models, tone

from eacap import CaptionTokenizer, CheckpointError, DecodingOptions, graphs, load_model, save_checkpoint
from eacap.decoding import decode
from eacap.models import CaptionModel, packed_linear, tracing
from eacap.models.presets import student_config, teacher_config


@pytest.mark.parametrize("seconds", [1.0, 7.3, 30.0])
def test_full_size_encoder_shapes(seconds):
    n = int(seconds * 16000)
    for config, rate in ((teacher_config(500), 50), (student_config(500), 16000 / 160 / 32)):
        model = CaptionModel(config).eval()
        with torch.inference_mode():
            frames, lengths = model.encode(torch.zeros(1, n) + 0.01 * torch.randn(1, n), torch.tensor([n]))
        assert frames.shape[0] == 1 and frames.shape[2] == config.encoder.out_dim
        assert frames.shape[1] == int(lengths[0])
        assert abs(frames.shape[1] - seconds * rate) <= 2  # 50 frames/s teacher, ~3.1 frames/s student


def test_teacher_encoder_has_whisper_tiny_layout():
    """Same parameter names and shapes as transformers' Whisper tiny.en encoder, so its weights load as they are."""
    transformers = pytest.importorskip("transformers")
    config = transformers.WhisperConfig(vocab_size=51864, num_mel_bins=80, encoder_layers=4, encoder_attention_heads=6,
                                        decoder_layers=4, decoder_attention_heads=6, d_model=384, encoder_ffn_dim=1536,
                                        decoder_ffn_dim=1536, max_source_positions=1500)
    reference = transformers.models.whisper.modeling_whisper.WhisperEncoder(config).state_dict()
    ours = CaptionModel(teacher_config(1000)).encoder.state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in reference.items()}


def test_parameter_budget():
    """The shipped sizes: the student has at most 1/5 of the teacher's parameters."""
    teacher, student = CaptionModel(teacher_config(1000)), CaptionModel(student_config(1000))
    assert student.num_parameters() * 5 <= teacher.num_parameters()


@pytest.mark.parametrize("size", ["tiny", "full"])
def test_encoders_run_as_a_trace_built_once_with_the_eager_numbers(size, monkeypatch):
    """At inference both encoders run as a TorchScript trace of their first input, which then serves any batch and
    length with exactly the eager numbers; where tracing fails the eager module runs, with a warning."""
    import copy
    torch.manual_seed(0)
    for config in (teacher_config(50, size), student_config(50, size)):
        traced = CaptionModel(config).eval()
        eager = copy.deepcopy(traced)
        with torch.inference_mode():
            for batch, seconds in [(1, 10.0), (3, 2.0), (1, 0.5), (5, 3.3), (1, 1.0)]:
                n = int(seconds * 16000)
                audio = 0.1 * torch.randn(batch, n)
                monkeypatch.setattr(tracing, "TRACE", True)
                a, la = traced.encode(audio, torch.full((batch,), n))
                monkeypatch.setattr(tracing, "TRACE", False)
                b, lb = eager.encode(audio, torch.full((batch,), n))
                assert torch.equal(a, b) and torch.equal(la, lb), (config.name, batch, seconds)
        caches = [v[1] for k, v in traced.encoder.__dict__.items() if k.startswith("_traced_cache")]
        assert caches and all(isinstance(c, tracing.FusedTrace) for c in caches)
        assert all(isinstance(c.traced, torch.jit.ScriptModule) and not c.fused.entries for c in caches)
        assert not any(isinstance(v[1], (torch.jit.ScriptModule, tracing.FusedTrace))
                       for k, v in eager.encoder.__dict__.items() if k.startswith("_traced_cache"))

    def broken(*args, **kwargs):
        raise RuntimeError("no TorchScript here")
    monkeypatch.setattr(torch.jit, "trace", broken)
    monkeypatch.setattr(tracing, "TRACE", True)
    model = CaptionModel(student_config(50, "tiny")).eval()
    with torch.inference_mode(), pytest.warns(UserWarning, match="tracing of .* failed .* running it eagerly"):
        frames, _ = model.encode(torch.randn(2, 16000), torch.full((2,), 16000))
    assert frames.shape[0] == 2 and torch.isfinite(frames).all()


def _fused_traces(model) -> list:
    return [v[1] for k, v in model.encoder.__dict__.items() if k.startswith("_traced_cache")]


@pytest.mark.parametrize("size", ["tiny", "full"])
def test_a_shape_seen_twice_runs_from_a_fused_copy_with_the_traced_numbers(size, monkeypatch):
    """On a CPU an encoder input shape seen a second time runs from a frozen, oneDNN-fused copy of the trace, its
    own per shape, built in the background: the numbers agree with the eager encoder to float rounding, and other
    shapes keep the plain trace until they come back."""
    monkeypatch.setattr(tracing, "FUSE", True)
    torch.manual_seed(0)
    for config in (teacher_config(50, size), student_config(50, size)):
        model = CaptionModel(config).eval()
        with torch.inference_mode():
            audio, other = 0.1 * torch.randn(1, 48000), 0.1 * torch.randn(1, 40000)
            lengths, other_lengths = torch.tensor([48000]), torch.tensor([40000])
            plain, _ = model.encode(audio, lengths)
            (fused_trace,) = _fused_traces(model)
            assert not fused_trace.fused.entries
            runs = [model.encode(audio, lengths)[0]]   # the second sighting: built in the background meanwhile
            graphs.wait()
            assert len(fused_trace.fused.entries) == 1
            runs += [model.encode(audio, lengths)[0] for _ in range(2)]
            model.encode(other, other_lengths)                               # a new shape: the plain trace
            assert len(fused_trace.fused.entries) == 1
            tracing_was = tracing.TRACE
            try:
                tracing.TRACE = False
                eager, _ = model.encode(audio, lengths)
            finally:
                tracing.TRACE = tracing_was
        scale = eager.abs().max()
        for frames in [plain] + runs:
            assert frames.shape == eager.shape
            assert (frames - eager).abs().max() <= 1e-4 * scale, config.name
        assert torch.equal(runs[1], runs[2])   # a fused copy is deterministic


def test_fused_shapes_are_capped_and_never_replaced(monkeypatch):
    """A dropped fused copy would keep its memory, so only the first `MAX_FUSED` shapes seen twice are fused; later
    shapes run the plain trace, with the same numbers as the eager encoder."""
    monkeypatch.setattr(tracing, "MAX_FUSED", 2)
    monkeypatch.setattr(tracing, "FUSE", True)
    torch.manual_seed(0)
    model = CaptionModel(student_config(50, "tiny")).eval()
    with torch.inference_mode():
        for n in (16000, 24000, 32000, 16000):
            audio = 0.1 * torch.randn(1, n)
            for _ in range(2):
                frames, _ = model.encode(audio, torch.tensor([n]))
            graphs.wait()
        monkeypatch.setattr(tracing, "TRACE", False)
        eager, _ = model.encode(audio, torch.tensor([n]))
    (fused_trace,) = _fused_traces(model)
    # the input's last dimension is its log-mel frame count: the first two shapes are fused, the third is not
    assert sorted(key[0][-1] for key in fused_trace.fused.entries) == [16000 // 160 + 1, 24000 // 160 + 1]
    assert (frames - eager).abs().max() <= 1e-4 * eager.abs().max()

    # Inputs over the size limit are never fused (a fused copy's memory grows with its input)
    monkeypatch.setattr(tracing, "MAX_FUSED", 8)
    monkeypatch.setattr(tracing, "TRACE", True)
    monkeypatch.setattr(tracing, "MAX_FUSED_ELEMENTS", 64 * 150)
    with torch.inference_mode():
        for _ in range(3):
            model.encode(0.1 * torch.randn(1, 32000), torch.tensor([32000]))   # 64 x 201 log-mel values
            graphs.wait()
    assert len(fused_trace.fused.entries) == 2


def test_fusing_that_fails_warns_once_and_keeps_the_plain_trace(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no freezing here")
    monkeypatch.setattr(torch.jit, "freeze", broken)
    monkeypatch.setattr(tracing, "FUSE", True)
    model = CaptionModel(student_config(50, "tiny")).eval()
    audio, lengths = 0.1 * torch.randn(1, 32000), torch.tensor([32000])
    with torch.inference_mode():
        first, _ = model.encode(audio, lengths)
        with pytest.warns(UserWarning, match="fusing .* with oneDNN failed .* the plain trace runs instead"):
            second, _ = model.encode(audio, lengths)
            graphs.wait()
        third, _ = model.encode(audio, lengths)
    assert torch.equal(first, second) and torch.equal(first, third)
    (fused_trace,) = _fused_traces(model)
    assert not fused_trace.fused.entries and len(fused_trace.fused.failed) == 1


def test_fusing_is_on_in_long_running_processes_unless_turned_off(monkeypatch):
    """Like compiled decoding steps, fused traces are built only in processes that say they run long (the app, live
    captions, the bench); EACAP_FUSE=0 keeps the plain traces there too."""
    def fused_shapes(model) -> int:
        with torch.inference_mode():
            for _ in range(3):
                model.encode(0.1 * torch.randn(1, 32000), torch.tensor([32000]))
                graphs.wait()
        return len(_fused_traces(model)[0].fused.entries)

    for setting, after in (("auto", 1), ("0", 0), ("1", 1)):
        monkeypatch.setattr(tracing, "_FUSE_SETTING", setting)
        monkeypatch.setattr(tracing, "FUSE", setting == "1")
        monkeypatch.setattr(graphs, "_COMPILE_SETTING", "0")
        assert fused_shapes(CaptionModel(student_config(50, "tiny")).eval()) == (setting == "1")
        graphs.long_running()
        assert fused_shapes(CaptionModel(student_config(50, "tiny")).eval()) == after


def test_student_inference_network_is_the_training_graph_folded():
    """Under inference mode the student CNN runs with BatchNorm folded into its convolutions: same outputs, rebuilt
    when the weights change (validation during training), never saved."""
    torch.manual_seed(0)
    model = CaptionModel(student_config(50))
    model.train()
    for _ in range(2):  # give BatchNorm non-trivial running statistics
        model.encoder(torch.randn(4, 64, 300), torch.full((4,), 300))
    model.eval()
    x, lengths = torch.randn(6, 64, 301), torch.tensor([301, 301, 250, 301, 120, 301])
    reference, _ = model.encoder(x, lengths)  # grad enabled: the training graph in eval mode
    with torch.inference_mode():
        fast, fast_lengths = model.encoder(x, lengths)
        assert not any("BatchNorm" in type(m).__name__ for m in model.encoder.inference_network().modules())
    assert torch.allclose(fast, reference, atol=1e-4)
    assert torch.equal(fast_lengths, model.encoder.output_lengths(lengths))
    with torch.no_grad():
        model.encoder.head[0].weight.mul_(2.0)  # an optimiser step would do the same: a new version of the weight
    changed, _ = model.encoder(x, lengths)
    with torch.inference_mode():
        assert torch.allclose(model.encoder(x, lengths)[0], changed, atol=1e-4)
    assert not any("inference" in key or "cache" in key for key in model.state_dict())


def test_batch_padding_does_not_change_results():
    teacher, student = make_tiny_models()
    long, short = tone(3.0, freq=300), tone(1.2, freq=900)
    for model in (teacher, student):
        batched = model.caption_batch([long, short], DecodingOptions(beam_size=2, max_length=8))
        alone = model.caption_batch([short], DecodingOptions(beam_size=2, max_length=8))
        assert batched[1].tokens == alone[0].tokens


def test_tokenizer_round_trip(tmp_path):
    tokenizer = CaptionTokenizer.train(CAPTIONS)
    ids = tokenizer.encode("A dog barks, twice!")
    assert ids[0] == tokenizer.bos_id and ids[-1] == tokenizer.eos_id and tokenizer.unk_id not in ids
    assert tokenizer.decode(ids) == "a dog barks twice"
    assert tokenizer.encode("a zebra")[2] == tokenizer.unk_id
    tokenizer.save(tmp_path / "tokenizer.json")
    again = CaptionTokenizer.from_file(tmp_path / "tokenizer.json")
    assert again.encode("rain falls loudly") == tokenizer.encode("rain falls loudly")


def sequence_logprob(model, waveform, tokens):
    """Length-normalised log-probability of a caption under teacher forcing (</s> included)."""
    special = model.tokenizer.special
    ids = torch.tensor([[special["bos"], *tokens, special["eos"]]])
    w = torch.from_numpy(waveform)[None]
    with torch.inference_mode():
        logp = model(w, torch.tensor([w.shape[1]]), ids[:, :-1]).log_softmax(-1)
    return float(logp[0].gather(1, ids[0, 1:, None]).sum()) / (len(tokens) + 1)


def _round_to_half(model):
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())


@pytest.mark.skipif(not packed_linear.PREPACK, reason="this torch build has no fbgemm")
def test_prepacked_linear_is_nn_linear_at_inference(monkeypatch):
    """fp16-exact weights (every shipped checkpoint) run through the prepacked GEMM under inference: same numbers,
    same state dict; fp32 weights, training and autograd take the plain path; the pack follows weight changes."""
    monkeypatch.setattr(packed_linear, "PACKED_MIN_WEIGHTS", 0)  # pack even this small test layer
    torch.manual_seed(0)
    layer = packed_linear.Linear(48, 96).eval()
    x = torch.randn(3, 1, 48)
    reference = layer(x)  # grad enabled: plain F.linear
    with torch.inference_mode():
        assert torch.equal(layer(x), reference)  # fp32 weights: not fp16-exact, so the plain path, bit for bit
        assert layer.__dict__["_packed_cache"][1] is None
    _round_to_half(layer)
    reference = layer(x)
    reference.sum().backward()  # autograd still works (plain path)
    assert layer.weight.grad is not None
    with torch.inference_mode():
        packed = layer(x)
        assert layer.__dict__["_packed_cache"][1] is not None
    assert torch.allclose(packed, reference, atol=1e-5) and packed.shape == reference.shape
    with torch.no_grad():
        layer.weight.mul_(2.0)  # a new version of the weight: the pack is rebuilt
    with torch.inference_mode():
        assert torch.allclose(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias), atol=1e-5)
    assert set(layer.state_dict()) == {"weight", "bias"}


def test_small_weights_take_the_plain_gemm():
    """Weights of at most PACKED_MIN_WEIGHTS elements are not packed (the plain GEMM is faster for them), so the
    result is exactly F.linear's."""
    layer = packed_linear.Linear(64, 64).eval()
    _round_to_half(layer)
    x = torch.randn(3, 64)
    with torch.inference_mode():
        assert torch.equal(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias))
        assert layer.__dict__["_packed_cache"][1] is None
    assert packed_linear.prepack(torch.zeros(packed_linear.PACKED_MIN_WEIGHTS // 8, 8)) is None


def test_unpacked_step_weights_multiply_transposed_and_equal_f_linear():
    """`PackedLinear` with a small weight multiplies by its transpose, kept contiguous: F.linear's result to float
    rounding, with or without a bias, and F.linear itself when gradients are on or the input is not a matrix."""
    weight, bias, x = torch.randn(48, 32), torch.randn(48), torch.randn(3, 32)
    for b in (bias, None):
        layer = packed_linear.PackedLinear(weight, b)
        assert layer.packed is None and layer.weight_t.is_contiguous() and layer.weight_t.shape == (32, 48)
        with torch.inference_mode():
            assert torch.allclose(layer(x), torch.nn.functional.linear(x, weight, b), atol=1e-5)
            assert layer(x[None]).shape == (1, 3, 48)
        assert torch.equal(layer(x), torch.nn.functional.linear(x, weight, b))  # grad mode: F.linear



@pytest.mark.skipif(not packed_linear.PREPACK, reason="this torch build has no fbgemm")
def test_step_products_are_timed_every_way_and_each_keeps_one(monkeypatch):
    """`choose_products` times every way a step's product may run at a number of rows and keeps one for eager and
    one for compiled calls; every way gives F.linear's numbers; rows beyond PACKED_MAX_ROWS and weights that are not
    float16-exact (one way only) are not timed; EACAP_PRODUCTS forces a way."""
    torch.manual_seed(0)
    exact = [packed_linear.PackedLinear(torch.randn(out, 32).half().float(), torch.randn(out).half().float())
             for out in (48, 96)]
    inexact = packed_linear.PackedLinear(torch.randn(48, 32), torch.randn(48))
    assert inexact.ways() == ["plain"]
    assert exact[0].ways() == ["plain", "packed"] + (["serial"] if packed_linear.SERIAL else [])
    packed_linear.choose_products(exact + [inexact], 3, rounds=4)
    packed_linear.choose_products(exact, packed_linear.PACKED_MAX_ROWS + 1, rounds=4)
    assert inexact.chosen == {}
    x = torch.randn(3, 32)
    for linear in exact:
        assert set(linear.chosen) == {3} and set(linear.chosen[3]) <= set(linear.ways())
        with torch.inference_mode():
            assert linear.way(x) == linear.chosen[3][0]
            for way in linear.ways():
                expected = torch.nn.functional.linear(x, linear.weight, linear.bias)
                assert torch.allclose(linear.product(x, way), expected, atol=1e-5), way
                if way != "plain":   # the operator's serial product leaves the bias to its caller
                    bias = linear.bias if way == "serial" else 0
                    assert torch.allclose(torch.ops.eacap.linear_fp16(x, linear.key, way == "serial") + bias,
                                          expected, atol=1e-5)
    for way in packed_linear.WAYS:
        monkeypatch.setattr(packed_linear, "PRODUCTS", way)
        with torch.inference_mode():
            assert exact[0].way(x) == (way if way in exact[0].ways() else "plain") and inexact.way(x) == "plain"
        assert exact[0].way(x) == "plain"   # autograd on: the plain product
    assert packed_linear.products_setting("serial") == "serial"
    with pytest.warns(UserWarning, match="EACAP_PRODUCTS='fast' is not one of auto, plain, packed, serial"):
        assert packed_linear.products_setting("fast") == "auto"


@pytest.mark.skipif(not packed_linear.PREPACK, reason="this torch build has no fbgemm")
def test_prepacked_decoding_gives_the_same_captions(monkeypatch):
    """A float16-stored model decodes to the same tokens and scores with and without the prepacked path."""
    monkeypatch.setattr(packed_linear, "PACKED_MIN_WEIGHTS", 0)  # the tiny models' weights are all small
    teacher, student = make_tiny_models(0)
    clips = [tone(2.0, freq=300), tone(1.2, freq=700)]
    for model in (teacher, student):
        _round_to_half(model)
        fast_captions = model.caption_batch(clips, DecodingOptions(beam_size=3, max_length=12))
        plan = model.decoder.__dict__["_step_plan"][1]  # decoding steps go through the packed weights
        assert plan.layers[0].qkv.packed is not None and plan.logits.packed is not None
        monkeypatch.setattr(packed_linear, "PREPACK", False)
        plain = model.caption_batch(clips, DecodingOptions(beam_size=3, max_length=12))
        monkeypatch.setattr(packed_linear, "PREPACK", True)
        assert [c.tokens for c in fast_captions] == [c.tokens for c in plain]
        assert [c.score for c in fast_captions] == pytest.approx([c.score for c in plain], abs=1e-4)


@pytest.mark.parametrize("packed", [False, True])
# clips x heads x frames <= width: absorbed cross-attention; above: projected
@pytest.mark.parametrize("frames", [4, 40])
def test_decoding_step_matches_teacher_forcing(packed, frames, monkeypatch):
    """`step` (fused q/k/v, a clip's hypotheses sharing its memory, stacked self-attention cache, reordering, both
    cross-attention forms) gives the logits teacher-forced `forward` gives for the same prefixes, with padded clips
    of different lengths."""
    from eacap.models.decoder import AbsorbedCross, ProjectedCross
    teacher, student = make_tiny_models(1)
    monkeypatch.setattr(packed_linear, "PREPACK", packed and packed_linear.PREPACK)
    monkeypatch.setattr(packed_linear, "PACKED_MIN_WEIGHTS", 0)
    for model in (teacher, student):
        if packed:
            _round_to_half(model)
        decoder, group, length = model.decoder, 3, 7
        memory = torch.randn(2, frames, model.config.encoder.out_dim)
        lengths = torch.tensor([frames, frames // 2 + 1])  # the second clip padded
        tokens = torch.randint(4, model.tokenizer.vocab_size, (2 * group, length))
        with torch.inference_mode():
            expected = decoder(tokens, memory.repeat_interleave(group, 0), lengths.repeat_interleave(group))
            state = decoder.start(memory, lengths, group=group)
            absorbed = 2 * decoder.config.heads * frames <= decoder.config.width
            assert isinstance(state.cross[0], AbsorbedCross if absorbed else ProjectedCross)
            order = torch.arange(2 * group)
            for position in range(length):
                logits = decoder.step(tokens[order, position: position + 1], position, state)
                assert torch.allclose(logits, expected[order, position], atol=1e-4), position
                # shuffle hypotheses within each clip, as beam search does: their caches must follow them
                permutation = torch.cat([torch.randperm(group) + b * group for b in range(2)])
                state.reorder(permutation)
                order = order[permutation]


def test_decoding_thread_choice_keeps_the_faster_setting():
    from eacap.decoding import FasterChoice
    choice = FasterChoice((2, 1))
    times = {2: 0.004, 1: 0.001}
    while choice.chosen is None:
        threads = choice.next()
        choice.record(threads, times[threads])
    assert choice.chosen == 1 and all(len(v) == FasterChoice.TRIALS for v in choice.samples.values())
    assert FasterChoice((1,)).next() == 1
    _, student = make_tiny_models(0)
    before = torch.get_num_threads()
    student.caption_batch([tone(1.0)], DecodingOptions(beam_size=3, max_length=12))
    assert torch.get_num_threads() == before  # whatever the steps ran on, the caller's setting is restored


@pytest.mark.parametrize("seed", range(4))
def test_beam_search_scores_at_least_as_well_as_greedy(seed):
    teacher, student = make_tiny_models(seed)
    clip = tone(2.0, freq=200 + 100 * seed)
    for model in (teacher, student):
        greedy = model.caption_batch([clip], DecodingOptions(beam_size=1, max_length=10))[0]
        beam = model.caption_batch([clip], DecodingOptions(beam_size=4, max_length=10))[0]
        assert beam.score >= greedy.score - 1e-5
        # the scores decoding reports are the model's own teacher-forced log-probabilities
        assert sequence_logprob(model, clip, greedy.tokens) == pytest.approx(greedy.score, abs=1e-4)
        assert sequence_logprob(model, clip, beam.tokens) == pytest.approx(beam.score, abs=1e-4)


def test_decoding_options_are_validated():
    _, student = make_tiny_models()
    frames = torch.zeros(1, 4, student.config.encoder.out_dim)
    for bad in (DecodingOptions(beam_size=0), DecodingOptions(max_length=0), DecodingOptions(max_length=1000)):
        with pytest.raises(ValueError):
            decode(student.decoder, frames, torch.tensor([4]), student.tokenizer.special, bad)


def test_max_length_bounds_the_caption():
    _, student = make_tiny_models()
    for beam in (1, 3):
        caption = student.caption_batch([tone(1.0)], DecodingOptions(beam_size=beam, max_length=3))[0]
        assert len(caption.tokens) <= 2  # three generated tokens at most, the last being </s>


def test_save_load_round_trip_is_identical(tmp_path):
    teacher, student = make_tiny_models()
    clip = tone(2.5, freq=500)
    for model in (teacher, student):
        folder = save_checkpoint(model, tmp_path / model.role)
        files = ["README.md", "config.json", "model.safetensors", "tokenizer.json"]
        assert sorted(p.name for p in folder.iterdir()) == files
        loaded = load_model(folder)
        assert loaded.config == model.config
        w = torch.from_numpy(clip)[None]
        with torch.inference_mode():
            n = torch.tensor([w.shape[1]])
            assert torch.equal(model.encode(w, n)[0], loaded.encode(w, n)[0])
        a = model.caption_batch([clip], DecodingOptions(3, 10))[0]
        b = loaded.caption_batch([clip], DecodingOptions(3, 10))[0]
        assert (a.text, a.score) == (b.text, b.score)


def test_half_precision_checkpoint_is_half_the_size_and_close(tmp_path):
    teacher, _ = make_tiny_models()
    full = save_checkpoint(teacher, tmp_path / "full")
    half = save_checkpoint(teacher, tmp_path / "half", half=True)
    assert (half / "model.safetensors").stat().st_size < 0.6 * (full / "model.safetensors").stat().st_size
    loaded = load_model(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    w = torch.from_numpy(tone(2.0))[None]
    with torch.inference_mode():
        a = teacher.encode(w, torch.tensor([w.shape[1]]))[0]
        b = loaded.encode(w, torch.tensor([w.shape[1]]))[0]
    assert torch.allclose(a, b, atol=2e-2 * float(a.abs().max()))


def test_load_from_local_hub_cache_offline(tmp_path, monkeypatch):
    """A Hub id resolves through huggingface_hub's cache layout with HF_HUB_OFFLINE=1 (no network touched)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, student = make_tiny_models()
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--eacap-student"
    save_checkpoint(student, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    loaded = load_model("someone/eacap-student", cache_dir=tmp_path / "hub")
    assert loaded.config == student.config
    with pytest.raises(CheckpointError, match="not in the local cache.*HF_HUB_OFFLINE=0"):
        load_model("someone/not-there", cache_dir=tmp_path / "hub")


def test_broken_checkpoints_give_clear_errors(tmp_path):
    _, student = make_tiny_models()
    good = save_checkpoint(student, tmp_path / "good")

    def broken(name):
        folder = tmp_path / name
        shutil.copytree(good, folder)
        return folder

    with pytest.raises(CheckpointError, match="no checkpoint folder at"):
        load_model(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="not a Hub id"):
        load_model("a/b/c")

    folder = broken("truncated")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors is truncated or corrupt"):
        load_model(folder)

    folder = broken("missing")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="tokenizer.json is missing"):
        load_model(folder)

    folder = broken("badjson")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        load_model(folder)

    folder = broken("wrongconfig")  # a config that describes another architecture than the weights hold
    config = json.loads((folder / "config.json").read_text())
    config["model"]["decoder"]["layers"] = 3
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not match .*config.json.*missing: decoder.layers.1"):
        load_model(folder)

    folder = broken("version")
    config = json.loads((folder / "config.json").read_text())
    config["format_version"] = 99
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="format version 99"):
        load_model(folder)

    folder = broken("badkind")
    config = json.loads((folder / "config.json").read_text())
    config["model"]["encoder"]["kind"] = "transformer"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="unknown encoder kind 'transformer'"):
        load_model(folder)


def test_pickle_is_never_loaded(tmp_path):
    """A .bin/.pt next to the safetensors is ignored; weights come only from model.safetensors."""
    _, student = make_tiny_models()
    folder = save_checkpoint(student, tmp_path / "s")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not a real pickle")
    assert load_model(folder).config == student.config


def test_relu_variants_decode_and_encode_like_their_training_graphs():
    """The "lite" student's ReLU activations: the decoder's step matches teacher forcing and the CNN's fused inference
    network matches its training graph, as for the GELU / SiLU defaults; an unknown activation is a clear error."""
    from eacap.models.decoder import CaptionDecoder, DecoderConfig
    from eacap.models.efficientnet import EfficientNetConfig, EfficientNetEncoder, StageConfig
    torch.manual_seed(0)
    decoder = CaptionDecoder(DecoderConfig(20, memory_dim=8, width=16, layers=2, heads=2, ffn=32, dropout=0.0,
                                           activation="relu")).eval()
    memory, lengths, tokens = torch.randn(1, 5, 8), torch.tensor([5]), torch.randint(4, 20, (1, 6))
    with torch.inference_mode():
        expected = decoder(tokens, memory, lengths)
        state = decoder.start(memory, lengths)
        for position in range(6):
            assert torch.allclose(decoder.step(tokens[:, position: position + 1], position, state),
                                  expected[:, position], atol=1e-4)
    stages = (StageConfig(8, 1, 2, 3, 1), StageConfig(16, 2, 2))
    encoder = EfficientNetEncoder(EfficientNetConfig(n_mels=16, stem=8, stages=stages, out_dim=16,
                                                     activation="relu")).eval()
    features, frames = torch.randn(2, 16, 40), torch.tensor([40, 40])
    trained = encoder(features, frames)[0].detach()  # grad enabled: the training graph (BatchNorm in eval mode)
    with torch.inference_mode():
        assert torch.allclose(encoder(features, frames)[0], trained, atol=1e-4)
    assert not any(isinstance(m, torch.nn.SiLU) for m in encoder.modules())
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        CaptionDecoder(DecoderConfig(20, memory_dim=8, activation="swish"))
