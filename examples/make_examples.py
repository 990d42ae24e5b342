"""Rebuild the app's example clips and ATTRIBUTION.md from held-out sources only: `python examples/make_examples.py`.

Every example is an item of the cross-source split (`train/core/held_out.py`): a recording from the held-out sound
bank data/soundbank_heldout (built by `python -m train soundbank --held-out`), made only of whole Debian packages
that were never used in training, or a mix of two of them, rendered exactly as the split renders it
(`held_out.render`: the first 10 s; a mix's second part at the split's own offset and gain). The examples are
picked by this fixed rule, written down before looking at any caption; no model is run to choose them:

1. Refused: any clip of the Debian packages 0ad-data or supertuxkart-data (reserved for independent evaluation),
   checked on each clip's `source_package`, even if the held-out bank holds some; and any clip shorter than
   MIN_PART_SECONDS (1 s), too short to be heard in an example. An item is also skipped when its 16 kHz 16-bit
   FLAC would be over MAX_BYTES (200 KB: the Space stays small); the split's render is never cut to fit.
2. Singles (SINGLES = 5): for every class, its longest allowed clip (ties: the smaller clip_id); of those classes,
   in alphabetical order, the first SINGLES whose file fits. File: `<class>.flac`.
3. Mixes (MIXES = 5): the split's mixes in `held_out.build_items()` order (one fixed seed), taking each mix whose
   two parts are both allowed by 1., whose two classes no example picked so far has, whose parts' licences
   combine into one file (the licence families below) and whose file fits; a mix whose licences do not combine is
   skipped, and so is one with a used class, a refused part or a file over 200 KB. The first MIXES taken.
   File: `<first class>_and_<second class>.flac`.

So the examples cover SINGLES + 2 * MIXES different classes, named from the bank's labels, never from a caption.
The only change to the split's audio is a level cut where its peak is above -1 dBFS. Nothing is random (the split's
mixes come from its fixed seed), so a rebuild gives the same files. Output: 16 kHz mono FLAC, at most 10 s (the
split's cut) and 200 KB each.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere: `train` is the repository's package

from train.core import held_out  # noqa: E402
from train.corpus.manifest import MANIFEST_NAME, Clip, read_manifest  # noqa: E402
from train.corpus.soundbank import held_out_sources  # noqa: E402

RATE = 16000
MAX_BYTES = 200_000
MAX_SECONDS = 10.0
PEAK_DB = -1.0             # a clip whose peak is above this is turned down to it (never up)
MIN_PART_SECONDS = 1.0     # every part of an example lasts at least this long
SINGLES = 5
MIXES = 5
RESERVED = ("0ad-data", "supertuxkart-data")  # reserved for independent evaluation: never used here, in any form
DEFAULT_BANK = REPO / "data" / "soundbank_heldout"
BUILD_HINT = "build it with `python -m train soundbank --held-out` (it writes data/soundbank_heldout/manifest.csv)"

# Licence families, for what a mix of parts may be distributed under. Permissive parts (MIT, CC0) go with
# anything; attribution-only parts (CC-BY-3.0) with anything but the GPL (the FSF counts only CC-BY-4.0 as
# GPL-compatible); copyleft parts only with parts of the same licence (GPL-2-only and GPL-3 do not mix; neither do
# the GPL and CC-BY-SA-3.0). "CC-BY-SA-3", as some scorched3d-data clips' licence reads, is CC-BY-SA 3.0.
PERMISSIVE = {"MIT", "CC0", "CC0-1.0", "Creative Commons Zero 1.0"}
ATTRIBUTION = {"CC-BY-3.0": "CC-BY-3.0", "Creative Commons Attribution 3.0 Unported": "CC-BY-3.0"}
COPYLEFT = {"GPL-2": "GPL-2", "GPL-2+": "GPL-2+", "GPL-3": "GPL-3", "GPL-3+": "GPL-3+",
            "CC-BY-SA-3.0": "CC-BY-SA-3.0", "CC-BY-SA-3": "CC-BY-SA-3.0", "free-art": "Free Art License 1.3"}


class Incompatible(ValueError):
    """The parts' licences cannot be combined in one file."""


def fail(message: str) -> None:
    sys.exit(f"make_examples: {message}")


def load_bank(bank: Path) -> dict[str, Clip]:
    """file -> clip of the held-out bank; a missing bank stops the script with the command that builds it."""
    if not (bank / MANIFEST_NAME).is_file():
        fail(f"no held-out sound bank at {bank} (missing {MANIFEST_NAME}); {BUILD_HINT}")
    return {c.file: c for c in read_manifest(bank)}


