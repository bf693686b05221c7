"""The offline prose corpus: documentation text that exists on any machine with Python.

Why the standard library's documentation
    The embedded teacher must train with no download, so its English has to come from files every machine already
    has. The installed standard library carries ~2 MB of hand-written English in its docstrings and in
    ``pydoc_data.topics`` (the Language Reference sections that ``help()`` prints). Packages longforge depends on
    (numpy, torch) carry several MB more and are present wherever longforge is installed, so they can be added by
    name (``sources=("stdlib", "numpy", "torch")``).

How it is read
    Python sources are *parsed* with :mod:`ast` (``ast.get_docstring``), never imported: no import side effects,
    no GUI windows, no network, and the same text on every run. Only extension modules that have no Python source
    (``math``, ``itertools``, ``builtins``...) are imported, from a fixed allow-list, and read with
    :func:`inspect.getdoc`. Module names are sorted, objects are visited in source order, and identical docstrings
    are kept once, so the corpus is a pure function of the installed files.

    One document per module: the module docstring, then each public class / function / method as
    ``name(signature)`` followed by its cleaned docstring. Cleaning removes doctest sessions (``>>>`` blocks and
    their output), reST roles and directives and section underlines.

Held-out split
    A document is held out when a hash of its *name* falls in the held-out fraction: the split does not depend on
    the seed, on the order of documents, or on which other documents exist, so held-out losses stay comparable
    across runs and machines.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import json
import os
import re
import sys
import sysconfig
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

__all__ = [
    "CORPUS_VERSION",
    "DEFAULT_PROSE_SOURCES",
    "Document",
    "clean_docstring",
    "essay_sentences",
    "is_heldout",
    "prose_documents",
    "prose_fingerprint",
    "split_documents",
]

# Bump when the extraction or the cleaning changes, so cached corpora are rebuilt.
CORPUS_VERSION = 1
# numpy and torch are installed wherever longforge is (torch directly, numpy through transformers); together they
# add ~5 MB to the standard library's ~2 MB. "transformers" adds ~5 MB more, heavy with templated argument lists.
DEFAULT_PROSE_SOURCES = ("stdlib", "numpy", "torch")

# Top-level stdlib names never read: GUIs and demos (tkinter, turtle, idlelib), Easter eggs that print or open a
# browser when imported (this, antigravity), test suites, bundled wheels, and platform-only modules.
_STDLIB_EXCLUDED = frozenset(
    "antigravity this idlelib tkinter turtle turtledemo test lib2to3 ensurepip pydoc_data site-packages "
    "dist-packages msilib msvcrt winreg winsound nt _winapi".split()
)
# Directories skipped inside any package: test suites and vendored code.
_SKIPPED_DIRS = frozenset("test tests testing idle_test __pycache__ _vendor vendored third_party benchmarks".split())
# Extension modules (no .py source) whose docstrings are read by importing them. Importing these has no side effect.
_EXTENSION_MODULES = (
    "array",
    "binascii",
    "builtins",
    "cmath",
    "errno",
    "gc",
    "itertools",
    "marshal",
    "math",
    "select",
    "sys",
    "time",
    "unicodedata",
    "zlib",
)
_MAX_FILE_BYTES = 2_000_000  # generated tables, not prose
_MIN_DOC_CHARS = 40


@dataclass(frozen=True)
class Document:
    """One prose document: ``name`` is stable across runs (``"stdlib:json.decoder"``), ``text`` is cleaned."""

    name: str
    text: str


# ----------------------------------------------------------------------------------------------------- cleaning

_ROLE = re.compile(r":(?:[\w-]+:)*[\w-]+:`([^`]+)`")
_DOUBLE_LITERAL = re.compile(r"``([^`]+)``")
_SINGLE_LITERAL = re.compile(r"`([^`\n]+)`_{0,2}")
_DIRECTIVE = re.compile(r"^\s*\.\.\s+[\w:|-]+(::|:).*$")
_UNDERLINE = re.compile(r"^\s*([-=~^*+#])\1{2,}\s*$")
_BLANK_RUN = re.compile(r"\n{3,}")


def _role_text(match: re.Match) -> str:
    text = match.group(1)
    titled = re.match(r"^(.*?)\s*<[^>]+>$", text, flags=re.S)  # :ref:`title <target>` -> title
    if titled and titled.group(1):
        return titled.group(1)
    if text.startswith("~"):  # :func:`~a.b.c` renders as c
        return text[1:].rsplit(".", 1)[-1]
    return text.lstrip("!")


def clean_docstring(doc: str) -> str:
    """Plain text from a (``inspect.cleandoc``-ed) docstring: no doctests, reST roles, directives or underlines.

    Returns ``""`` when what is left is too short or not mostly letters (tables, code-only docstrings).
    """
    lines = []
    in_doctest = False
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped.startswith(">>>"):
            in_doctest = True  # a session runs until the next blank line: prompts, continuations, outputs
            continue
        if in_doctest:
            if stripped:
                continue
            in_doctest = False
        if _DIRECTIVE.match(line) or _UNDERLINE.match(line):
            continue
        lines.append(line.rstrip())
    text = "\n".join(lines)
    text = _ROLE.sub(_role_text, text)
    text = _DOUBLE_LITERAL.sub(r"\1", text)
    text = _SINGLE_LITERAL.sub(r"\1", text)
    text = _BLANK_RUN.sub("\n\n", text).strip()
    if len(text) < _MIN_DOC_CHARS or len(text.split()) < 6:
        return ""
    visible = [c for c in text if not c.isspace()]
    if sum(c.isalpha() for c in visible) < 0.6 * len(visible):
        return ""
    return text


# --------------------------------------------------------------------------------------------------- extraction


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    args = ast.unparse(node.args)
    return args if len(args) <= 100 else args[:97] + "..."


def _module_text(module: str, tree: ast.Module, seen: set[str]) -> str:
    """The document of one parsed module: its docstring, then each public object with a docstring, in source order."""
    sections = []

    def add(title: str, node) -> None:
        doc = ast.get_docstring(node, clean=True)
        if not doc:
            return
        doc = clean_docstring(doc)
        if doc and doc not in seen:
            seen.add(doc)
            sections.append(f"{title}\n{doc}" if title else doc)

    def visit(body: list, prefix: str) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if not node.name.startswith("_") or node.name == "__init__":
                    add(f"{prefix}{node.name}({_signature(node)})", node)
            elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                bases = ", ".join(ast.unparse(b) for b in node.bases)
                add(f"class {prefix}{node.name}" + (f"({bases})" if bases else ""), node)
                visit(node.body, f"{prefix}{node.name}.")

    add("", tree)
    visit(tree.body, "")
    if not sections:
        return ""
    return f"{module}\n\n" + "\n\n".join(sections)


def _package_files(top: Path, module: str) -> list[tuple[str, Path]]:
    """(dotted module name, path) for a module file or every public module of a package directory, sorted."""
    if top.is_file():
        return [(module, top)]
    out = []
    for root, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS and not d.startswith("."))
        for name in sorted(files):
            if not name.endswith(".py") or name.startswith("test_"):
                continue
            path = Path(root) / name
            rel = path.relative_to(top.parent).with_suffix("")
            dotted = ".".join(rel.parts)
            out.append((dotted.removesuffix(".__init__"), path))
    return out


def _read_modules(prefix: str, files: Iterable[tuple[str, Path]], seen: set[str]) -> list[Document]:
    docs = []
    for module, path in files:
        try:
            if path.stat().st_size > _MAX_FILE_BYTES:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue  # a file this Python cannot parse (another version's syntax, a broken encoding)
        text = _module_text(module, tree, seen)
        if text:
            docs.append(Document(f"{prefix}:{module}", text))
    return docs


def _stdlib_documents(seen: set[str]) -> list[Document]:
    root = Path(sysconfig.get_paths()["stdlib"])
    names = sorted(
        n for n in getattr(sys, "stdlib_module_names", ()) if not n.startswith("__") and n not in _STDLIB_EXCLUDED
    )
    files = []
    for name in names:
        for candidate in (root / f"{name}.py", root / name):
            if candidate.exists():
                files.extend(_package_files(candidate, name))
                break
    docs = _read_modules("stdlib", files, seen)
    docs.extend(_extension_documents(seen))
    docs.extend(_topic_documents(root, seen))
    return docs


def _extension_documents(seen: set[str]) -> list[Document]:
    """Docstrings of C modules that have no Python source (``math``, ``builtins``...), read with inspect."""
    docs = []
    for name in _EXTENSION_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if getattr(module, "__file__", "") and str(module.__file__).endswith(".py"):
            continue  # has Python source: read by the parser instead
        objects = [("", module)]
        for attr, value in sorted(vars(module).items()):
            if attr.startswith("_") or not (inspect.isroutine(value) or inspect.isclass(value)):
                continue
            if getattr(value, "__module__", name) != name:
                continue
            objects.append((f"class {attr}" if inspect.isclass(value) else f"{attr}(...)", value))
            if inspect.isclass(value):
                for meth, member in sorted(vars(value).items()):
                    if not meth.startswith("_") and callable(member):
                        objects.append((f"{attr}.{meth}(...)", member))
        sections = []
        for title, obj in objects:
            doc = clean_docstring(inspect.getdoc(obj) or "")
            if doc and doc not in seen:
                seen.add(doc)
                sections.append(f"{title}\n{doc}" if title else doc)
        if sections:
            docs.append(Document(f"stdlib:{name}", f"{name}\n\n" + "\n\n".join(sections)))
    return docs


def _topic_documents(stdlib_root: Path, seen: set[str]) -> list[Document]:
    """The Language Reference topics that ``help("topic")`` prints, read from ``pydoc_data/topics.py`` by parsing."""
    path = stdlib_root / "pydoc_data" / "topics.py"
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return []
    topics: dict = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "topics" for t in node.targets):
            try:
                topics = ast.literal_eval(node.value)
            except ValueError:
                return []
    docs = []
    for key in sorted(topics):
        text = clean_docstring(inspect.cleandoc(str(topics[key])))
        if text and text not in seen:
            seen.add(text)
            docs.append(Document(f"stdlib-topics:{key}", text))
    return docs


def _installed_package_documents(package: str, seen: set[str]) -> list[Document]:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
        raise ValueError(f"prose source {package!r}: the package is not installed (or has no Python source)")
    init = Path(spec.origin)
    top = init.parent if init.name == "__init__.py" else init
    return _read_modules(package, _package_files(top, package), seen)


def _source_version(source: str) -> str:
    if source == "stdlib":
        return sys.version.split()[0]
    try:
        return metadata.version(source)
    except metadata.PackageNotFoundError:
        return "unknown"


def prose_fingerprint(sources: Sequence[str] = DEFAULT_PROSE_SOURCES) -> str:
    """A short string naming what the corpus was read from: sources, their versions, the extractor version."""
    parts = [f"v{CORPUS_VERSION}"] + [f"{s}={_source_version(s)}" for s in sources]
    return ",".join(parts)


def prose_documents(
    sources: Sequence[str] = DEFAULT_PROSE_SOURCES, *, cache_dir: str | os.PathLike | None = None
) -> list[Document]:
    """All prose documents of ``sources`` ("stdlib" and/or installed package names), in a fixed order.

    With ``cache_dir`` the documents are written once to ``<cache_dir>/prose-<hash>.jsonl`` (keyed by
    :func:`prose_fingerprint`) and read back on later calls: parsing torch's sources takes tens of seconds.
    """
    sources = tuple(sources)
    if not sources:
        raise ValueError("prose sources: give at least one of 'stdlib' or an installed package name")
    cache_path = None
    if cache_dir is not None:
        key = hashlib.sha1(prose_fingerprint(sources).encode()).hexdigest()[:16]
        cache_path = Path(cache_dir) / f"prose-{key}.jsonl"
        if cache_path.is_file():
            with open(cache_path, encoding="utf-8") as f:
                return [Document(**json.loads(line)) for line in f]
    seen: set[str] = set()
    docs: list[Document] = []
    for source in sources:
        docs.extend(_stdlib_documents(seen) if source == "stdlib" else _installed_package_documents(source, seen))
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            for doc in docs:
                f.write(json.dumps({"name": doc.name, "text": doc.text}, ensure_ascii=False) + "\n")
        os.replace(tmp, cache_path)  # atomic: a killed build never leaves a truncated cache
    return docs


# ------------------------------------------------------------------------------------------------------- splits


def is_heldout(name: str, heldout_fraction: float) -> bool:
    """Whether the document called ``name`` belongs to the held-out split (a hash of the name, not of the seed)."""
    digest = int.from_bytes(hashlib.sha1(name.encode("utf-8")).digest()[:8], "big")
    return digest / 2**64 < heldout_fraction


def split_documents(docs: Sequence[Document], heldout_fraction: float = 0.03) -> tuple[list, list]:
    """``(train, heldout)``: the held-out documents are never used for training, the tokenizer or haystacks."""
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    train, heldout = [], []
    for doc in docs:
        (heldout if is_heldout(doc.name, heldout_fraction) else train).append(doc)
    return train, heldout


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'])")
_HEADING = re.compile(r"^(class\s+)?[\w.]+(\(.*\))?$")  # "name(signature)" / "class Name(Base)" lines


def essay_sentences(docs: Iterable[Document], min_words: int = 4) -> list[str]:
    """Sentences of the documents with whitespace collapsed, RULER's 'essay' haystack style (one long paragraph).

    Object headings (``name(signature)``, ``class Name``) are dropped, and so are sentences of fewer than
    ``min_words`` words or with few letters (code, tables).
    """
    out = []
    for doc in docs:
        for paragraph in doc.text.split("\n\n"):
            lines = paragraph.split("\n")
            if _HEADING.match(lines[0].strip()):
                lines = lines[1:]  # the heading of a documented object, not a sentence
            flat = " ".join(" ".join(lines).split())
            for sentence in _SENTENCE_END.split(flat):
                if len(sentence.split()) >= min_words and sum(c.isalpha() for c in sentence) > 0.6 * len(sentence):
                    out.append(sentence)
    return out
