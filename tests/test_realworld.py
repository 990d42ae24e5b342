"""The cross-source split: items from a held-out bank, their audio, references and scores (tiny model, tiny bank)."""
import json

import numpy as np
import pytest
import soundfile as sf
from conftest import tone

from eacap import load_model
from eacap.decoding import DecodingOptions
from eacap.metrics import repeated_classes, sound_naming
from train.core import held_out
from train.corpus.manifest import Clip, load_classes, write_manifest


@pytest.fixture
def bank(tmp_path):
    clips = []
    for i, (label, freq) in enumerate([("dog", 500), ("rain", 0), ("birds", 3000), ("dog", 700)]):
        audio = tone(2.0 + i, freq=freq) if freq else 0.05 * np.random.default_rng(i).standard_normal(16000 * 4)
        file = f"clips/{label}/{i:012x}.flac"
        (tmp_path / "clips" / label).mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / file, audio.astype(np.float32), 16000)
        clips.append(Clip(f"{i:012x}", label, file, "some-package", f"sounds/{label}{i}.ogg", "CC0",
                          len(audio) / 16000))
    write_manifest(tmp_path, clips)
    return tmp_path


def test_items_are_singles_and_mixes_of_different_classes(bank):
    items = held_out.build_items(bank, mixes=4)
    singles = [i for i in items if i["kind"] == "single"]
    mixes = [i for i in items if i["kind"] == "mix"]
    assert len(singles) == 4 and len(mixes) == 4
    assert all(len(set(m["events"])) == 2 for m in mixes)
    assert items == held_out.build_items(bank, mixes=4)  # the same split on every machine
    audio = held_out.render(mixes[0], bank)
    assert audio.dtype == np.float32 and 0 < len(audio) <= 10 * 16000 and np.abs(audio).max() <= 0.99


def test_missing_bank_says_how_to_build_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="soundbank --held-out"):
        held_out.build_items(tmp_path / "none")


def test_references_come_from_the_class_table():
    classes = load_classes()
    assert held_out.reference(["dog"], classes) == "a dog barks"
    assert held_out.reference(["dog", "rain"], classes) == "a dog barks while rain falls"


def test_evaluate_scores_every_item(bank, tiny_checkpoints):
    model = load_model(tiny_checkpoints[1])
    items = held_out.build_items(bank, mixes=2)
    result = held_out.evaluate(model, items, DecodingOptions(beam_size=1, max_length=8), bank)
    assert result["all"]["n"] == 6 and result["single"]["n"] == 4 and result["mix"]["n"] == 2
    assert [c["id"] for c in result["captions"]] == [i["id"] for i in items]
    for key in ("names_all", "repeats", "event_precision", "event_recall"):
        assert 0.0 <= result["all"][key] <= 1.0
    json.dumps(result)  # written as the results file


def test_sound_naming_and_repeats():
    keywords = {name: entry["keywords"] for name, entry in load_classes().items() if not name.startswith("_")}
    assert repeated_classes("a rain shower pours down over the sound of a rain shower pattering", keywords) == {"rain"}
    assert repeated_classes("a gust of wind howls", keywords) == set()  # two keywords, one mention
    assert repeated_classes("a dog barks while rain falls", keywords) == set()
    scores = sound_naming({"a": "a dog barks while rain falls", "b": "rain falls and later rain pours down",
                           "c": "a cow moos"},
                          {"a": {"dog", "rain"}, "b": {"rain", "thunder"}, "c": {"cow"}}, keywords)
    assert scores["names_all"] == pytest.approx(2 / 3) and scores["names_any"] == 1.0
    assert scores["repeats"] == pytest.approx(1 / 3) and scores["repeat_count"] == 1