def mix_licence(name: str, clips: list[Clip]) -> str:
    """The licence a mix of these parts is distributed under. Raises `Incompatible` for parts whose licences do
    not combine; stops the script on a licence with no rule here."""
    unknown = sorted({c.licence for c in clips} - PERMISSIVE - set(ATTRIBUTION) - set(COPYLEFT))
    if unknown:
        fail(f"{name}: no rule for the licence(s) {', '.join(unknown)}; add them to make_examples.py")
    copyleft = {COPYLEFT[c.licence] for c in clips if c.licence in COPYLEFT}
    attribution = {ATTRIBUTION[c.licence] for c in clips if c.licence in ATTRIBUTION}
    gpl = {x for x in copyleft if x.startswith("GPL")}
    if gpl and copyleft - gpl or len(copyleft - gpl) > 1 or gpl and attribution:
        raise Incompatible(f"{name}: its parts' licences ({', '.join(sorted(copyleft | attribution))}) cannot be "
                           "combined in one file")
    if gpl:
        if "GPL-2" in gpl and gpl & {"GPL-3", "GPL-3+"}:
            raise Incompatible(f"{name}: GPL-2-only and GPL-3 parts cannot be combined in one file")
        return ("GPL-2" if "GPL-2" in gpl else "GPL-3" if "GPL-3" in gpl else "GPL-3+" if "GPL-3+" in gpl
                else "GPL-2+")
    if copyleft:
        return copyleft.pop()
    if attribution:
        return attribution.pop()
    return "MIT" if any(c.licence == "MIT" for c in clips) else "CC0"


