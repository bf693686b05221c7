"""One evaluation run, as a typed config: what ``longforge eval`` does, callable from Python.

from longforge.eval import EvalConfig, run_eval
results = run_eval(EvalConfig(model="path/to/hf-dir", suite="ruler-lite", lengths=[4096, 8192], out="runs/x"))
"""

from __future__ import annotations

import platform
import subprocess
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from .niah import DEFAULT_DEPTHS, check_depths, evaluate_niah
from .ruler import SUITES, evaluate, resolve_tasks

# Per suite: default lengths and samples per (task, length) cell. RULER runs 500 samples at 4K–128K; ruler-lite
# and niah are quick looks.
SUITE_DEFAULTS = {
    "ruler": ((4096, 8192, 16384, 32768, 65536, 131072), 500),
    "ruler-lite": ((4096, 8192, 16384), 50),
    "niah": ((1024, 2048, 4096, 8192), 5),
}


@dataclass
class EvalConfig:
    """Everything that decides an evaluation's numbers; written into ``results.json`` as ``config``."""

    model: str
    suite: str = "ruler"  # ruler | ruler-lite | niah
    lengths: list[int] | None = None  # None: the suite's default lengths
    samples: int | None = None  # per (task, length) or (depth, length) cell; None: the suite's default
    tasks: list[str] | None = None  # ruler suites only: evaluate these tasks instead of the whole suite
    depths: list[float] | None = None  # niah only: needle depths in percent; None: 0, 10, ..., 100
    batch_size: int = 4
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    chat_template: bool = False  # wrap each prompt in the tokenizer's chat template (instruct models)
    qa_squad: str | None = None  # SQuAD v2.0 dev JSON for qa_1; None: the synthetic set
    qa_hotpotqa: str | None = None  # HotpotQA dev (distractor) JSON for qa_2; None: the synthetic set
    out: str | None = None  # report folder; None: return the results without writing files

    def resolved(self) -> EvalConfig:
        """A copy with suite defaults filled in, validated (ValueError names the bad field)."""
        if self.suite not in SUITE_DEFAULTS:
            raise ValueError(f"suite must be one of {', '.join(SUITE_DEFAULTS)}, got {self.suite!r}")
        default_lengths, default_samples = SUITE_DEFAULTS[self.suite]
        lengths = sorted({int(n) for n in (self.lengths or default_lengths)})
        if lengths[0] <= 0:
            raise ValueError(f"lengths must be positive, got {lengths}")
        samples = default_samples if self.samples is None else int(self.samples)
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        tasks, depths = None, None
        if self.suite == "niah":
            if self.tasks:
                raise ValueError("tasks applies to the ruler suites; the niah suite has one task (use depths)")
            depths = check_depths(self.depths if self.depths is not None else DEFAULT_DEPTHS)
        else:
            if self.depths is not None:
                raise ValueError("depths applies to the niah suite only")
            tasks = resolve_tasks(self.tasks) if self.tasks else list(SUITES[self.suite])
        for name, path in (("qa_squad", self.qa_squad), ("qa_hotpotqa", self.qa_hotpotqa)):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name}: QA file not found: {path}")
        if self.out is not None and Path(self.out).exists() and not Path(self.out).is_dir():
            raise ValueError(f"out: {self.out} exists and is not a directory")
        return EvalConfig(**{**asdict(self), "lengths": lengths, "samples": samples, "tasks": tasks, "depths": depths})


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def environment(model) -> dict:
    import torch
    import transformers

    import longforge

    parameter = next(model.parameters(), None)
    return {
        "longforge": longforge.__version__,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(parameter.device) if parameter is not None else None,
        "dtype": str(parameter.dtype).replace("torch.", "") if parameter is not None else None,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "model_class": type(model).__name__,
    }


def run_eval(config: EvalConfig, model=None, tokenizer=None, progress: bool = True) -> dict:
    """Validate ``config``, load the model (unless ``model`` and ``tokenizer`` are given), evaluate, and write the
    report into ``config.out`` (if set). Returns the results dict (what ``results.json`` holds, plus predictions)."""
    from .loading import load_model, load_tokenizer
    from .niah import NIAH_TASK
    from .ruler import check_length, check_tokenizer

    config = config.resolved()
    if tokenizer is None:
        tokenizer = load_tokenizer(config.model)
    check_tokenizer(tokenizer)  # every check that needs only the tokenizer runs before the weights load
    qa_files = {k: v for k, v in (("qa_1", config.qa_squad), ("qa_2", config.qa_hotpotqa)) if v is not None}
    for task in [NIAH_TASK] if config.suite == "niah" else config.tasks:
        check_length(task, tokenizer, config.lengths[0], chat_template=config.chat_template, qa_file=qa_files.get(task))
    if model is None:
        model = load_model(config.model, config.device, config.dtype)
    max_positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if max_positions and max(config.lengths) > max_positions:
        warnings.warn(
            f"evaluating at {max(config.lengths)} tokens, beyond the model's max_position_embeddings={max_positions}",
            stacklevel=2,
        )
    start = time.time()
    common = dict(seed=config.seed, chat_template=config.chat_template, progress=progress)
    if config.suite == "niah":
        results = evaluate_niah(
            model, tokenizer, config.lengths, config.depths, config.samples, config.batch_size, **common
        )
    else:
        results = evaluate(
            model, tokenizer, config.tasks, config.lengths, config.samples, config.batch_size, qa_files=qa_files,
            **common,
        )  # fmt: skip
    results = {
        "suite": config.suite,
        "model": config.model,
        **results,
        "elapsed_s": round(time.time() - start, 1),
        "config": asdict(config),
        "environment": environment(model),
    }
    if config.out is not None:
        from .report import write_report

        write_report(config.out, results)
    return results
