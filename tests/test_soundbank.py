"""Sound bank: label table, audio pipeline, manifest, resumable build. Offline, on tiny generated fixtures."""
from __future__ import annotations

import io
import struct
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from train.corpus import extract, soundbank
from train.corpus import soundbank_generate as gen
from train.corpus.manifest import Clip, load_classes, read_manifest, write_manifest

SR = soundbank.SAMPLE_RATE
CATEGORIES = {"animals", "nature", "water", "vehicles", "doors", "footsteps", "tools", "household", "human",
              "speech", "music", "alarms", "impacts", "fire", "weapons"}


def tone(seconds, freq=440.0, amp=0.5, sr=SR):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def active_rms_db(pcm16):
    audio = pcm16.astype(np.float64) / 32767
    db = soundbank._frame_db(audio)
    active = db[db > db.max() - soundbank.TRIM_DB]
    return 10 * np.log10(np.mean(10 ** (active / 10)))


# --- label table and class vocabulary ---------------------------------------------------------------------------

def generated_labels():
    return (set(gen.INSTRUMENTS) | {label for label, _, _ in gen.GM_EFFECTS} | {"drums"} | set(gen.SYNTHS)
            | set(gen.ESPEAK_VOICES) | set(gen.FLITE_VOICES) | set(gen.FESTIVAL_VOICES))


def test_every_class_has_a_source_and_every_label_a_class():
    classes = load_classes()
    rules = soundbank.load_rules()
    table = {rule.label for rule in rules if rule.label != "-"}
    assert table - set(classes) == set(), "labels in soundbank_labels.tsv missing from classes.json"
    assert set(classes) - table - generated_labels() == set(), "classes nothing produces"
    assert len(classes) >= 50


def test_class_entries_carry_caption_vocabulary():
    for name, entry in load_classes().items():
        assert entry["category"] in CATEGORIES, name
        for key in ("nouns", "verbs", "keywords"):
            assert entry[key] and all(isinstance(w, str) and w for w in entry[key]), (name, key)
        assert isinstance(entry["gerunds"], list) and isinstance(entry["background"], bool), name
        assert isinstance(entry["repeatable"], bool), name
        assert all(k == k.lower() for k in entry["keywords"]), name


def test_no_pattern_maps_to_two_classes_and_packages_exist():
    rules = soundbank.load_rules()
    labels = defaultdict(set)
    for rule in rules:
        labels[(rule.package, rule.pattern)].add(rule.label)
    assert {key: v for key, v in labels.items() if len(v) > 1} == {}
    assert len(labels) == len(rules), "duplicate rows"
    sources = {s.name for s in soundbank.default_sources(extra=True)}
    assert {s.name for s in soundbank.extra_sources()} & {s.name for s in soundbank.default_sources()} == set()
    held_out = {s.name for s in soundbank.held_out_sources()}
    assert sources & held_out == set()  # a held-out package never reaches training
    assert {rule.package for rule in rules} - sources - held_out == set()
    # for evaluation by others: never used here; cube2-data ships a copy of 0 A.D.'s sounds (packages/sounds/0ad/)
    reserved = {"0ad-data", "supertuxkart-data", "cube2-data"}
    assert not reserved & (sources | held_out | {rule.package for rule in rules})


def test_first_matching_rule_wins_and_dash_drops():
    rules = [soundbank.Rule("p", "*/voices/*_desc*", "-"), soundbank.Rule("p", "*/voices/*", "dog")]
    assert soundbank.match_rule(rules, "usr/voices/a_desc.ogg").label == "-"
    assert soundbank.match_rule(rules, "usr/voices/deep/a.ogg").label == "dog"
    assert soundbank.match_rule(rules, "usr/other/a.ogg") is None


def test_bad_table_row_names_the_line(tmp_path):
    table = tmp_path / "labels.tsv"
    table.write_text("# comment\npkg\t*.ogg\tdog\npkg only-two-cells\n")
    with pytest.raises(soundbank.SoundBankError, match=r"labels.tsv:3"):
        soundbank.load_rules(table)


