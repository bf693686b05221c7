"""RL records and their files.

A record is ``{id, family, dataset, prompt, answers, reward_type, context_tokens, metadata}``: ``answers`` lists the
acceptable gold answers (a reward takes the best match), ``reward_type`` keys :mod:`longforge.train.rewards`,
``context_tokens`` is the prompt's exact length with the policy tokenizer, ``metadata`` holds what the generator
placed (needle positions, derived values, chain keys ...) so labels can be re-checked.

Files are JSONL (one record a line) or Parquet (``metadata`` stored as a JSON string column), written through a
temporary sibling and ``os.replace``: a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ...utils.io import atomic_write_bytes, atomic_write_text

__all__ = ["RLRecord", "FAMILIES", "read_records", "write_records", "is_heldout"]

# dataset -> family (Beyond Reward Engineering §1.2)
FAMILIES = {
    "FuzzyNeedle": "retrieval",
    "MultiNeedle": "retrieval",
    "CrossEntity": "multi_evidence",
    "WebSearch": "multi_evidence",
    "MultiQuery": "multi_evidence",
    "KeyChain": "multi_evidence",
    "LongDocQA": "multi_evidence",
    "LongMath": "reasoning",
}
RECORD_FIELDS = ("id", "family", "dataset", "prompt", "answers", "reward_type", "context_tokens", "metadata")


@dataclass
class RLRecord:
    id: str
    family: str
    dataset: str
    prompt: str
    answers: list[str]
    reward_type: str
    context_tokens: int
    metadata: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "record") -> RLRecord:
        missing = [k for k in RECORD_FIELDS if k not in data]
        if missing:
            raise ValueError(f"{where} is not an RL record: missing field(s) {', '.join(missing)}")
        meta = data["metadata"]
        if isinstance(meta, str):
            meta = json.loads(meta) if meta else {}
        answers = data["answers"]
        if isinstance(answers, str) or not all(isinstance(a, str) for a in answers):
            raise ValueError(f"{where}: answers must be a list of strings, got {answers!r}")
        return cls(
            id=str(data["id"]),
            family=str(data["family"]),
            dataset=str(data["dataset"]),
            prompt=str(data["prompt"]),
            answers=list(answers),
            reward_type=str(data["reward_type"]),
            context_tokens=int(data["context_tokens"]),
            metadata=dict(meta or {}),
        )


def is_heldout(record_id: str, fraction: float) -> bool:
    """A split that depends on the id only (not on the seed, order or other records)."""
    if fraction <= 0:
        return False
    h = int.from_bytes(hashlib.sha256(record_id.encode()).digest()[:8], "big")
    return h / 2**64 < fraction


def write_records(records: Iterable[RLRecord], path: str | os.PathLike) -> Path:
    """Write records as JSONL (``.jsonl``) or Parquet (``.parquet``), atomically."""
    path = Path(path)
    rows = [r.to_dict() if isinstance(r, RLRecord) else dict(r) for r in records]
    if path.suffix == ".jsonl":
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    elif path.suffix == ".parquet":
        pa, pq = _pyarrow()
        import io

        columns = {k: [r[k] for r in rows] for k in RECORD_FIELDS}
        columns["metadata"] = [json.dumps(m, ensure_ascii=False) for m in columns["metadata"]]
        schema = pa.schema(
            [
                ("id", pa.string()),
                ("family", pa.string()),
                ("dataset", pa.string()),
                ("prompt", pa.string()),
                ("answers", pa.list_(pa.string())),
                ("reward_type", pa.string()),
                ("context_tokens", pa.int64()),
                ("metadata", pa.string()),
            ]
        )
        buf = io.BytesIO()
        pq.write_table(pa.table(columns, schema=schema), buf)
        atomic_write_bytes(path, buf.getvalue())
    else:
        raise ValueError(f"{path}: record files must end in .jsonl or .parquet")
    return path


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ValueError("Parquet files need pyarrow: pip install pyarrow") from e
    return pa, pq


def read_records(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[RLRecord]:
    """Read records from files or directories (every ``*.jsonl`` / ``*.parquet`` inside, sorted by name)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix in (".jsonl", ".parquet") and not q.name.startswith("."))
            if not found:
                raise ValueError(f"{p} holds no .jsonl or .parquet record files")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise ValueError(f"record file {p} does not exist")
    out: list[RLRecord] = []
    for f in files:
        if f.suffix == ".parquet":
            _, pq = _pyarrow()
            for i, row in enumerate(pq.read_table(f).to_pylist()):
                out.append(RLRecord.from_dict(row, f"{f} row {i}"))
        elif f.suffix == ".jsonl":
            with f.open(encoding="utf-8") as fh:
                for i, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            row = json.loads(line)
                        except json.JSONDecodeError as e:
                            raise ValueError(f"{f} line {i} is not valid JSON: {e}") from e
                        out.append(RLRecord.from_dict(row, f"{f} line {i}"))
        else:
            raise ValueError(f"{f}: record files must end in .jsonl or .parquet")
    if not out:
        raise ValueError(f"no records in {', '.join(map(str, files))}")
    return out
