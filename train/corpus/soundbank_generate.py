"""Generated sound-bank sources: sampled instruments (fluidsynth + FluidR3 GM), TTS voices, synthesised gap fillers.

Each generator writes WAV files into the staging folder it is given and returns `manifest.Task`s for them; the
sound bank then trims, normalises and stores them like any package file. Everything is seeded, so a rebuild
produces the same clips (and the same md5 clip ids).
"""
from __future__ import annotations

import hashlib
import struct
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from train.corpus.manifest import SAMPLE_RATE, Context, SoundBankError, Task

# ---------------------------------------------------------------------------------------------------------------
# fluidsynth: generated melodies played by the real sampled instruments of FluidR3 GM

# label -> General MIDI programs (0-based). Each is a real multi-sampled instrument in FluidR3_GM.sf2.
INSTRUMENTS = {
    "piano": [0, 1], "harpsichord": [6], "organ": [19, 16], "accordion": [21], "harmonica": [22],
    "acoustic_guitar": [24, 25], "electric_guitar": [27, 29, 30], "banjo": [105], "harp": [46],
    "violin": [40], "cello": [42], "flute": [73], "clarinet": [71], "saxophone": [65, 66],
    "trumpet": [56], "trombone": [57], "xylophone": [13, 12], "bell": [14],
}
# GM sound-effect programs whose FluidR3 presets are recorded samples: (label, program, MIDI notes to play).
GM_EFFECTS = [("sea_waves", 122, [48, 55, 60]), ("birds", 123, [60, 67, 72]), ("telephone", 124, [60, 64]),
              ("helicopter", 125, [55, 60]), ("applause", 126, [55, 60, 64]), ("gunshot", 127, [48, 60])]
MELODIES_PER_INSTRUMENT = 14
DRUM_PATTERNS = 16
GAP_S = 2.0                     # silence between rendered pieces, so release tails never reach the next one
TICKS_PER_BEAT = 480            # with 120 bpm: 960 ticks per second
MAJOR = [0, 2, 4, 5, 7, 9, 11]
MINOR = [0, 2, 3, 5, 7, 8, 10]


def _varlen(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def write_midi(path: Path, events: list[tuple[float, bytes]]) -> None:
    """A format-0 MIDI file from (time in seconds, raw message) events at 120 bpm."""
    track, now = b"", 0
    for seconds, message in sorted(events, key=lambda e: (e[0], e[1][0] & 0xF0 != 0x80)):
        tick = round(seconds * 2 * TICKS_PER_BEAT)
        track += _varlen(tick - now) + message
        now = tick
    track += b"\x00\xff\x2f\x00"
    path.write_bytes(b"MThd" + struct.pack(">IHHH", 6, 0, 1, TICKS_PER_BEAT)
                     + b"MTrk" + struct.pack(">I", len(track)) + track)


def melody(rng: np.random.Generator, start: float, channel: int) -> tuple[list[tuple[float, bytes]], float]:
    """A short random melody in a random key: a walk over a major/minor scale, sometimes with a held chord."""
    scale = MAJOR if rng.random() < 0.6 else MINOR
    root = int(rng.integers(52, 67))
    step = rng.choice([0.25, 0.375, 0.5])
    degree, t, events = int(rng.integers(0, 7)), start, []
    for _ in range(int(rng.integers(8, 17))):
        degree = int(np.clip(degree + rng.choice([-2, -1, -1, 0, 1, 1, 2, 3]), -3, 12))
        note = root + 12 * (degree // 7) + scale[degree % 7]
        length = step * rng.choice([1, 1, 1, 2, 3])
        velocity = int(rng.integers(70, 115))
        events += [(t, bytes([0x90 | channel, note, velocity])), (t + length * 0.95, bytes([0x80 | channel, note, 0]))]
        if rng.random() < 0.15:  # a chord under the melody now and then
            for offset in (-12, -8 if scale is MAJOR else -9):
                events += [(t, bytes([0x90 | channel, note + offset, velocity - 20])),
                           (t + length * 0.95, bytes([0x80 | channel, note + offset, 0]))]
        t += length
    return events, t


def drum_pattern(rng: np.random.Generator, start: float) -> tuple[list[tuple[float, bytes]], float]:
    """Two to four bars of a rock/funk-like groove on GM channel 10 (kick 36, snare 38, hats 42/46, toms, crash)."""
    step = 60 / rng.integers(80, 140) / 2  # eighth notes
    bars = int(rng.integers(2, 5))
    kick = rng.random(8) < [0.9, 0.1, 0.2, 0.3, 0.8, 0.1, 0.4, 0.2]
    events, t = [], start
    for bar in range(bars):
        for i in range(8):
            hits = [42] + ([36] if kick[i] else []) + ([38] if i in (2, 6) else [])
            if bar == bars - 1 and i >= 6:
                hits = [int(rng.choice([45, 47, 48, 50])), 38]
            if bar == 0 and i == 0 and rng.random() < 0.5:
                hits.append(49)
            for note in hits:
                velocity = int(rng.integers(70, 120))
                events += [(t, bytes([0x99, note, velocity])), (t + step * 0.9, bytes([0x89, note, 0]))]
            t += step
    return events, t


def render_midi(soundfont: Path, midi: Path, wav: Path) -> None:
    result = subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.6", "-r", str(SAMPLE_RATE), "-F", str(wav),
                             str(soundfont), str(midi)], capture_output=True, text=True)
    if result.returncode != 0 or not wav.exists():
        raise SoundBankError(f"fluidsynth could not render {midi.name}: {result.stderr.strip()[-300:]}")


