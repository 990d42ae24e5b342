"""The teacher's tagger (eacap.models.yamnet): YAMNet's front-end and network, the packed memory, and a teacher with
a tagger through every path that runs a teacher (captions, checkpoints, comparison, bench)."""
import json

import numpy as np
import pytest
import torch
from conftest import CAPTIONS, tone

from eacap import CaptionTokenizer, DecodingOptions, load_model, save_checkpoint
from eacap.bench import Pipeline, run_once
from eacap.features import YamnetLogMel
from eacap.models import CaptionModel
from eacap.models.caption_model import ModelConfig
from eacap.models.presets import student_config, teacher_config
from eacap.models.yamnet import YAMNet, join_memory


@pytest.fixture(scope="module")
def tagged():
    torch.manual_seed(0)
    tokenizer = CaptionTokenizer.train(CAPTIONS)
    return CaptionModel(teacher_config(tokenizer.vocab_size, "tiny", tagger="yamnet"), tokenizer).eval()


def test_yamnet_front_end_frames_and_silence():
    frontend = YamnetLogMel()
    w = torch.zeros(2, 16000)
    w[0] = torch.from_numpy(tone(1.0, freq=1000))
    feats, frames = frontend(w, torch.tensor([16000, 8000]))
    assert feats.shape == (2, 64, 97) and frames.tolist() == [97, 47]  # 25 ms frames every 10 ms, no centring
    silence = float(np.log(YamnetLogMel.LOG_OFFSET))
    assert torch.all(feats[1, :, 47:] == silence) and feats[0].max() > 0  # a loud tone is well above silence
    # 1 kHz is 1000 HTK mel; 64 bands between 125 Hz (184.9 mel) and 7.5 kHz (2773 mel) put their centres every
    # 39.8 mel from 224.7 mel: 1000 mel falls between bands 19 and 20
    assert int(feats[0, :, 50].argmax()) in (19, 20)


def test_yamnet_is_mobilenet_v1_with_tf_same_padding():
    net = YAMNet().eval()
    # YAMNet's 3.75 M parameters less its batch norms' (folded into the convolutions' biases)
    assert sum(p.numel() for p in net.parameters()) == 3_729_481
    with torch.inference_mode():
        assert net(torch.randn(3, 1, 96, 64)).shape == (3, 521)
        assert net.layers(torch.randn(1, 1, 96, 64)).shape == (1, 1024, 3, 2)


def test_join_memory_packs_each_clips_tokens_after_its_frames():
    frames = torch.arange(8.0).view(2, 4, 1)
    tokens = 100 + torch.arange(6.0).view(2, 3, 1)
    memory, lengths = join_memory(frames, torch.tensor([2, 4]), tokens, torch.tensor([3, 1]))
    assert lengths.tolist() == [5, 5]
    assert memory[0, :5, 0].tolist() == [0, 1, 100, 101, 102] and memory[1, :5, 0].tolist() == [4, 5, 6, 7, 103]
    hidden, lengths = join_memory(frames, torch.tensor([0, 4]), tokens, torch.tensor([3, 1]))
    assert lengths.tolist() == [3, 5] and hidden[0, :3, 0].tolist() == [100, 101, 102]  # frames hidden: tokens alone