def encode(item: dict, bank: Path) -> bytes:
    """The item's example file: the split's render, level-capped, as 16 kHz mono 16-bit FLAC."""
    buffer = io.BytesIO()
    sf.write(buffer, render(item, bank), RATE, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def choose(items: list[dict], clips: dict[str, Clip], bank: Path) -> dict[str, dict]:
    """The rule of the module docstring: file stem -> the split's item, its parts, its licence and its file."""
    reserved = sorted({c.source_package for c in clips.values() if c.source_package in RESERVED})
    if reserved:
        print(f"note: the held-out bank holds clips of {', '.join(reserved)}; refused (reserved for independent "
              "evaluation)", file=sys.stderr)

    def allowed(clip: Clip) -> bool:
        return clip.source_package not in RESERVED and not clip.synthetic and clip.duration >= MIN_PART_SECONDS

    parts_of = {item["id"]: [clips[p["file"]] for p in item["clips"]] for item in items}
    chosen: dict[str, dict] = {}
    singles = {parts_of[i["id"]][0].clip_id: i for i in items if i["kind"] == "single"}
    longest: dict[str, Clip] = {}
    for clip in sorted(clips.values(), key=lambda c: (-c.duration, c.clip_id)):
        if allowed(clip):
            longest.setdefault(clip.label, clip)
    for label in sorted(longest):
        if len(chosen) >= SINGLES:
            break
        clip, item = longest[label], singles[longest[label].clip_id]
        data = encode(item, bank)
        if len(data) > MAX_BYTES:
            print(f"skipped {item['id']} ({label}): {len(data) / 1000:.0f} KB, over {MAX_BYTES // 1000} KB")
            continue
        chosen[label] = {"item": item, "parts": [clip], "licence": mix_licence(label, [clip]), "flac": data}
    used = set(chosen)
    for item in (i for i in items if i["kind"] == "mix"):
        if sum(x["item"]["kind"] == "mix" for x in chosen.values()) >= MIXES:
            break
        parts = parts_of[item["id"]]
        labels = [c.label for c in parts]
        if not all(allowed(c) for c in parts) or used & set(labels):
            continue
        name = "_and_".join(labels)
        try:
            licence = mix_licence(name, parts)
        except Incompatible as why:
            print(f"skipped {item['id']} ({' + '.join(labels)}): {why}")
            continue
        data = encode(item, bank)
        if len(data) > MAX_BYTES:
            print(f"skipped {item['id']} ({' + '.join(labels)}): {len(data) / 1000:.0f} KB, over "
                  f"{MAX_BYTES // 1000} KB")
            continue
        chosen[name] = {"item": item, "parts": parts, "licence": licence, "flac": data}
        used |= set(labels)
    if len(chosen) < SINGLES + MIXES:
        fail(f"the rule found only {len(chosen)} of {SINGLES + MIXES} examples in the held-out bank (an old or "
             f"partial bank?); rebuild it: {BUILD_HINT}")
    return chosen


def render(item: dict, bank: Path) -> np.ndarray:
    """The split's own rendering of the item, turned down (never up) to a peak of at most PEAK_DB."""
    audio = held_out.render(item, bank).astype(np.float64)
    peak = float(np.abs(audio).max())
    return (audio * min(1.0, 10 ** (PEAK_DB / 20) / peak) if peak > 0 else audio).astype(np.float32)


def origin(package: str, debian: set[str]) -> str:
    if package not in debian:  # held_out_sources() are Debian packages; another kind needs its own origin line
        fail(f"{package} is not one of the held-out Debian packages ({', '.join(sorted(debian))}): add its origin "
             "to make_examples.py")
    return f"the Debian package [{package}](https://packages.debian.org/bookworm/{package})"


def attribution(chosen: dict[str, dict]) -> str:
    debian = {s.name for s in held_out_sources() if s.registry == "apt"}
    copyleft = ", ".join(sorted({COPYLEFT[c.licence] for x in chosen.values() for c in x["parts"]
                                 if c.licence in COPYLEFT})) or "none"
    lines = ["# Example clips: sources and licences", "",
             "Each example is an item of the cross-source split (`train/core/held_out.py`): a recording of the",
             "held-out sound bank (`python -m train soundbank --held-out`, `data/soundbank_heldout`), whole Debian",
             "packages that were never used in training, or a mix of two, rendered as the split renders it. The",
             "examples are chosen by the fixed rule in `examples/make_examples.py` (classes in alphabetical order",
             "for the singles, the split's seeded order for the mixes, each class once), not by how well the models",
             "caption them. Cutting to 10 s, mixing and a level cut are the only changes. No clip of 0ad-data or",
             "supertuxkart-data is used (reserved for independent evaluation).", "",
             "**Licences.** The project's code is MIT, but these audio files are not: each file keeps the licences",
             "of its parts, listed below, copyleft ones included (here: " + copyleft + ").",
             "Each file is distributed under the licence its parts combine under, named in its section; a mix is",
             "made only of parts whose licences combine (`CC-BY-SA-3`, as some scorched3d-data clips' licence",
             "reads, is CC-BY-SA-3.0). The source of a file is the packages named here plus make_examples.py.",
             "Keep this file with the clips: it is the attribution and licence notice their licences ask for.",
             "Authors and copyright holders of each part are listed in its package's copyright file",
             "(`/usr/share/doc/<package>/copyright`).", ""]
    for name, x in chosen.items():
        item = x["item"]
        what = ("a single recording" if item["kind"] == "single" else
                f"a mix: the second part starts {item['clips'][1]['offset']:g} s in, "
                f"{-item['clips'][1]['gain_db']:g} dB under the first")
        lines += [f"## {name}.flac", "", f"Cross-source item `{item['id']}`, {what}. Distributed under "
                  f"**{x['licence']}**; its parts:", ""]
        for clip in x["parts"]:
            lines.append(f"- `{clip.source_path}` from {origin(clip.source_package, debian)}: licence "
                         f"**{clip.licence}**, class `{clip.label}`, bank clip `{clip.clip_id}`")
        lines.append("")
    return "\n".join(lines)


def measure(path: Path) -> str:
    info = sf.info(path)
    audio, rate = sf.read(path, dtype="float64")
    seconds, size = len(audio) / rate, path.stat().st_size
    if rate != RATE or info.channels != 1 or info.format != "FLAC":
        fail(f"{path}: {info.format} {rate} Hz x {info.channels}, not {RATE} Hz mono FLAC")
    if size > MAX_BYTES or seconds > MAX_SECONDS:
        fail(f"{path} is {seconds:.1f} s and {size / 1000:.0f} KB, over {MAX_SECONDS:.0f} s or "
             f"{MAX_BYTES // 1000} KB")
    peak = 20 * np.log10(np.abs(audio).max() + 1e-12)
    rms = 10 * np.log10(np.mean(audio ** 2) + 1e-12)
    return f"{path.name}: {seconds:.1f} s, peak {peak:.1f} dBFS, RMS {rms:.1f} dBFS, {size / 1000:.0f} KB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bank", type=Path, default=DEFAULT_BANK,
                        help="the held-out sound bank (default data/soundbank_heldout)")
    parser.add_argument("--out", type=Path, default=HERE, help="where the clips and ATTRIBUTION.md go")
    args = parser.parse_args(argv)
    clips = load_bank(args.bank)
    chosen = choose(held_out.build_items(args.bank), clips, args.bank)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, x in chosen.items():
        path = args.out / f"{name}.flac"
        path.write_bytes(x["flac"])
        print(measure(path))
    (args.out / "ATTRIBUTION.md").write_text(attribution(chosen), encoding="utf-8")
    stale = sorted(p.name for p in args.out.glob("*.flac") if p.stem not in chosen)
    if stale:  # the app lists every clip in examples/: an old one would ship without attribution
        print(f"warning: {args.out} holds clips the rule does not make, delete them: {', '.join(stale)}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
