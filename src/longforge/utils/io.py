"""Checkpoint hygiene: refuse corrupt or partial checkpoints with a message that names the file, and write
directories so that an interrupted save never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def check_safetensors_file(path: str | os.PathLike) -> None:
    """Raise ValueError unless ``path`` is a complete safetensors file: readable header, and exactly as many data
    bytes as the header's tensor offsets say (a truncated download or copy fails here, not deep in a loader)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint file {path} is missing")
    size = path.stat().st_size
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ValueError(f"{path} is not a safetensors file (only {size} bytes)")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > size - 8:
            raise ValueError(f"{path} is truncated or corrupt: header says {header_len} bytes, file has {size}")
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is corrupt: unreadable safetensors header ({e})") from e
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    expected = 8 + header_len + (max(ends) if ends else 0)
    if size != expected:
        raise ValueError(f"{path} is truncated or corrupt: expected {expected} bytes, found {size}")


def check_checkpoint_dir(path: str | os.PathLike) -> None:
    """Check a local model directory before loading: config present, weights are safetensors (pickles refused),
    every shard the index names exists and is complete."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ValueError(f"{path} is not a model directory: config.json is missing")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{index} is corrupt ({e})") from e
    elif (path / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.suffix != ".safetensors")
        hint = (
            f"; found {', '.join(pickles)}: pickled weights are refused (convert them to safetensors)"
            if pickles
            else ""
        )
        raise ValueError(f"no safetensors weights in {path}{hint}")
    for name in files:
        if not (path / name).is_file():
            raise ValueError(f"checkpoint {path} is incomplete: {name} (named in the index) is missing")
        check_safetensors_file(path / name)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``target``; on success move its files into ``target`` one
    ``os.replace`` at a time (config.json last, so a directory with a new config always has its new weights),
    drop stale weight files the new save no longer has, and remove the temporary directory. On failure the
    temporary directory is removed and ``target`` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        target.mkdir(exist_ok=True)
        new = sorted(p.name for p in tmp.iterdir())
        for name in sorted(new, key=lambda n: n == "config.json"):
            os.replace(tmp / name, target / name)
        for old in target.iterdir():
            if (
                old.suffix in WEIGHT_SUFFIXES + (".json",)
                and old.name.startswith(("model", "pytorch_model"))
                and old.name not in new
            ):
                old.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a file through a temporary sibling and os.replace: readers see the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
