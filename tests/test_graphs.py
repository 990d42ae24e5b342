"""The static decoding step and CUDA-graph replay (eacap.graphs).

On a CPU the capture is replaced by a stand-in that replays the captured function eagerly: everything but the
CUDA graph itself (the static step, the position counter, loading new clips into the same buffers, the cache of
captures, the fallback when a capture fails) runs and must give the captions of the ordinary eager decode. The
real graphs are tested where PyTorch sees a GPU.
"""
import warnings

import numpy as np
import pytest
import torch
from conftest import make_tiny_models, tone

import eacap
from eacap import bench, graphs
from eacap.decoding import BeamSearch, NoRepeatNgram, NoRepeatSounds, decode
from eacap.models import packed_linear
from eacap.sounds import SoundWords

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


class Replayer:
    """Stands in for a CUDA graph: `replay` runs the captured function again and writes its output where the
    captured call's output is, as a graph's replay does."""

    def __init__(self, body, out):
        self.body, self.out, self.replays = body, out, 0

    def replay(self):
        self.replays += 1
        result = self.body()
        if torch.is_tensor(result):
            self.out.copy_(result)


@pytest.fixture
def replayed(monkeypatch, recwarn):
    """Graphs 'on' for the CPU, with each capture a `Replayer`; yields the list of captures made."""
    captures = []

    def fake_capture(*bodies, device, before=None):
        made, outputs = [], []
        if before is not None:
            before()
        for body in bodies:
            outputs.append(body())
            made.append(Replayer(body, outputs[-1]))
        captures.append(made)
        return made, outputs

    monkeypatch.setattr(graphs, "enabled", lambda device: torch.is_inference_mode_enabled())
    monkeypatch.setattr(graphs, "capture", fake_capture)
    monkeypatch.setattr(graphs, "CAPTURE_AFTER", 1)
    yield captures
    assert not [w for w in recwarn if "CUDA graph" in str(w.message)]  # every capture worked


def _eager(decoder, frames, lengths, special, options, sounds=None):
    previous = graphs.enabled, graphs.compiled
    graphs.enabled = graphs.compiled = lambda device: False
    try:
        return decode(decoder, frames, lengths, special, options, sounds)
    finally:
        graphs.enabled, graphs.compiled = previous


def _keywords_model():
    teacher, student = make_tiny_models()
    vocab = student.tokenizer.tokenizer.get_vocab()
    words = [w for w in vocab if w.isalpha()][:6]
    student.sound_keywords = {"a": words[:2], "b": words[2:4], "c": words[4:6]}
    return student


@pytest.mark.parametrize("beam", [1, 3])
@pytest.mark.parametrize("ngram", [0, 1, 2, 3])
def test_static_steps_give_the_eager_captions(replayed, beam, ngram):
    student = _keywords_model()
    special, sounds = student.tokenizer.special, student.sound_words
    torch.manual_seed(beam * 10 + ngram)
    options = eacap.DecodingOptions(beam_size=beam, max_length=14, no_repeat_ngram_size=ngram)
    for lengths in (torch.tensor([6, 6, 6]), torch.tensor([6, 4, 2])):  # without and with padded clips
        frames = torch.randn(3, 6, student.config.encoder.out_dim)
        eager = _eager(student.decoder, frames, lengths, special, options, sounds)
        static = decode(student.decoder, frames, lengths, special, options, sounds)
        assert static.tokens == eager.tokens
        assert static.scores == pytest.approx(eager.scores, abs=1e-4)
    assert replayed and all(graph.replays > 0 for made in replayed for graph in made)


def test_a_capture_is_reused_for_new_clips_of_the_same_shape(replayed):
    _, student = make_tiny_models()
    special, options = student.tokenizer.special, eacap.DecodingOptions(beam_size=3, max_length=10)
    lengths = torch.tensor([5, 5])
    for seed in range(3):
        torch.manual_seed(seed)
        frames = torch.randn(2, 5, student.config.encoder.out_dim)
        assert decode(student.decoder, frames, lengths, special, options).tokens == \
            _eager(student.decoder, frames, lengths, special, options).tokens
    assert len(replayed) == 1 and all(graph.replays > 0 for graph in replayed[0])
    frames = torch.randn(4, 5, student.config.encoder.out_dim)  # another batch size: another capture
    decode(student.decoder, frames, torch.tensor([5] * 4), special, options)
    assert len(replayed) == 2


