"""Adapters for user-provided sources: HotpotQA / MuSiQue / Qasper (multi-hop and document QA), Wikipedia-style
JSONL documents, and math problems (DeepMath-103K / MATH format) in JSONL or Parquet.

``load_sources(paths)`` reads every file, recognises its format from its fields and returns a :class:`SourceBundle`.
Formats (the public releases' field names):

============  ===========================================================================================
HotpotQA      JSON list (or JSONL) of ``{_id, question, answer, supporting_facts, context: [[title, [sents]]]}``
MuSiQue       JSONL (or JSON list) of ``{id, question, answer, answer_aliases, answerable, paragraphs: [{title,
              paragraph_text, is_supporting}]}``; unanswerable items are skipped
Qasper        JSON ``{paper_id: {title, abstract, full_text: [{section_name, paragraphs}], qas: [{question,
              answers: [{answer: {unanswerable, extractive_spans, yes_no, free_form_answer}}]}]}}``
documents     JSONL / Parquet of ``{title, text}`` (Wikipedia dumps, any corpus)
math          JSONL / Parquet of ``{question, final_answer}`` (DeepMath-103K), ``{problem, solution}`` (MATH: the
              answer is the last ``\\boxed{}``) or ``{problem | question, answer}``
============  ===========================================================================================
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["QAItem", "MathProblem", "SourceBundle", "load_sources", "last_boxed"]


@dataclass
class QAItem:
    id: str
    question: str
    answers: list[str]
    documents: list[str]  # "Title\ntext" each
    supporting: list[int]  # indices into documents
    source: str  # hotpotqa | musique | qasper | builtin
    titles: list[str] = field(default_factory=list)


@dataclass
class MathProblem:
    id: str
    problem: str
    answer: str
    source: str  # deepmath | math | jsonl


@dataclass
class SourceBundle:
    qa: list[QAItem] = field(default_factory=list)
    documents: list[str] = field(default_factory=list)
    math: list[MathProblem] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # path -> recognised format

    def describe(self) -> str:
        return f"{len(self.qa)} QA items, {len(self.documents)} documents, {len(self.math)} math problems"


def last_boxed(solution: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in a MATH solution, braces matched."""
    for marker in ("\\boxed{", "\\fbox{"):
        start = solution.rfind(marker)
        if start < 0:
            continue
        i, depth = start + len(marker), 1
        out = []
        while i < len(solution):
            c = solution[i]
            depth += c == "{"
            depth -= c == "}"
            if depth == 0:
                return "".join(out).strip()
            out.append(c)
            i += 1
    return None


# ------------------------------------------------------------------------------------------------ reading


def _rows(path: Path) -> list:
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as e:  # pragma: no cover
            raise ValueError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from e
        return pq.read_table(path).to_pylist()
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        rows = []
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path} line {i} is not valid JSON: {e}") from e
        return rows
    if path.suffix == ".json":
        if not text.strip():
            return []
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e
        return data if isinstance(data, list) else [data]
    raise ValueError(f"{path}: source files must be .json, .jsonl or .parquet")


def _kind(row, path: Path) -> str:
    if not isinstance(row, dict):
        raise ValueError(f"{path}: expected JSON objects, found {type(row).__name__}")
    keys = set(row)
    if {"question", "context", "supporting_facts"} <= keys:
        return "hotpotqa"
    if {"question", "paragraphs"} <= keys:
        return "musique"
    if keys and all(isinstance(v, dict) and "qas" in v and "full_text" in v for v in row.values()):
        return "qasper"
    if {"title", "text"} <= keys:
        return "documents"
    if keys & {"question", "problem"} and keys & {"final_answer", "answer", "solution"}:
        return "math"
    raise ValueError(
        f"{path}: unrecognised record with fields {sorted(keys)[:12]}; expected HotpotQA, MuSiQue, Qasper, "
        "{title, text} documents or math problems ({question, final_answer} / {problem, solution})"
    )


def _hotpot(row: dict, i: int, full: dict[str, str]) -> QAItem:
    titles = [t for t, _ in row["context"]]
    docs = []
    for title, sents in row["context"]:
        # "HotpotQA with full Wikipedia articles": use the whole article when the user's documents have it
        docs.append(f"{title}\n{full[title]}" if title in full else f"{title}\n{''.join(sents).strip()}")
    support_titles = {t for t, _ in row["supporting_facts"]}
    return QAItem(
        id=str(row.get("_id", row.get("id", i))),
        question=row["question"].strip(),
        answers=[str(row["answer"]).strip()],
        documents=docs,
        supporting=[j for j, t in enumerate(titles) if t in support_titles],
        source="hotpotqa",
        titles=titles,
    )