def test_fine_tune_probe_trains_only_what_it_should(bank, monkeypatch):
    """Frozen vs fine-tuned top layer on cached lower-layer outputs (a tiny random Whisper encoder, tiny bank)."""
    import torch

    from eacap.features import TEACHER_FRONTEND, build_frontend
    from eacap.models.whisper import WhisperEncoder, WhisperEncoderConfig
    from train.stages import encoder_probe

    monkeypatch.setattr(encoder_probe, "FINE_TUNE_STEPS", 5)
    monkeypatch.setattr(encoder_probe, "AUGMENTED_COPIES", 1)
    torch.manual_seed(0)
    encoder = WhisperEncoder(WhisperEncoderConfig(width=32, layers=2, heads=2, ffn=64)).eval()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    clips = encoder_probe.clips_of(bank)
    result = encoder_probe.fine_tune_probe(encoder, build_frontend(TEACHER_FRONTEND), clips, clips, augmented=True)
    assert set(result) == {"frozen", "fine-tuned"}
    for scores in result.values():
        assert 0.0 <= scores["accuracy"] <= 1.0 and 0.0 <= scores["balanced_accuracy"] <= 1.0
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())  # the source is never trained
    outputs, labels = encoder_probe.lower_outputs(encoder, build_frontend(TEACHER_FRONTEND), clips[:2], 1, top=1)
    assert len(outputs) == 4 and labels == [clips[0][1]] * 2 + [clips[1][1]] * 2 and outputs[0].shape[1] == 32


def test_external_encoder_rows_join_the_probe_table(bank, tmp_path):
    """`encoder-probe --external`: an encoder module run by another Python (here this one) embeds the same clips in a
    subprocess; its row is scored by the same probes, marked external, and the existing rows are kept."""
    import sys

    from train.stages import encoder_probe

    module = tmp_path / "loudness.py"
    module.write_text("import numpy as np\n\ndef load():\n    return lambda wave: np.array([np.abs(wave).mean(), "
                      "np.abs(np.diff(wave)).mean(), wave.std()], dtype=np.float32)\n")
    out = tmp_path / "encoder_probe.json"
    with pytest.raises(FileNotFoundError, match="run `python -m train encoder-probe` first"):
        encoder_probe.external_main([str(module)], sys.executable, [], [], out)
    out.write_text(json.dumps({"train_clips": 0, "test_clips": 0, "classes": [], "encoders": {"kept": {}}}))
    clips = encoder_probe.clips_of(bank)
    assert encoder_probe.external_main([str(module)], sys.executable, clips, clips, out) == 0
    rows = json.loads(out.read_text())["encoders"]
    assert set(rows) == {"kept", "loudness"} and rows["loudness"]["external"] and rows["loudness"]["dim"] == 3
    assert 0.0 <= rows["loudness"]["linear"]["accuracy"] <= 1.0 and rows["loudness"]["seconds_per_clip"] > 0
    with pytest.raises(ValueError, match="external encoder 'no_such_encoder' failed"):
        encoder_probe.external_main(["no_such_encoder"], sys.executable, clips, clips, out)


def test_probe_names_sounds_top1_for_singles_top2_for_mixes():
    """`encoder-probe --ceiling`: a mix counts only when both its classes are the probe's two most probable."""
    from train.stages.encoder_probe import probe_naming

    rng = np.random.default_rng(0)
    centres = {"dog": np.array([4.0, 0, 0]), "rain": np.array([0, 4.0, 0]), "birds": np.array([0, 0, 4.0])}
    train_y = [label for label in centres for _ in range(10)]
    train_x = np.stack([centres[y] + rng.normal(0, 0.3, 3) for y in train_y])
    items = [{"kind": "single", "events": ["dog"]}, {"kind": "single", "events": ["rain"]},
             {"kind": "mix", "events": ["dog", "rain"]}, {"kind": "mix", "events": ["birds", "dog"]}]
    items_x = np.stack([centres["dog"], centres["birds"], (centres["dog"] + centres["rain"]) / 2,
                        (centres["dog"] + centres["rain"]) / 2])
    result = probe_naming(train_x, train_y, items_x, items)
    assert result["single"] == {"n": 2, "names_all": 0.5}   # the rain clip embedded as birds is missed
    assert result["mix"] == {"n": 2, "names_all": 0.5}      # dog + rain found; birds + dog not
    assert result["all"]["names_all"] == 0.5


