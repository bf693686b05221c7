"""HALO: convert a pretrained Transformer (Qwen3 / Llama) into a HypeNet or MiniCPM-SALA hybrid.

    from longforge.convert import ConvertConfig, convert
    report = convert(ConvertConfig(teacher="path/to/qwen3", recipe="sala", out_dir="runs/sala"))

CLI: ``longforge convert --teacher MODEL --recipe hypenet|sala --out DIR``. See docs/convert.md.
"""

from .config import ConvertConfig, HypeSection, ReportSection, SelectSection, StageSection, parse_tokens
from .models import assemble_hybrid, build_student_bank, kept_layers, lightning_from_attention, selection_scores
from .pipeline import convert

__all__ = [
    "ConvertConfig",
    "HypeSection",
    "ReportSection",
    "SelectSection",
    "StageSection",
    "assemble_hybrid",
    "build_student_bank",
    "convert",
    "kept_layers",
    "lightning_from_attention",
    "parse_tokens",
    "selection_scores",
]