def _cut(wav: Path, spans: list[tuple[float, float]], folder: Path, stem: str) -> list[Path]:
    audio, rate = sf.read(str(wav), dtype="float32")
    out = []
    for i, (start, end) in enumerate(spans):
        piece = audio[int(start * rate):int((end + 1.0) * rate)]  # +1 s keeps the release tail
        path = folder / f"{stem}-{i:02d}.wav"
        sf.write(str(path), piece, rate)
        out.append(path)
    return out


def render_instruments(staging: Path, context: Context) -> list[Task]:
    soundfont = next(iter(staging.glob("usr/share/sounds/sf2/FluidR3_GM.sf2")), None)
    if soundfont is None:
        raise SoundBankError("fluid-soundfont-gm did not provide usr/share/sounds/sf2/FluidR3_GM.sf2")
    rng = np.random.default_rng(20240601)
    folder = staging / "render"
    folder.mkdir()
    jobs = []  # (label, program or None for drums, events, spans)
    for label, programs in INSTRUMENTS.items():
        for program in programs:
            events, spans, t = [(0.0, bytes([0xC0, program]))], [], 0.5
            for _ in range(max(4, MELODIES_PER_INSTRUMENT // len(programs))):
                notes, end = melody(rng, t, 0)
                events += notes
                spans.append((t, end))
                t = end + GAP_S
            jobs.append((label, program, events, spans))
    events, spans, t = [], [], 0.5
    for _ in range(DRUM_PATTERNS):
        notes, end = drum_pattern(rng, t)
        events += notes
        spans.append((t, end))
        t = end + GAP_S
    jobs.append(("drums", None, events, spans))
    for label, program, notes in GM_EFFECTS:
        events, spans, t = [(0.0, bytes([0xC0, program]))], [], 0.5
        for note in notes:
            length = float(rng.uniform(4.0, 8.0))
            events += [(t, bytes([0x90, note, 100])), (t + length, bytes([0x80, note, 0]))]
            spans.append((t, t + length))
            t += length + GAP_S + 2.0
        jobs.append((label, program, events, spans))

    tasks = []
    for label, program, events, spans in jobs:
        stem = f"{label}-gm{program:03d}" if program is not None else f"{label}-kit"
        midi, wav = folder / f"{stem}.mid", folder / f"{stem}.wav"
        write_midi(midi, events)
        render_midi(soundfont, midi, wav)
        what = f"GM program {program}" if program is not None else "GM drum kit"
        for i, piece in enumerate(_cut(wav, spans, folder, stem)):
            tasks.append(Task(str(piece), f"FluidR3_GM.sf2 {what}, generated piece {i}", label, "MIT", "fluidsynth",
                              recording=f"fluidsynth:{stem}:{i}"))
    return tasks


# ---------------------------------------------------------------------------------------------------------------
# Text to speech

SENTENCES = [
    "Could you pass me the salt, please?", "I think it is going to rain this afternoon.",
    "The train to the city leaves at half past nine.", "Please close the door when you leave.",
    "We should meet again next week to talk about it.", "My sister lives in a small village by the sea.",
    "Turn left at the end of the road and keep going.", "The children are playing in the garden.",
    "Dinner will be ready in about ten minutes.", "I forgot my keys at the office again.",
    "Have you seen the news this morning?", "The museum is closed on Mondays.",
    "Thank you very much for your help yesterday.", "Let me know if you need anything else.",
    "The meeting has been moved to Thursday.", "It was a long day, and I am very tired.",
    "Put the boxes on the table next to the window.", "He bought fresh bread from the bakery.",
    "The weather is much warmer than last year.", "Please speak a little louder, I cannot hear you.",
    "We are going to the beach on Saturday.", "Where did you park the car?",
    "The library has a new collection of old maps.", "Remember to water the plants while I am away.",
    "I would like a cup of tea with milk.", "The concert starts at eight o'clock tonight.",
    "Can you call me back in an hour?", "There is a good restaurant around the corner.",
    "The dog needs a walk before it gets dark.", "She is learning to play the piano.",
    "Our flight was delayed by two hours.", "Do not forget to bring an umbrella.",
    "The shop on the corner sells fresh fruit.", "I will send you the documents by email.",
    "Good morning, how are you today?", "The bus was full, so we walked home.",
    "Please wait here until your name is called.", "We watched an old film last night.",
    "The river flooded the fields after the storm.", "Let us start the lesson with a short story.",
]

ESPEAK_VOICES = {"man_speaking": ["en-us+m1", "en-us+m3", "en+m5", "en-gb+m2", "en-us+m7", "en-gb-x-rp+m4"],
                 "woman_speaking": ["en-us+f1", "en-us+f2", "en+f3", "en-gb+f4", "en-us+f5"]}
FLITE_VOICES = {"man_speaking": ["kal16", "awb", "rms"], "woman_speaking": ["slt"]}
FESTIVAL_VOICES = {"man_speaking": ["kal_diphone"], "woman_speaking": ["cmu_us_slt_arctic_hts"]}
SENTENCES_PER_VOICE = 16


def _speak(engine: str, voices: dict[str, list[str]], staging: Path, command) -> list[Task]:
    tasks = []
    for label, names in voices.items():
        for v, voice in enumerate(names):
            rng = np.random.default_rng(abs(hash_text(f"{engine}:{voice}")) % 2**32)
            picks = rng.choice(len(SENTENCES), size=SENTENCES_PER_VOICE, replace=False)
            for i in picks:
                wav = staging / f"{engine}-{voice.replace('+', '_')}-{i:02d}.wav"
                result = subprocess.run(command(voice, SENTENCES[i], wav), capture_output=True, text=True)
                if result.returncode != 0 or not wav.exists():
                    raise SoundBankError(f"{engine} voice {voice} failed: {result.stderr.strip()[-300:]}; "
                                         f"is the voice installed?")
                tasks.append(Task(str(wav), f"{engine} voice {voice}: sentence {i}", label, "", engine,
                                  voice=f"{engine}:{voice}", transcript=SENTENCES[i]))
    return tasks


def hash_text(text: str) -> int:
    return int(hashlib.md5(text.encode()).hexdigest()[:8], 16)  # stable across runs, unlike hash()


def speak_espeak(staging: Path, context: Context) -> list[Task]:
    tasks = _speak("espeak-ng", ESPEAK_VOICES, staging,
                   lambda voice, text, wav: ["espeak-ng", "-v", voice, "-s", "155", "-w", str(wav), text])
    return [_with_licence(t, "GPL-3+") for t in tasks]


def speak_flite(staging: Path, context: Context) -> list[Task]:
    tasks = _speak("flite", FLITE_VOICES, staging,
                   lambda voice, text, wav: ["flite", "-voice", voice, "-t", text, "-o", str(wav)])
    return [_with_licence(t, "BSD-4-clause-CMU (flite voices)") for t in tasks]


def speak_festival(staging: Path, context: Context) -> list[Task]:
    def command(voice: str, text: str, wav: Path) -> list[str]:
        script = wav.with_suffix(".txt")
        script.write_text(text, encoding="utf-8")
        return ["text2wave", "-eval", f"(voice_{voice})", str(script), "-o", str(wav)]

    tasks = _speak("festival", FESTIVAL_VOICES, staging, command)
    return [_with_licence(t, "festvox licence (BSD-like, free use)") for t in tasks]


def _with_licence(task: Task, licence: str) -> Task:
    task.licence = licence
    return task


# ---------------------------------------------------------------------------------------------------------------
# Synthesised gap fillers (marked synthetic; never more than a minority of a class that has real clips)

SYNTH_TARGET = 24   # per class when it has no real clips at all


def _noise(rng, n, colour):
    """White (0), pink (1) or brown (2) noise, by shaping the spectrum of white noise."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spectrum[1:] /= freqs[1:] ** (colour / 2)
    spectrum[0] = 0
    out = np.fft.irfft(spectrum, n)
    return out / (np.max(np.abs(out)) + 1e-9)


def _bandpass(x, low, high):
    spectrum = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    spectrum[(freqs < low) | (freqs > high)] = 0
    return np.fft.irfft(spectrum, len(x))


def synth_rain(rng, seconds):
    n = int(seconds * SAMPLE_RATE)
    bed = _bandpass(_noise(rng, n, 1), 400, 7000) * 0.5
    drops = np.zeros(n)
    for _ in range(int(seconds * rng.uniform(40, 200))):
        at, length = rng.integers(0, n - 400), int(rng.integers(40, 300))
        drops[at:at + length] += rng.uniform(0.2, 1) * np.exp(-np.arange(length) / (length / 5)) \
            * rng.standard_normal(length)
    return bed + _bandpass(drops, 1500, 7500) * rng.uniform(0.3, 0.8)


def synth_wind(rng, seconds):
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    gusts = 0.55 + 0.45 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t + rng.uniform(0, 6)) \
        * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t)
    howl = _bandpass(_noise(rng, n, 2), 80, rng.uniform(600, 1500))
    return howl * gusts


def synth_sea_waves(rng, seconds):
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    period = rng.uniform(4, 8)
    swell = (0.5 + 0.5 * np.sin(2 * np.pi * t / period + rng.uniform(0, 6))) ** 3
    return _bandpass(_noise(rng, n, 1), 150, 6000) * (0.15 + swell)


def _tone(freq, seconds, harmonics=(1.0,)):
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return sum(a * np.sin(2 * np.pi * freq * (k + 1) * t) for k, a in enumerate(harmonics))


def synth_siren(rng, seconds):
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    low, high = rng.uniform(500, 700), rng.uniform(1100, 1500)
    rate = rng.choice([0.2, 0.25, 3.0, 4.0])  # slow wail or fast yelp
    freq = low + (high - low) * (0.5 - 0.5 * np.cos(2 * np.pi * rate * t))
    phase = 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE
    return np.sin(phase) + 0.3 * np.sin(2 * phase) + 0.15 * np.sin(3 * phase)


def synth_alarm(rng, seconds):
    n = int(seconds * SAMPLE_RATE)
    freq, on, off = rng.uniform(2000, 3500), rng.uniform(0.08, 0.5), rng.uniform(0.08, 0.6)
    beep = np.sign(_tone(freq, on)) * 0.5
    out = np.zeros(n)
    for at in range(0, n, int((on + off) * SAMPLE_RATE)):
        piece = beep[:n - at]
        out[at:at + len(piece)] += piece
    return out


def synth_telephone(rng, seconds):
    n = int(seconds * SAMPLE_RATE)
    pairs = [(440, 480), (400, 450)]
    f1, f2 = pairs[int(rng.integers(0, 2))]
    ring = (_tone(f1, 2.0) + _tone(f2, 2.0)) * 0.5
    if f1 == 400:  # UK cadence: two short rings
        gate = np.zeros(len(ring))
        for start, stop in ((0, 0.4), (0.6, 1.0)):
            gate[int(start * SAMPLE_RATE):int(stop * SAMPLE_RATE)] = 1
        ring = ring * gate
    out = np.zeros(n)
    for at in range(0, n, int(rng.uniform(3.0, 4.5) * SAMPLE_RATE)):
        piece = ring[:n - at]
        out[at:at + len(piece)] += piece
    return out


def synth_doorbell(rng, seconds):
    out = np.zeros(int(seconds * SAMPLE_RATE))
    high = rng.uniform(620, 780)
    at = int(0.1 * SAMPLE_RATE)
    for ratio in (1.0, 0.8):  # "ding-dong": a major third down
        length = int(1.6 * SAMPLE_RATE)
        tone = _tone(high * ratio, 1.6, (1.0, 0.0, 0.35, 0.0, 0.12)) * np.exp(-np.arange(length) / (0.45 * SAMPLE_RATE))
        piece = tone[:len(out) - at]
        out[at:at + len(piece)] += piece
        at += int(rng.uniform(0.5, 0.8) * SAMPLE_RATE)
    return out


def synth_ticking(rng, seconds):
    n = int(seconds * SAMPLE_RATE)
    out = np.zeros(n)
    interval = rng.choice([0.5, 1.0])
    for k, at in enumerate(range(int(0.1 * SAMPLE_RATE), n - 800, int(interval * SAMPLE_RATE))):
        click = rng.standard_normal(600) * np.exp(-np.arange(600) / 60)
        out[at:at + 600] += _bandpass(click, 1500 if k % 2 else 2500, 6000)  # tick and tock differ
    return out


SYNTHS = {"rain": synth_rain, "wind": synth_wind, "sea_waves": synth_sea_waves, "siren": synth_siren,
          "alarm": synth_alarm, "telephone": synth_telephone, "doorbell": synth_doorbell, "ticking": synth_ticking}


def synthesise_gaps(staging: Path, context: Context) -> list[Task]:
    tasks = []
    for label, synth in SYNTHS.items():
        real = context.real_counts.get(label, 0)
        count = SYNTH_TARGET if real == 0 else min(SYNTH_TARGET, (real - 1) // 2)  # synthetic stays < 1/3
        rng = np.random.default_rng(hash_text(label))
        for i in range(count):
            seconds = float(rng.uniform(4.0, 9.5))
            audio = synth(rng, seconds)
            path = staging / f"{label}-{i:02d}.wav"
            sf.write(str(path), (audio / (np.max(np.abs(audio)) + 1e-9) * 0.8).astype(np.float32), SAMPLE_RATE)
            tasks.append(Task(str(path), f"synth:{synth.__name__} seed {i}", label, "CC0", "synth", synthetic=True,
                              recording=f"synth:{label}:{i}"))
    return tasks
