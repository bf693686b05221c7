"""Long-context evaluation: RULER's 13 tasks (faithful to NVIDIA/RULER, offline), a NIAH depth × length sweep,
reports (JSON, markdown, PNG), ``longforge eval``, and an lm-evaluation-harness adapter (``longforge.eval.harness``,
needs the ``eval`` extra). See docs/eval.md.
"""

from .loading import BUILTIN_MODELS, load_model, load_model_and_tokenizer, load_tokenizer, register_builtin_model
from .niah import evaluate_niah, generate_niah_samples
from .ruler import RULER_LITE_TASKS, RULER_TASKS, TASKS, evaluate, generate_samples
from .run import EvalConfig, run_eval
from .scoring import effective_length, postprocess_pred, string_match_all, string_match_part

__all__ = [
    "BUILTIN_MODELS",
    "EvalConfig",
    "RULER_LITE_TASKS",
    "RULER_TASKS",
    "TASKS",
    "effective_length",
    "evaluate",
    "evaluate_niah",
    "generate_niah_samples",
    "generate_samples",
    "load_model",
    "load_model_and_tokenizer",
    "load_tokenizer",
    "postprocess_pred",
    "register_builtin_model",
    "run_eval",
    "string_match_all",
    "string_match_part",
]
