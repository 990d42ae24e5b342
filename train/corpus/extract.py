"""Unpack the game archives that hide sound files inside one container.

Each unpacker writes the audio it finds under `outdir`, keeping the path inside the container, so the label table
(`soundbank_labels.tsv`) can match container paths the same way it matches plain package paths. Non-audio members
are skipped: they are most of the bytes and nothing downstream reads them.
"""
from __future__ import annotations

import re
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path

AUDIO_SUFFIXES = (".ogg", ".oga", ".wav", ".flac", ".aif", ".aiff", ".mp3")


class ExtractError(RuntimeError):
    """A container is not in the format its unpacker expects."""


def _write(outdir: Path, inner: str, blob: bytes) -> Path:
    target = outdir / inner.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(blob)
    return target


def qt_rcc(path: str | Path, outdir: str | Path) -> list[Path]:
    """Qt binary resource (.rcc, format 1-3): a name tree, a name table and a data block (entries may be zlib'd)."""
    data = Path(path).read_bytes()
    if data[:4] != b"qres":
        raise ExtractError(f"{path}: not a Qt .rcc file (magic {data[:4]!r}, expected b'qres')")
    version, tree, payload, names = struct.unpack(">IIII", data[4:20])
    if version not in (1, 2, 3):
        raise ExtractError(f"{path}: Qt .rcc format version {version} is not supported (1-3 are)")
    node_size = 14 if version == 1 else 22  # v2+ appends an 8-byte modification time
    written: list[Path] = []

    def name_at(offset: int) -> str:
        length = struct.unpack(">H", data[names + offset:names + offset + 2])[0]
        start = names + offset + 6  # 2-byte length, 4-byte hash
        return data[start:start + 2 * length].decode("utf-16-be")

    def walk(index: int, prefix: str) -> None:
        node = tree + index * node_size
        name_offset, flags = struct.unpack(">IH", data[node:node + 6])
        name = name_at(name_offset) if index else ""
        if flags & 2:  # directory: child count, first child index
            count, first = struct.unpack(">II", data[node + 6:node + 14])
            for child in range(first, first + count):
                walk(child, f"{prefix}{name}/" if index else "")
            return
        inner = prefix + name
        if not inner.lower().endswith(AUDIO_SUFFIXES):
            return
        offset = struct.unpack(">I", data[node + 10:node + 14])[0]
        size = struct.unpack(">I", data[payload + offset:payload + offset + 4])[0]
        blob = data[payload + offset + 4:payload + offset + 4 + size]
        if flags & 1:  # zlib, behind a 4-byte uncompressed length
            blob = zlib.decompress(blob[4:])
        elif flags & 4:
            raise ExtractError(f"{path}: {inner} is zstd-compressed, which this unpacker does not read")
        written.append(_write(Path(outdir), inner, blob))

    walk(0, "")
    return written


_TITLE = re.compile(r'"([^"]+)"')


def opensfx_cat(path: str | Path, outdir: str | Path) -> list[Path]:
    """OpenTTD's sample.cat: an offset/size table, then per sound a length-prefixed title and a WAV.

    The title carries the description and the licence ('"Ship horn". By ... License: CC0 ...'); the file is named
    `NN-<description>.wav` and the full title saved beside it as `.txt` so labels and licences can be read back.
    """
    data = Path(path).read_bytes()
    count = (struct.unpack("<I", data[:4])[0] & 0x7FFFFFFF) // 8
    if not 0 < count < 10_000:
        raise ExtractError(f"{path}: not an OpenTTD sound catalogue (implausible entry count {count})")
    written = []
    for index in range(count):
        offset, size = struct.unpack("<II", data[index * 8:index * 8 + 8])
        offset &= 0x7FFFFFFF
        title_len = data[offset]
        title = data[offset + 1:offset + 1 + title_len].rstrip(b"\0").decode("latin-1")
        wav = data[offset + 1 + title_len:offset + size]
        if wav[:4] != b"RIFF":
            continue  # the catalogue reserves a few empty slots
        match = _TITLE.search(title)
        description = match.group(1) if match else title.split(".")[0]
        slug = re.sub(r"[^a-z0-9]+", "_", description.lower()).strip("_")
        target = _write(Path(outdir), f"{index:02d}-{slug}.wav", wav)
        target.with_suffix(".txt").write_text(title, encoding="utf-8")
        written.append(target)
    return written


def zip_audio(path: str | Path, outdir: str | Path) -> list[Path]:
    """Zip-based packs (UFO:AI .pk3, Warzone .wz): extract only the audio members."""
    written = []
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if member.lower().endswith(AUDIO_SUFFIXES):
                    written.append(_write(Path(outdir), member, archive.read(member)))
    except zipfile.BadZipFile as error:
        raise ExtractError(f"{path}: not a zip archive ({error})") from error
    return written


def c4group(path: str | Path, tool: str | Path) -> list[Path]:
    """OpenClonk .ocg/.ocd groups: `c4group X -x` turns the file X into a folder X, nested groups included."""
    target = Path(path)
    result = subprocess.run([str(tool), str(target), "-x"], capture_output=True, text=True)
    if result.returncode != 0 or not target.is_dir():
        raise ExtractError(f"{path}: c4group failed (exit {result.returncode}): {result.stderr.strip()[:300]}")
    return [p for p in target.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES]
