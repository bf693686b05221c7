"""Write a randomly initialised Qwen3 teacher of a given shape (e.g. Qwen3-0.6B) with the embedded teacher's tokenizer,
for structure / memory / throughput runs of `longforge convert` at real sizes without downloading anything.

    python scripts/make_random_teacher.py --shape qwen3-0.6b --out /tmp/qwen3-0.6b-random
"""

from __future__ import annotations

import argparse
import shutil

import torch

SHAPES = {
    # Qwen3-0.6B's published config (vocab 151,936, tied embeddings, 28 layers, GQA 16/8, head dim 128).
    "qwen3-0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=True,
                       rope_theta=1_000_000.0, max_position_embeddings=40960),
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen3-0.6b")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from longforge.assets import asset_path

    torch.manual_seed(args.seed)
    config = Qwen3Config(**SHAPES[args.shape], eos_token_id=0, bos_token_id=0, pad_token_id=0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(args.out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(asset_path("tiny-teacher") / name, f"{args.out}/{name}")
    print(f"{args.shape}: {sum(p.numel() for p in model.parameters()):,} parameters → {args.out}")


if __name__ == "__main__":
    main()