def test_a_teacher_with_a_tagger_captions_alone_and_batched_alike(tagged):
    clips = [tone(0.5, freq=300), tone(3.0, freq=800), tone(7.0, freq=2000)]
    options = DecodingOptions(3, 12)
    batched = tagged.caption_batch(clips, options)
    for clip, caption in zip(clips, batched):
        alone = tagged.caption_batch([clip], options)[0]
        assert alone.text == caption.text and abs(alone.score - caption.score) < 1e-4
    with torch.inference_mode():
        w = torch.from_numpy(clips[2])[None]
        scores, counts = tagged.tagger.scores(w, torch.tensor([w.shape[1]]))
    assert counts.tolist() == [(700 - 2 - 96) // 48 + 1] and scores.shape == (1, counts[0], 521)
    assert tagged.num_parameters() > 3_729_481  # YAMNet counts: the teacher is bigger


def test_a_teacher_with_a_tagger_round_trips_its_checkpoint(tagged, tmp_path):
    folder = save_checkpoint(tagged, tmp_path / "teacher", half=True)
    config = json.loads((folder / "config.json").read_text())["model"]
    assert config["tagger"]["kind"] == "yamnet" and ModelConfig.from_dict(config) == tagged.config
    loaded = load_model(folder)
    assert loaded.tagger is not None and loaded.config == tagged.config
    clip = tone(2.0, freq=700)
    assert loaded.caption_batch([clip])[0].text == tagged.caption_batch([clip])[0].text
    # a config whose tagger does not fit its decoder is a broken checkpoint, not a crash later
    config["tagger"]["memory_dim"] += 1
    with pytest.raises(ValueError, match="tagger's tokens are"):
        ModelConfig.from_dict(config)
    plain = teacher_config(tagged.config.decoder.vocab_size, "tiny")
    assert "tagger" not in plain.to_dict()  # checkpoints without a tagger keep their config.json as it was


def test_the_bench_times_the_tagger_with_the_encoder(tagged):
    pipeline = Pipeline.from_model("teacher", tagged)
    assert pipeline.tagger is tagged.tagger
    waveforms = torch.from_numpy(tone(2.0))[None]
    with torch.inference_mode():
        features, frame_lengths = pipeline.frontend(waveforms, torch.tensor([waveforms.shape[1]]))
        memory, lengths = pipeline.encode(waveforms, torch.tensor([waveforms.shape[1]]), features, frame_lengths)
        frames, frame_count = tagged.encode(waveforms, torch.tensor([waveforms.shape[1]]))
    assert memory.shape[1] == frames.shape[1] + 3 and int(lengths[0]) == int(frame_count[0]) + 3
    from eacap.bench import Timing
    timing = Timing()
    run_once(pipeline, waveforms, DecodingOptions(1, 5), True, timing)
    assert timing.tokens == [5] and timing.stages["encoder"][0] > 0


def test_a_student_compares_against_a_teacher_with_a_tagger(tagged, tmp_path):
    import soundfile as sf

    from eacap.compare import compare, gallery
    torch.manual_seed(1)
    student = CaptionModel(student_config(tagged.config.decoder.vocab_size, "tiny",
                                          teacher_dim=tagged.config.encoder.out_dim), tagged.tokenizer).eval()
    clips = []
    for freq in (400, 1600):
        clips.append(str(tmp_path / f"{freq}.wav"))
        sf.write(clips[-1], tone(2.0, freq=freq), 16000)
    result = gallery(clips, tagged, student, names=["low", "high"])
    assert result.matrix.shape == (2, 2) and np.isfinite(result.matrix).all()
    assert compare(clips[0], tagged, student).teacher.caption


def test_tokens_from_probabilities_and_the_frames_hidden_diagnosis():
    torch.manual_seed(0)
    tokenizer = CaptionTokenizer.train(CAPTIONS)
    config = teacher_config(tokenizer.vocab_size, "tiny", tagger="yamnet", tagger_inputs="probabilities")
    model = CaptionModel(config, tokenizer).eval()
    scores = torch.tensor([[[-30.0] * 520 + [4.0]]])
    expected = model.tagger.proj(torch.sigmoid(scores)) + model.tagger.positions.weight[:1]
    assert torch.allclose(model.tagger.tokens(scores), expected)
    with pytest.raises(ValueError, match="unknown tagger inputs"):
        teacher_config(tokenizer.vocab_size, "tiny", tagger="yamnet", tagger_inputs="embeddings")
    w = torch.from_numpy(tone(2.0))[None]
    n = torch.tensor([w.shape[1]])
    with torch.inference_mode():
        frames, frame_lengths = model.encode(w, n)
        both = model.memory(w, n, frames, frame_lengths)
        model.tagger.frames_hidden = True
        alone = model.memory(w, n, frames, frame_lengths)
    assert int(both.memory_lengths[0]) == int(frame_lengths[0]) + int(both.counts[0])
    assert int(alone.memory_lengths[0]) == int(alone.counts[0])
    assert torch.equal(alone.memory[0, : int(alone.counts[0])], both.tokens[0])


def test_a_pruned_yamnet_is_a_subnetwork_and_distils():
    from train.core.pruned_yamnet import PATCH_SAMPLES, distil, fidelity, patch_embedding, patches, prune

    torch.manual_seed(0)
    net, frontend = YAMNet().eval(), YamnetLogMel()
    x = torch.randn(2, 1, 96, 64)
    whole, kept = prune(net, 1.0)
    with torch.inference_mode():
        assert torch.allclose(whole(x), net.layers(x), atol=1e-5) and kept.tolist() == list(range(1024))
    half, kept = prune(net, 0.5)
    convs = [layer.conv for layer in half]
    assert [c.out_channels for c in convs[:3]] == [16, 16, 32] and len(kept) == 512
    assert convs[-2].groups == convs[-2].out_channels == 512   # a depthwise layer keeps its input's channels
    # the kept channels are the network's own: channel j of the pruned stem is channel kept_stem[j] of the whole
    stem = net.layers[0].conv.weight.abs().sum((1, 2, 3)).argsort(descending=True)[:16].sort().values
    with torch.inference_mode():
        assert torch.allclose(half[0](x), net.layers[0](x)[:, stem])
    with pytest.raises(ValueError, match="width"):
        prune(net, 0.0)

    # a clip shorter than a patch is one patch, padded with silence; 2.5 s every 0.96 s is two
    assert patches(frontend, torch.from_numpy(tone(0.5)), 96).shape == (1, 1, 96, 64)
    assert patches(frontend, torch.from_numpy(tone(2.5)), 96).shape == (2, 1, 96, 64)
    waves = [tone(1.5, freq=f) for f in (300, 900, 2000)]
    before = [p.clone() for p in half.parameters()]
    trained, proj = distil(net, half, kept, waves, frontend, steps=2, batch=4)
    assert not trained.training and not any(p.requires_grad for p in trained.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, trained.parameters()))   # it learned
    assert all(torch.equal(a, b) for a, b in zip(before, half.parameters()))            # from a copy
    with torch.inference_mode():
        assert patch_embedding(trained, frontend, torch.from_numpy(tone(3.0)), 48).shape == (512,)
    assert -1 <= fidelity(net, trained, proj, frontend, waves) <= 1
    whole_proj = torch.nn.Linear(1024, 1024)
    with torch.no_grad():
        whole_proj.weight.copy_(torch.eye(1024)), whole_proj.bias.zero_()
    assert fidelity(net, whole, whole_proj, frontend, waves) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="silent"):
        distil(net, half, kept, [np.zeros(32000, np.float32)], frontend, steps=1, batch=2)
    assert np.isnan(fidelity(net, trained, proj, frontend, [np.zeros(16000, np.float32)]))   # silence: no patch
    assert PATCH_SAMPLES == 15600   # 96 frames of 400 samples every 160


def test_the_report_shows_pruned_yamnet_rows():
    from train.stages.report import _pruned_rows

    assert _pruned_rows({}) == []
    share = {"all": {"n": 191, "names_all": 0.2}, "single": {"n": 111, "names_all": 0.3},
             "mix": {"n": 80, "names_all": 0.05}}
    rows = {"whole, patches every 0.96 s": {**share, "seconds_per_10s_clip": 0.0203},
            "50% of the channels, distilled": {**share, "seconds_per_10s_clip": 0.0081,
                                               "median_cosine": {"train_scenes": 0.81, "cross_source": 0.74}}}
    text = "\n".join(_pruned_rows({"pruned_yamnet": {"rows": rows, "clips": 4000}}))
    assert "4000 train and audio-only scenes" in text
    assert "| whole, patches every 0.96 s | 20.0% | 30.0% | 5.0% | 20.3 ms |  |" in text
    assert "| 50% of the channels, distilled | 20.0% | 30.0% | 5.0% | 8.1 ms | 0.81 / 0.74 |" in text