def test_dep5_licence_prefers_specific_stanza():
    text = ("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
            "Files: *\nCopyright: x\nLicense: GPL-2+\n\n"
            "Files: data/sound/birds/*\nCopyright: y\nLicense: CC0-1.0\n")
    stanzas = soundbank.parse_dep5(text)
    assert soundbank.dep5_licence(stanzas, "usr/share/game/data/sound/birds/a.ogg", "GPL-2") == "CC0-1.0"
    assert soundbank.dep5_licence(stanzas, "usr/share/game/data/sound/dog.ogg", "GPL-2") == "GPL-2"
    assert soundbank.dep5_licence(stanzas, "usr/share/game/data/sound/dog.ogg", "") == "GPL-2+"


# --- audio pipeline ----------------------------------------------------------------------------------------------

def test_prepare_trims_resamples_and_normalises():
    sr = 44_100
    audio = np.concatenate([np.zeros(sr), tone(1.0, sr=sr, amp=0.05), np.zeros(sr // 2)])
    (clip,) = soundbank.prepare(np.stack([audio, audio], axis=1), sr)  # stereo 44.1 kHz in
    assert clip.dtype == np.int16
    assert 1.0 <= len(clip) / SR <= 1.1  # silence gone, 20 ms margins kept
    assert abs(active_rms_db(clip) - soundbank.TARGET_DBFS) < 0.5


def test_normalisation_never_clips_a_peaky_sound():
    audio = np.zeros(SR, dtype=np.float32)
    audio[::1600] = 1.0  # sparse clicks: reaching -20 dB RMS would need a huge gain
    (clip,) = soundbank.prepare(audio + tone(1.0, amp=1e-3), SR)
    assert np.max(np.abs(clip)) / 32767 <= 10 ** (soundbank.PEAK_DBFS / 20) + 1e-3


def test_long_recording_is_cut_into_equal_pieces():
    clips = soundbank.prepare(tone(25.0, amp=0.3), SR)
    assert len(clips) == 3
    assert all(len(c) <= soundbank.MAX_CLIP_S * SR for c in clips)


def test_silence_and_tiny_blips_are_dropped():
    assert soundbank.prepare(np.zeros(SR, dtype=np.float32), SR) == []
    assert soundbank.prepare(tone(0.03), SR) == []


def test_clip_id_is_content_md5():
    a, b = soundbank.prepare(tone(1.0), SR)[0], soundbank.prepare(tone(1.0), SR)[0]
    assert soundbank.clip_id(a) == soundbank.clip_id(b)
    assert soundbank.clip_id(a) != soundbank.clip_id(soundbank.prepare(tone(1.0, 550), SR)[0])


# --- manifest and build ------------------------------------------------------------------------------------------

def test_manifest_round_trip(tmp_path):
    clips = [Clip("abc123def456", "dog", "clips/dog/abc123def456.flac", "pkg", "a/b, c.ogg", "GPL-2+", 1.25),
             Clip("0123456789ab", "woman_speaking", "clips/woman_speaking/0123456789ab.flac", "asterisk",
                  "x.wav", "CC-BY-SA-3.0", 2.0, False, "rec", "asterisk-allison", 'She said "hello", then left.'),
             Clip("ffffffffffff", "rain", "clips/rain/ffffffffffff.flac", "synth", "synth:rain", "CC0", 9.5, True)]
    write_manifest(tmp_path, clips)
    assert sorted(read_manifest(tmp_path), key=lambda c: c.clip_id) == sorted(clips, key=lambda c: c.clip_id)


@pytest.fixture
def package_dir(tmp_path):
    """A fake unpacked package: two labelled sounds, a duplicate, a dropped file and a long recording."""
    root = tmp_path / "pkg" / "usr" / "share" / "game" / "sounds"
    root.mkdir(parents=True)
    sf.write(root / "dog_bark.wav", np.concatenate([np.zeros(800), tone(0.6, 300)]), SR)
    sf.write(root / "dog_copy.wav", np.concatenate([np.zeros(800), tone(0.6, 300)]), SR)  # same audio
    sf.write(root / "cat.ogg", tone(0.8, 700, 0.2), SR)
    sf.write(root / "ui_blip.wav", tone(0.3, 1000), SR)
    sf.write(root / "rain_loop.flac", (np.random.default_rng(0).standard_normal(SR * 21) * 0.1).astype(np.float32), SR)
    rules = [soundbank.Rule("fixture", "*/ui_*", "-"), soundbank.Rule("fixture", "*/dog_*.wav", "dog"),
             soundbank.Rule("fixture", "*/cat.ogg", "cat"), soundbank.Rule("fixture", "*/rain_loop.flac", "rain")]
    return tmp_path / "pkg", rules


def test_build_dedups_drops_splits_and_is_idempotent(tmp_path, package_dir, monkeypatch):
    folder, rules = package_dir
    source = soundbank.Source("fixture", "local", "GPL-2+", spec=str(folder))
    bank = tmp_path / "bank"
    summary = soundbank.build(bank, [source], rules, jobs=1, out=io.StringIO())
    clips = read_manifest(bank)
    assert summary["classes"]["dog"]["clips"] == 1  # md5 duplicate kept once
    assert summary["classes"]["cat"]["clips"] == 1
    rain = [c for c in clips if c.label == "rain"]
    assert len(rain) == 3 and len({c.recording for c in rain}) == 1  # one recording, cut in three
    assert all((bank / c.file).is_file() and c.licence == "GPL-2+" for c in clips)
    assert all(sf.info(str(bank / c.file)).samplerate == SR for c in clips)
    assert (bank / "summary.json").is_file()
    manifest = (bank / "manifest.csv").read_bytes()

    def refuse(*args, **kwargs):
        raise AssertionError("a finished source was processed again")

    monkeypatch.setattr(soundbank, "build_source", refuse)
    log = io.StringIO()
    soundbank.build(bank, [source], rules, jobs=1, out=log)
    assert "nothing to do" in log.getvalue()
    assert (bank / "manifest.csv").read_bytes() == manifest


def test_killed_run_resumes_and_orphans_are_removed(tmp_path, package_dir):
    folder, rules = package_dir
    source = soundbank.Source("fixture", "local", "GPL-2+", spec=str(folder))
    bank = tmp_path / "bank"
    orphan = bank / "clips" / "dog" / "000000000000.flac"  # as if a run died before recording its part
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"partial")
    soundbank.build(bank, [source], rules, jobs=2, out=io.StringIO())
    assert not orphan.exists()
    assert len(read_manifest(bank)) == 5


def test_workers_cutting_the_same_audio_do_not_collide(tmp_path, package_dir, monkeypatch):
    """Two processes writing one clip (a source shipping the same sound twice) each use their own temporary file;
    with a shared one, the second worker renamed it away before the first could, and the whole source failed."""
    folder, _ = package_dir
    bank, sounds = tmp_path / "bank", folder / "usr/share/game/sounds"
    real_write, pid = sf.write, [1000]
    monkeypatch.setattr(soundbank.os, "getpid", lambda: pid[0])
    other = soundbank.Task(str(sounds / "dog_copy.wav"), "dog_copy.wav", "dog", "GPL-2+", "fixture")

    def write_while_the_other_worker_runs(path, *args, **kwargs):
        real_write(path, *args, **kwargs)
        if pid[0] == 1000:  # the other worker writes and renames the same clip between our write and our rename
            pid[0] = 1001
            assert soundbank.process_task(other, str(bank))[1] == ""
            pid[0] = 1000

    monkeypatch.setattr(sf, "write", write_while_the_other_worker_runs)
    rows, error = soundbank.process_task(soundbank.Task(str(sounds / "dog_bark.wav"), "dog_bark.wav", "dog",
                                                        "GPL-2+", "fixture"), str(bank))
    assert error == "" and len(rows) == 1 and (bank / rows[0]["file"]).is_file()
    assert not list((bank / "clips" / "dog").glob("*.tmp"))


def test_generated_sources_wait_for_every_recorded_source(tmp_path, package_dir, monkeypatch):
    """Synthetic fill-ins are counted against the real clips, so they are not built while a recorded source has
    failed (they would be kept, and a clean build would then give another corpus); the rerun builds them."""
    folder, rules = package_dir
    calls = []
    generated = soundbank.Source("fill", "generate",
                                 generate=lambda staging, context: calls.append(dict(context.real_counts)) or [])
    broken = soundbank.Source("broken", "local", "GPL-2+", spec=str(tmp_path / "missing"))
    good = soundbank.Source("fixture", "local", "GPL-2+", spec=str(folder))
    bank = tmp_path / "bank"
    with pytest.raises(soundbank.SoundBankError, match="fill: not generated"):
        soundbank.build(bank, [generated, broken, good], rules, jobs=1, out=io.StringIO())
    assert calls == [] and not soundbank.is_done(bank, "fill")
    soundbank.build(bank, [generated, good], rules, jobs=1, out=io.StringIO())
    assert calls == [{"dog": 1, "cat": 1, "rain": 3}]


def test_missing_tool_is_named_with_the_fix(tmp_path):
    source = soundbank.Source("needs-tool", "generate", tools=("no-such-tool-xyz",), generate=lambda s, c: [])
    with pytest.raises(soundbank.SoundBankError, match=r"no-such-tool-xyz.*needs-tool(.|\n)*--packages"):
        soundbank.build(tmp_path / "bank", [source], [], out=io.StringIO())


def test_missing_package_is_reported(tmp_path, monkeypatch):
    def no_download(package, *args):
        raise soundbank.SoundBankError(f"apt-get download {package} failed (exit 100): E: Unable to locate package")

    monkeypatch.setattr(soundbank, "fetch_apt", no_download)
    monkeypatch.setattr(soundbank.shutil, "which", lambda tool: "/usr/bin/" + tool)
    source = soundbank.Source("not-a-real-package", "apt", tools=("apt-get",))
    with pytest.raises(soundbank.SoundBankError, match="not-a-real-package.*Unable to locate"):
        soundbank.build(tmp_path / "bank", [source], [], out=io.StringIO())
    assert not (tmp_path / "bank" / "parts" / "not-a-real-package").exists()  # retried on the next run


def test_synthetic_clips_stay_a_minority(tmp_path):
    context = soundbank.Context(tmp_path, {"rain": 7, "wind": 1})
    tasks = gen.synthesise_gaps(tmp_path, context)
    counts = defaultdict(int)
    for task in tasks:
        assert task.synthetic and Path(task.path).is_file()
        counts[task.label] += 1
    assert counts["rain"] * 2 < 7 and counts["wind"] == 0
    assert counts["doorbell"] == gen.SYNTH_TARGET  # no real doorbell at all


# --- container formats -------------------------------------------------------------------------------------------

def test_opensfx_catalogue_names_sounds_by_title(tmp_path):
    buffer = io.BytesIO()
    sf.write(buffer, tone(0.2), SR, format="WAV")
    wav = buffer.getvalue()
    entries = [b'"Ship horn". By A. License: CC0.', b'"Cow". By B. License: CC-BY-3.0.']
    header = 8 * len(entries)
    blobs = [bytes([len(t) + 1]) + t + b"\0" + wav for t in entries]
    table, offset = b"", header
    for blob in blobs:
        table += struct.pack("<II", offset, len(blob))
        offset += len(blob)
    (tmp_path / "opensfx.cat").write_bytes(table + b"".join(blobs))
    written = extract.opensfx_cat(tmp_path / "opensfx.cat", tmp_path / "out")
    assert [p.name for p in written] == ["00-ship_horn.wav", "01-cow.wav"]
    assert "CC-BY-3.0" in written[1].with_suffix(".txt").read_text()
    assert sf.info(str(written[0])).frames == int(0.2 * SR)


def test_zip_audio_keeps_only_audio(tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "0snd.pk3", "w") as pack:
        pack.writestr("sound/footsteps/gravel1.ogg", b"ogg")
        pack.writestr("maps/level.bsp", b"map")
    written = extract.zip_audio(tmp_path / "0snd.pk3", tmp_path / "out")
    assert [p.relative_to(tmp_path / "out").as_posix() for p in written] == ["sound/footsteps/gravel1.ogg"]
    with pytest.raises(extract.ExtractError, match="not a zip"):
        extract.zip_audio(tmp_path / "out" / "sound" / "footsteps" / "gravel1.ogg", tmp_path / "x")


def test_midi_writer_produces_a_valid_header(tmp_path):
    events, end = gen.melody(np.random.default_rng(0), 0.5, 0)
    gen.write_midi(tmp_path / "m.mid", [(0.0, bytes([0xC0, 40]))] + events)
    data = (tmp_path / "m.mid").read_bytes()
    assert data[:4] == b"MThd" and data[14:18] == b"MTrk" and data.endswith(b"\xff\x2f\x00")
    assert end > 0.5 and struct.unpack(">I", data[18:22])[0] == len(data) - 22