def _musique(row: dict, i: int) -> QAItem | None:
    if row.get("answerable") is False:
        return None
    paras = row["paragraphs"]
    answers = [str(row["answer"]).strip(), *[str(a).strip() for a in row.get("answer_aliases") or []]]
    return QAItem(
        id=str(row.get("id", i)),
        question=row["question"].strip(),
        answers=list(dict.fromkeys(a for a in answers if a)),
        documents=[f"{p.get('title', '')}\n{p['paragraph_text'].strip()}".strip() for p in paras],
        supporting=[j for j, p in enumerate(paras) if p.get("is_supporting")],
        source="musique",
        titles=[p.get("title", "") for p in paras],
    )


def _qasper(papers: dict) -> list[QAItem]:
    items = []
    for pid, paper in papers.items():
        parts = [paper.get("title", ""), paper.get("abstract", "")]
        for section in paper.get("full_text") or []:
            if section.get("section_name"):
                parts.append(section["section_name"])
            parts += [p for p in section.get("paragraphs") or [] if p]
        document = "\n".join(p.strip() for p in parts if p and p.strip())
        for k, qa in enumerate(paper.get("qas") or []):
            answers = []
            for ann in qa.get("answers") or []:
                a = ann.get("answer", ann)
                if a.get("unanswerable"):
                    continue
                if a.get("yes_no") is not None:
                    answers.append("yes" if a["yes_no"] else "no")
                elif a.get("extractive_spans"):
                    answers.append(", ".join(s.strip() for s in a["extractive_spans"]))
                elif a.get("free_form_answer"):
                    answers.append(a["free_form_answer"].strip())
            answers = list(dict.fromkeys(a for a in answers if a))
            if answers:
                items.append(
                    QAItem(
                        id=str(qa.get("question_id", f"{pid}-{k}")),
                        question=qa["question"].strip(),
                        answers=answers,
                        documents=[document],
                        supporting=[0],
                        source="qasper",
                        titles=[paper.get("title", "")],
                    )
                )
    return items


def _math(row: dict, i: int, path: Path) -> MathProblem | None:
    problem = row.get("question") or row.get("problem")
    if row.get("final_answer") is not None:
        answer, source = str(row["final_answer"]), "deepmath"
    elif row.get("answer") is not None:
        answer, source = str(row["answer"]), "jsonl"
    else:
        answer, source = last_boxed(str(row.get("solution") or "")), "math"
    if not problem or not answer:
        return None
    return MathProblem(
        id=str(row.get("id", row.get("unique_id", f"{path.stem}-{i}"))),
        problem=problem.strip(),
        answer=answer.strip(),
        source=source,
    )


def load_sources(paths: Iterable[str | os.PathLike]) -> SourceBundle:
    """Read user sources (files, or directories of .json / .jsonl / .parquet files) into a :class:`SourceBundle`.

    Raises ValueError naming the file when a file is missing, empty, or in no recognised format."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix in (".json", ".jsonl", ".parquet"))
            if not found:
                raise ValueError(f"source directory {p} holds no .json, .jsonl or .parquet files")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise ValueError(f"source {p} does not exist")
    if not files:
        raise ValueError("no source files given")
    bundle = SourceBundle()
    parsed = []
    for f in files:
        rows = _rows(f)
        if not rows:
            raise ValueError(f"source {f} is empty: no records")
        kind = _kind(rows[0], f)
        parsed.append((f, kind, rows))
        bundle.files[str(f)] = kind
    # documents first, so HotpotQA can swap its paragraphs for the full articles
    full: dict[str, str] = {}
    for f, kind, rows in parsed:
        if kind == "documents":
            before = len(bundle.documents)
            for row in rows:
                text = str(row.get("text") or "").strip()
                if text:
                    title = str(row.get("title") or "").strip()
                    bundle.documents.append(f"{title}\n{text}" if title else text)
                    full.setdefault(title, text)
            if len(bundle.documents) == before:
                raise ValueError(f"source {f} (documents) has no document with text")
    for f, kind, rows in parsed:
        before = (len(bundle.qa), len(bundle.math), len(bundle.documents))
        for i, row in enumerate(rows):
            if kind == "hotpotqa":
                bundle.qa.append(_hotpot(row, i, full))
            elif kind == "musique":
                item = _musique(row, i)
                if item is not None:
                    bundle.qa.append(item)
            elif kind == "qasper":
                bundle.qa += _qasper(row)
            elif kind == "math":
                prob = _math(row, i, f)
                if prob is not None:
                    bundle.math.append(prob)
        after = (len(bundle.qa), len(bundle.math), len(bundle.documents))
        if kind != "documents" and after == before:
            raise ValueError(f"source {f} ({kind}) has no usable items (all unanswerable or without an answer)")
    return bundle