def test_captures_are_dropped_beyond_the_limit(replayed, monkeypatch):
    monkeypatch.setattr(graphs, "MAX_GRAPHS", 2)
    _, student = make_tiny_models()
    special, options = student.tokenizer.special, eacap.DecodingOptions(beam_size=2, max_length=6)
    for batch in (1, 2, 3, 1):
        decode(student.decoder, torch.randn(batch, 4, student.config.encoder.out_dim), torch.tensor([4] * batch),
               special, options)
    assert len(student.decoder.step_plan().graphs.entries) == 2
    assert len(replayed) == 4  # batch 1 was dropped, then captured again


def test_a_failed_capture_warns_once_and_decodes_eagerly(monkeypatch):
    def broken(*bodies, device, before=None):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(graphs, "enabled", lambda device: torch.is_inference_mode_enabled())
    monkeypatch.setattr(graphs, "capture", broken)
    monkeypatch.setattr(graphs, "CAPTURE_AFTER", 1)
    _, student = make_tiny_models()
    special, options = student.tokenizer.special, eacap.DecodingOptions(beam_size=3, max_length=8)
    frames, lengths = torch.randn(2, 5, student.config.encoder.out_dim), torch.tensor([5, 3])
    with pytest.warns(UserWarning, match="capturing a decoding step as a CUDA graph failed.*runs eagerly"):
        first = decode(student.decoder, frames, lengths, special, options)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning for the same shapes
        second = decode(student.decoder, frames, lengths, special, options)
    assert first.tokens == second.tokens == _eager(student.decoder, frames, lengths, special, options).tokens


def test_fixed_length_steps_are_the_same_static(replayed):
    _, student = make_tiny_models()
    special = student.tokenizer.special
    options = eacap.DecodingOptions(beam_size=3, max_length=9)
    fixed = bench.FixedLengthDecoder(student.decoder, 9, special["eos"])
    frames, lengths = torch.randn(1, 5, student.config.encoder.out_dim), torch.tensor([5])
    static = decode(fixed, frames, lengths, special, options)
    assert static.tokens == _eager(fixed, frames, lengths, special, options).tokens
    assert all(len(t) == 8 for t in static.tokens)  # 9 tokens with </s>: every caption runs every step


def test_static_filters_match_the_sliced_ones():
    torch.manual_seed(0)
    history = torch.randint(4, 9, (5, 12))  # few distinct tokens: many repeats
    for n in (1, 2, 3, 4):
        rule = NoRepeatNgram(n)
        for t in range(13):
            written = history.clone()
            written[:, t:] = 0  # positions not yet written hold <pad> (0 here)
            sliced = rule(torch.zeros(5, 10), written, t)
            static = rule(torch.zeros(5, 10), written, torch.tensor([t]))
            assert torch.equal(sliced, static), (n, t)
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "dog": 4, "barks": 5, "and": 6, "bird": 7, "sings": 8}
    rule = NoRepeatSounds(SoundWords.build(vocab, {"dog": ["dog", "barks"], "bird": ["bird"]}), "cpu")
    for t in range(13):
        written = history.clone()
        written[:, t:] = 0
        assert torch.equal(rule(torch.zeros(5, 9), written, t), rule(torch.zeros(5, 9), written, torch.tensor([t])))


def test_static_beam_search_runs_without_reading_back(replayed, monkeypatch):
    """Nothing in a static step may read a tensor back to the host (a capture would fail on it)."""
    _, student = make_tiny_models()
    special, options = student.tokenizer.special, eacap.DecodingOptions(beam_size=3, max_length=8)
    with torch.inference_mode():
        search = BeamSearch(student.decoder, torch.randn(2, 5, student.config.encoder.out_dim),
                            torch.tensor([5, 5]), special, options, None, static=True)

    def refuse(*args, **kwargs):
        raise AssertionError("a static step read a tensor back")

    position = torch.zeros(1, dtype=torch.long)
    with torch.inference_mode():
        monkeypatch.setattr(torch.Tensor, "__bool__", refuse)
        monkeypatch.setattr(torch.Tensor, "item", refuse)
        monkeypatch.setattr(torch.Tensor, "tolist", refuse)
        for _ in range(options.max_length):
            search.step(position)
            position += 1
        monkeypatch.undo()
    assert len(search.result().tokens) == 2


