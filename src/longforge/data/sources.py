"""Text from a user's local data: JSONL, Parquet, or a ``datasets.save_to_disk`` directory.

Every reader returns the non-empty strings of one field (``text`` by default) in file order, and every failure is
a ``ValueError`` that names the path: a missing path, an unreadable or empty file, a missing field, a value that
is not a string. Parquet needs ``pyarrow`` and ``load_from_disk`` needs ``datasets``; both are imported only when
such a file is read, with an error that says what to install.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["read_jsonl", "read_parquet", "read_saved_dataset", "read_texts"]


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise ValueError(f"data path does not exist: {path}")


def _finish(texts: list[str], path: Path, field: str) -> list[str]:
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError(f"no non-empty {field!r} texts in {path}")
    return texts


def read_jsonl(path: str | os.PathLike, field: str = "text") -> list[str]:
    """The ``field`` strings of a JSON-lines file (one object per line; blank lines are skipped)."""
    path = Path(path)
    _check_exists(path)
    if not path.is_file():
        raise ValueError(f"JSONL path is not a file: {path}")
    texts = []
    try:
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{line_no}: not valid JSON ({e.msg})") from None
                if not isinstance(record, dict):
                    raise ValueError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
                if field not in record:
                    raise ValueError(f"{path}:{line_no}: no field {field!r} (fields: {sorted(record)})")
                value = record[field]
                if not isinstance(value, str):
                    raise ValueError(f"{path}:{line_no}: field {field!r} is {type(value).__name__}, not a string")
                texts.append(value)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror})") from None
    return _finish(texts, path, field)


def _column_strings(values: list, field: str, where: str) -> list[str]:
    for i, value in enumerate(values):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{where}: row {i} of field {field!r} is {type(value).__name__}, not a string")
    return [v for v in values if v is not None]


def read_parquet(path: str | os.PathLike, field: str = "text") -> list[str]:
    """The ``field`` column of a Parquet file, or of every ``*.parquet`` file of a directory in name order."""
    path = Path(path)
    _check_exists(path)
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(f"reading {path} needs pyarrow: pip install pyarrow") from None
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"no *.parquet files in directory {path}")
    texts = []
    for file in files:
        try:  # pyarrow's errors (some subclass ValueError) get a message that names the file
            names = pq.read_schema(file).names
            column = pq.read_table(file, columns=[field]).column(field).to_pylist() if field in names else None
        except Exception as e:
            raise ValueError(f"{file}: cannot be read as Parquet ({e})") from None
        if column is None:
            raise ValueError(f"{file}: no field {field!r} (fields: {sorted(names)})")
        texts.extend(_column_strings(column, field, str(file)))
    return _finish(texts, path, field)


def read_saved_dataset(path: str | os.PathLike, field: str = "text", split: str | None = None) -> list[str]:
    """The ``field`` column of a dataset saved with ``datasets``' ``save_to_disk`` (a DatasetDict needs ``split``,
    which defaults to ``"train"`` when there is one)."""
    path = Path(path)
    _check_exists(path)
    try:
        import datasets
    except ImportError:
        raise ValueError(f"reading {path} needs the datasets package: pip install datasets") from None
    try:
        data = datasets.load_from_disk(str(path))
    except Exception as e:  # FileNotFoundError for a directory that is not a saved dataset, and others
        raise ValueError(f"{path}: cannot be loaded with datasets.load_from_disk ({e})") from None
    if isinstance(data, datasets.DatasetDict):
        if split is None:
            split = "train" if "train" in data else None
        if split not in data:
            raise ValueError(f"{path}: choose a split, one of {sorted(data)} (got {split!r})")
        data = data[split]
    if field not in data.column_names:
        raise ValueError(f"{path}: no field {field!r} (fields: {sorted(data.column_names)})")
    return _finish(_column_strings(data[field], field, str(path)), path, field)


def read_texts(
    path: str | os.PathLike, field: str = "text", *, format: str | None = None, split: str | None = None
) -> list[str]:
    """Read texts from ``path``, choosing the reader from ``format`` or else from the path.

    ``format``: ``"jsonl"`` (also for ``.json`` lines files), ``"parquet"``, or ``"disk"`` (``load_from_disk``).
    Without it: ``*.jsonl`` / ``*.json`` -> jsonl, ``*.parquet`` or a directory of them -> parquet, a directory
    with ``dataset_info.json``, ``state.json`` or ``dataset_dict.json`` -> disk.
    """
    path = Path(path)
    _check_exists(path)
    if format is None:
        if path.is_dir():
            if any((path / name).exists() for name in ("dataset_dict.json", "state.json", "dataset_info.json")):
                format = "disk"
            elif any(path.glob("*.parquet")):
                format = "parquet"
            else:
                raise ValueError(f"{path}: a directory with neither a saved dataset nor *.parquet files")
        elif path.suffix in (".jsonl", ".json"):
            format = "jsonl"
        elif path.suffix == ".parquet":
            format = "parquet"
        else:
            raise ValueError(f"{path}: unknown data format; give format= one of jsonl, parquet, disk")
    if format == "jsonl":
        return read_jsonl(path, field)
    if format == "parquet":
        return read_parquet(path, field)
    if format == "disk":
        return read_saved_dataset(path, field, split)
    raise ValueError(f"format must be one of jsonl, parquet, disk; got {format!r}")