def test_score_writes_the_results_file_and_prints_the_line(bank, tiny_checkpoints, tmp_path, capsys):
    """`held_out.score` (used by `train realworld` and, after the test split, by `train evaluate`)."""
    from dataclasses import replace

    from train.core.config import PRESETS

    config = replace(PRESETS["tiny"], run_dir=tmp_path / "run")
    model = load_model(tiny_checkpoints[1])
    result = held_out.score(config, tiny_checkpoints[1], model, DecodingOptions(beam_size=1, max_length=8), bank,
                             tag="_x", items=held_out.build_items(bank, mixes=2))
    written = list((tmp_path / "run" / "results").glob("realworld_*_x.json"))
    assert len(written) == 1 and json.loads(written[0].read_text())["all"] == result["all"]
    assert "cross-source: names every sound" in capsys.readouterr().out


def test_layer_features_keep_every_layer_and_pool_frames():
    """`encoder-probe --layers`: one pass keeps the input to the first layer, each layer's output and the encoder's
    own (normed) output, as clip means and as frames averaged over 0.4 s windows."""
    import torch

    from eacap.features import TEACHER_FRONTEND, build_frontend
    from eacap.models.whisper import WhisperEncoder, WhisperEncoderConfig
    from train.core.layer_readers import POOL, layer_features

    torch.manual_seed(0)
    encoder = WhisperEncoder(WhisperEncoderConfig(width=32, layers=2, heads=2, ffn=64)).eval()
    frontend = build_frontend(TEACHER_FRONTEND)
    wave = torch.randn(16000 * 3) * 0.1
    means, pooled = layer_features(encoder, frontend, wave)
    assert means.shape == (3, 32) and pooled.shape[:2] == (3, -(-150 // POOL)) and pooled.shape[2] == 32
    with torch.inference_mode():
        out, _ = encoder(*frontend(wave[None], torch.tensor([wave.numel()])))
    assert np.allclose(means[-1], out[0].mean(0).numpy(), atol=1e-5)   # the last row is the encoder's output
    counts = np.minimum(POOL, 150 - POOL * np.arange(pooled.shape[1]))     # the last window is shorter
    regrouped = (pooled.astype(np.float32) * counts[None, :, None]).sum(1) / 150
    assert np.allclose(regrouped, means, atol=2e-2)                   # windows average the same frames


def test_layer_readers_learn_separable_classes():
    """Both readers, trained on clips whose classes live in one layer, rank the right class first."""
    import torch

    from train.core import layer_readers as readers

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    means = rng.normal(0, 1, (60, 4, 8)).astype(np.float32)
    means[np.arange(60), 2, labels] += 4.0                       # layer 2 holds the class
    frames = np.repeat(means[:, :, None, :], 5, axis=2) + rng.normal(0, 0.1, (60, 4, 5, 8)).astype(np.float32)
    valid = np.ones((60, 5), dtype=bool)
    valid[::2, 4] = False
    target = torch.from_numpy(labels)
    weighted = readers.train_reader(readers.WeightedSum(4, 8, 3), (torch.from_numpy(means),), target, steps=300)
    assert weighted.weights().argmax().item() == 2
    reader = readers.train_reader(readers.TimeLayerReader(4, 8, 3, width=16, heads=2), tuple(
        torch.from_numpy(x) for x in (means, frames, valid)), target, steps=200)
    proba = readers.probabilities(reader, tuple(torch.from_numpy(x) for x in (means, frames, valid)))
    assert proba.shape == (60, 3) and (proba.argmax(1) == labels).mean() > 0.9
    train, test = readers.standardise(frames[:40], frames[40:])
    assert np.allclose(train.mean(axis=(0, 2)), 0, atol=1e-4)
    padded, mask = readers.pad_frames([np.zeros((4, 2, 8)), np.zeros((4, 5, 8))])
    assert padded.shape == (2, 4, 5, 8) and mask.tolist() == [[True, True, False, False, False], [True] * 5]


def test_audioset_names_map_to_classes_by_their_keywords():
    """`encoder-probe --yamnet-head`: a class takes the AudioSet classes whose names hold one of its keywords as a
    whole word, and none where no name does."""
    from train.stages.encoder_probe import audioset_mapping, naming

    labels = ["Dog", "Bark", "Barking owl", "Rain on surface", "Speech", "Thunder"]
    mapping = audioset_mapping(labels, ["dog", "rain", "camera_shutter"])
    assert mapping == {"dog": [0, 1], "rain": [3], "camera_shutter": []}
    proba = np.array([[0.9, 0.1, 0.0], [0.6, 0.3, 0.1]])
    items = [{"kind": "single", "events": ["dog"]}, {"kind": "mix", "events": ["rain", "dog"]}]
    assert naming(proba, ["dog", "rain", "camera_shutter"], items)["all"]["names_all"] == 1.0


def test_cmkd_trains_a_copy_of_the_encoder_on_class_scores():
    """`encoder-probe --cmkd`: the student's encoder learns to predict another model's class scores from its clip
    embedding; the copy changes, the encoder it came from does not."""
    import torch

    from eacap.features import STUDENT_FRONTEND, build_frontend
    from eacap.models.efficientnet import EfficientNetConfig, EfficientNetEncoder, StageConfig
    from train.stages.encoder_probe import cmkd_encoder

    torch.manual_seed(0)
    encoder = EfficientNetEncoder(EfficientNetConfig(stem=8, stages=(StageConfig(8, 1, 2, 3, 1),
                                                                     StageConfig(16, 1, 2, 3, 2)), out_dim=16))
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    rng = np.random.default_rng(0)
    waves = [rng.normal(0, 0.1, n).astype(np.float32) for n in (16000, 24000, 32000, 16000)]
    targets = rng.random((4, 5)).astype(np.float32)
    trained = cmkd_encoder(encoder, build_frontend(STUDENT_FRONTEND), waves, targets, steps=3, batch=2)
    assert not trained.training and all(not p.requires_grad for p in trained.parameters())
    assert any(not torch.equal(before[k], v) for k, v in trained.state_dict().items())
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())


def test_paired_comparison_counts_clips_each_model_alone_names_and_tests_the_split():
    """`realworld --paired`: clip by clip, who names every sound; an exact McNemar p-value on the clips that differ."""
    clips = [("dog", "a dog barks"), ("rain", "rain falls"), ("dog", "a cat meows"), ("wind", "a dog barks")]

    def result(captions):
        return {"captions": [{"id": str(i), "events": [event], "caption": caption}
                             for i, ((event, _), caption) in enumerate(zip(clips, captions))]}
    a = result([c for _, c in clips])                                   # names clips 0 and 1
    b = result(["a dog barks", "the wind blows", "a dog growls", "wind howls"])  # names 0, 2 and 3
    out = held_out.paired(a, b)
    assert (out["only_a"], out["only_b"], out["both"], out["neither"]) == (1, 2, 1, 0)
    assert out["p_value"] == 1.0  # 1 against 2 is no evidence either way
    many = held_out.paired(result(["x"] * 4), result([c for _, c in clips[:2]] + ["a dog", "wind"]))
    assert many["only_b"] == 4 and abs(many["p_value"] - 2 / 16) < 1e-12  # 4 against 0: p = 2 * 0.5^4
    with pytest.raises(ValueError, match="not over the same clips"):
        held_out.paired(a, {"captions": a["captions"][:2]})