@needs_cuda
def test_cuda_graphs_give_the_eager_gpu_captions(tiny_checkpoints, monkeypatch):
    teacher, student = tiny_checkpoints
    clips = [tone(1.0, freq=f) for f in (220, 440, 880)] + [np.random.default_rng(0).standard_normal(24000)
                                                            .astype(np.float32) * 0.1]
    for path in (teacher, student):
        model = eacap.load_model(path, device="cuda")
        graphed = [(c.text, c.score) for c in model.caption_batch(clips)]
        again = [(c.text, c.score) for c in model.caption_batch(clips)]   # replayed, not captured
        monkeypatch.setattr(graphs, "ENABLED", False)
        eager = [(c.text, c.score) for c in model.caption_batch(clips)]
        monkeypatch.undo()
        assert graphed == again
        assert [t for t, _ in graphed] == [t for t, _ in eager]
        assert [s for _, s in graphed] == pytest.approx([s for _, s in eager], abs=1e-3)


def test_graphed_call_copies_each_input_in_and_each_output_out(replayed):
    calls = []

    def network(x):
        calls.append(x.shape)
        return x * 2 + 1

    graphed = graphs.GraphedCall(network)
    with torch.inference_mode():
        a, b = torch.randn(2, 3), torch.randn(2, 3)
        out_a = graphed(a)
        out_b = graphed(b)
        assert torch.equal(out_a, a * 2 + 1) and torch.equal(out_b, b * 2 + 1)  # the first result is kept
        graphed(torch.randn(4, 3))
    assert len(replayed) == 2
    assert torch.equal(graphed(a), a * 2 + 1)  # outside inference mode (training): the function itself


def test_a_signature_is_captured_on_its_second_call(replayed, monkeypatch):
    monkeypatch.setattr(graphs, "CAPTURE_AFTER", 2)
    graphed = graphs.GraphedCall(lambda x: x + 1)
    with torch.inference_mode():
        x = torch.zeros(3)
        assert torch.equal(graphed(x), x + 1) and not replayed   # first call: eager
        assert torch.equal(graphed(x), x + 1) and len(replayed) == 1
        graphed(torch.zeros(5))
        assert len(replayed) == 1


# -- compiled steps on a CPU ------------------------------------------------------------------------------------

@pytest.fixture
def compiling(monkeypatch, recwarn):
    """Compiled CPU steps on, from a call signature's first use; yields nothing, checks no compile failed."""
    monkeypatch.setattr(graphs, "COMPILE", True)
    monkeypatch.setattr(graphs, "CAPTURE_AFTER", 1)
    if not graphs._compiler_found():
        pytest.skip("no C++ compiler")
    yield
    graphs.wait()
    assert not [w for w in recwarn if "compiling" in str(w.message)]  # every compile worked


def _compiled_entries(decoder):
    return list(decoder.step_plan().graphs.entries.values())


@pytest.mark.parametrize("beam", [1, 3])
def test_compiled_steps_give_the_eager_captions(compiling, beam):
    student = _keywords_model()
    special, sounds = student.tokenizer.special, student.sound_words
    options = eacap.DecodingOptions(beam_size=beam, max_length=13)  # not a whole number of calls
    torch.manual_seed(beam)
    frames, lengths = torch.randn(3, 8, student.config.encoder.out_dim), torch.tensor([8, 4, 2])
    eager = _eager(student.decoder, frames, lengths, special, options, sounds)
    first = decode(student.decoder, frames, lengths, special, options, sounds)  # eager while the compile runs
    graphs.wait()
    [entry] = _compiled_entries(student.decoder)
    assert entry.compiled is not None and entry.search.history.shape[1] == 14  # an even number of steps
    # The same compiled code for new clips, with as many frames or more or fewer (a variable in the compiled code)
    for count in (8, 6, 11, 8):  # 3 clips x 2 heads x 6 frames > width 32: the projected cross-attention each time
        compiled = decode(student.decoder, frames, lengths, special, options, sounds)
        assert first.tokens == compiled.tokens == eager.tokens
        assert compiled.scores == pytest.approx(eager.scores, abs=1e-4)
        frames, lengths = torch.randn(3, count, student.config.encoder.out_dim), torch.tensor([count, count - 1, 2])
        eager = first = _eager(student.decoder, frames, lengths, special, options, sounds)
    assert len(_compiled_entries(student.decoder)) == 1


def test_compiled_fixed_length_steps(compiling):
    _, student = make_tiny_models()
    special = student.tokenizer.special
    options = eacap.DecodingOptions(beam_size=3, max_length=10)
    fixed = bench.FixedLengthDecoder(student.decoder, 10, special["eos"])
    frames, lengths = torch.randn(1, 5, student.config.encoder.out_dim), torch.tensor([5])
    decode(fixed, frames, lengths, special, options)
    graphs.wait()
    compiled = decode(fixed, frames, lengths, special, options)
    assert compiled.tokens == _eager(fixed, frames, lengths, special, options).tokens
    assert all(len(t) == 9 for t in compiled.tokens)
    # The compiled code calls the library for bare products and adds the biases in its own loops: no addmm, whose
    # library call copies the bias into the output through more ATen calls on every call
    [entry] = _compiled_entries(student.decoder)
    with torch.inference_mode():
        entry.start(fixed, frames, lengths)
        with torch.profiler.profile() as trace:
            entry.compiled(entry.position)
    calls = {event.name for event in trace.events()}
    assert not calls & {"aten::addmm", "aten::baddbmm", "aten::copy_", "aten::expand"}, calls


@pytest.mark.skipif(not packed_linear.PREPACK, reason="this torch build has no fbgemm")
@pytest.mark.parametrize("way", ["packed", "serial"])
def test_compiled_steps_call_the_packed_products_and_give_the_eager_captions(compiling, monkeypatch, way):
    """A float16-stored model's products taken the packed ways (`packed_linear.PackedLinear`, where timing on the
    machine picks them) inside compiled steps: through the custom operator, the captions of eager steps."""
    if way == "serial" and not packed_linear.SERIAL:
        pytest.skip("this torch has no serial fbgemm product")
    monkeypatch.setattr(packed_linear, "PRODUCTS", way)
    student = _keywords_model()
    with torch.no_grad():
        for parameter in student.parameters():
            parameter.copy_(parameter.half().float())
    special, sounds = student.tokenizer.special, student.sound_words
    options = eacap.DecodingOptions(beam_size=3, max_length=10)
    torch.manual_seed(5)
    frames, lengths = torch.randn(2, 8, student.config.encoder.out_dim), torch.tensor([8, 5])
    eager = _eager(student.decoder, frames, lengths, special, options, sounds)
    decode(student.decoder, frames, lengths, special, options, sounds)
    graphs.wait()
    [entry] = _compiled_entries(student.decoder)
    compiled = decode(student.decoder, frames, lengths, special, options, sounds)
    assert compiled.tokens == eager.tokens and compiled.scores == pytest.approx(eager.scores, abs=1e-4)
    with torch.inference_mode():
        entry.start(student.decoder, frames, lengths)
        with torch.profiler.profile() as trace:
            entry.compiled(entry.position)
    calls = [event.name for event in trace.events()]
    assert "eacap::linear_fp16" in calls and "aten::mm" not in calls


def test_a_failed_compile_warns_once_and_decodes_eagerly(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no working C++ compiler")

    monkeypatch.setattr(graphs, "COMPILE", True)
    monkeypatch.setattr(graphs, "CAPTURE_AFTER", 1)
    monkeypatch.setattr(graphs, "_compiler_found", lambda: True)
    monkeypatch.setattr(torch, "compile", broken)
    _, student = make_tiny_models()
    special, options = student.tokenizer.special, eacap.DecodingOptions(beam_size=3, max_length=8)
    frames, lengths = torch.randn(2, 5, student.config.encoder.out_dim), torch.tensor([5, 3])
    with pytest.warns(UserWarning, match="compiling a decoding step failed.*no working C.. compiler.*runs eagerly"):
        first = decode(student.decoder, frames, lengths, special, options)
        graphs.wait()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning, no second try
        second = decode(student.decoder, frames, lengths, special, options)
    assert first.tokens == second.tokens == _eager(student.decoder, frames, lengths, special, options).tokens


def test_nothing_compiles_without_a_compiler_or_when_off(monkeypatch):
    with torch.inference_mode():
        monkeypatch.setattr(graphs, "COMPILE", True)
        monkeypatch.setattr(graphs, "_compiler_found", lambda: False)
        assert not graphs.compiled(torch.device("cpu"))
        monkeypatch.setattr(graphs, "_compiler_found", lambda: True)
        assert graphs.compiled(torch.device("cpu"))
        monkeypatch.setattr(graphs, "COMPILE", False)
        assert not graphs.compiled(torch.device("cpu"))
    monkeypatch.setattr(graphs, "COMPILE", True)
    assert not graphs.compiled(torch.device("cpu"))  # training: never


def test_compiling_is_on_in_long_running_processes_unless_turned_off(monkeypatch):
    monkeypatch.setattr(graphs, "COMPILE", False)
    monkeypatch.setattr(graphs, "_COMPILE_SETTING", "0")
    graphs.long_running()
    assert not graphs.COMPILE   # EACAP_COMPILE=0 wins
    monkeypatch.setattr(graphs, "_COMPILE_SETTING", "auto")
    graphs.long_running()
    assert graphs.COMPILE
