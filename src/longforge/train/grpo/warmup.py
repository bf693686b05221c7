"""A short supervised warm-up before GRPO: teach a base policy the answer format of RL records.

GRPO learns only from groups whose rewards differ; a base model that never produces a rewarded answer gives it no
signal at all (the tiny teacher scores 0 on FuzzyNeedle / MultiNeedle / KeyChain as rendered: it was never shown
the "question → short answer → end of text" shape). The warm-up trains on records of a disjoint seed with their
gold answers — loss on the answer tokens and the closing EOS only, each record weighted equally — and stops as soon
as the greedy reward on a small dev split reaches ``target_reward``, so RL starts from a policy that is sometimes
right but far from saturated.

    examples = warmup_examples(records, tokenizer, prompt_ids)     # [(ids, answer_start)]
    history = sft_warmup(model, examples, WarmupConfig(...), device=..., evaluate=lambda: {...})
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = ["WarmupConfig", "length_batches", "sft_warmup", "warmup_batch", "warmup_examples"]


@dataclass
class WarmupConfig:
    lr: float = 3e-4
    warmup_steps: int = 10  # linear learning-rate ramp, then constant (the warm-up is stopped early, not annealed)
    weight_decay: float = 0.0
    betas: list[float] | None = None  # AdamW betas (default 0.9, 0.95)
    grad_clip: float = 1.0
    batch_tokens: int = 65536  # padded tokens per optimizer step (records of similar length batched together)
    max_steps: int = 2000
    time_budget_s: float = 0.0  # > 0: stop when the next step (and a final dev evaluation) would overrun it
    target_reward: float = 0.2  # stop once the dev reward reaches this (0: never stop early)
    eval_every: int = 25  # steps between dev evaluations
    seed: int = 0

    def validate(self) -> None:
        for name in ("batch_tokens", "max_steps", "eval_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"warm-up {name} must be > 0, got {getattr(self, name)}")
        if self.lr <= 0 or self.warmup_steps < 0 or self.grad_clip < 0 or self.time_budget_s < 0:
            raise ValueError("warm-up lr must be > 0 and warmup_steps, grad_clip, time_budget_s >= 0")
        if not 0 <= self.target_reward <= 1:
            raise ValueError(f"warm-up target_reward must be in [0, 1], got {self.target_reward}")
        if self.betas is not None and len(self.betas) != 2:
            raise ValueError(f"warm-up betas must have two values, got {self.betas}")


def warmup_examples(
    records: Sequence, tokenizer, prompt_ids: Callable[[object], list[int]], max_answer_tokens: int | None = None
) -> list[tuple[list[int], int]]:
    """One example per record: (prompt ids + " " + first gold answer + EOS, index of the first answer token).

    ``prompt_ids(record)`` must be the exact ids the policy sees in GRPO (same template and suffix), so the warm-up
    teaches the continuation GRPO samples. ``max_answer_tokens`` (e.g. GRPO's ``max_new_tokens`` − 1) drops
    records whose answer could not be generated in full."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no EOS token: the warm-up teaches the policy to end its answer with it")
    out = []
    for record in records:
        if not record.answers:
            raise ValueError(f"record {record.id} has no gold answer to warm up on")
        answer = list(tokenizer(" " + str(record.answers[0]).strip(), add_special_tokens=False)["input_ids"])
        if max_answer_tokens is not None and len(answer) > max_answer_tokens:
            continue
        prompt = list(prompt_ids(record))
        out.append((prompt + answer + [int(eos)], len(prompt)))
    if not out:
        raise ValueError("no warm-up example: every answer is longer than max_answer_tokens")
    return out


def length_batches(lengths: Sequence[int], batch_tokens: int, rng: random.Random) -> list[list[int]]:
    """Indices grouped into batches of similar length whose padded size (rows × longest) is ≤ ``batch_tokens``
    (a row longer than that is a batch of its own), in a shuffled order."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    batches, current, longest = [], [], 0
    for i in order:
        width = max(longest, lengths[i])
        if current and width * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current, width = [], lengths[i]
        current.append(i)
        longest = width
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


def warmup_batch(examples: Sequence[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``loss_weight`` (``loss_weight[:, t]`` weights predicting
    token t: 1 / answer length on the answer and EOS tokens, 0 elsewhere, so every record counts the same)."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(examples), width), dtype=torch.long)
    weight = torch.zeros((len(examples), width), dtype=torch.float32)
    for row, (seq, start) in enumerate(examples):
        if not 0 < start < len(seq):
            raise ValueError(f"answer start {start} outside the example (length {len(seq)})")
        ids[row, : len(seq)] = torch.as_tensor(seq)
        attn[row, : len(seq)] = 1
        weight[row, start : len(seq)] = 1.0 / (len(seq) - start)
    return {"input_ids": ids, "attention_mask": attn, "loss_weight": weight}


def sft_warmup(
    model,
    examples: Sequence[tuple[list[int], int]],
    cfg: WarmupConfig,
    *,
    pad_id: int = 0,
    device: torch.device | str = "cpu",
    use_bf16: bool = False,
    evaluate: Callable[[], dict] | None = None,
    progress: bool = True,
) -> list[dict]:
    """Answer-only SFT of ``model`` in place. ``evaluate()`` returns ``{"eval_reward": ...}`` on a dev split; it runs
    every ``eval_every`` steps and at the end, and a dev reward ≥ ``target_reward`` ends the warm-up. Returns the
    history: one record per step (``step, loss, lr, seconds``) and per evaluation (``step, eval_reward, ...``)."""
    from ...utils.progress import progress_bar
    from ..trainer import weighted_token_loss

    cfg.validate()
    if not examples:
        raise ValueError("no warm-up examples")
    device = torch.device(device)
    rng = random.Random(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    betas = tuple(cfg.betas) if cfg.betas else (0.9, 0.95)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
    lengths = [len(ids) for ids, _ in examples]
    batches: list[list[int]] = []
    history: list[dict] = []
    start = time.time()
    eval_seconds = 0.0
    last_eval_cost = 0.0

    def run_eval(step: int) -> dict | None:
        nonlocal eval_seconds, last_eval_cost
        if evaluate is None:
            return None
        t0 = time.time()
        result = dict(evaluate())
        last_eval_cost = time.time() - t0
        eval_seconds += last_eval_cost
        result.update(step=step, eval_seconds=round(last_eval_cost, 3), elapsed_s=round(time.time() - start, 3))
        history.append(result)
        return result

    reached = False
    step = 0
    with progress_bar("warm-up", cfg.max_steps, enabled=progress) as advance:
        while step < cfg.max_steps:
            if not batches:
                batches = length_batches(lengths, cfg.batch_tokens, rng)
            batch = warmup_batch([examples[i] for i in batches.pop()], pad_id)
            lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
            for group in optimizer.param_groups:
                group["lr"] = lr
            model.train()
            ids = batch["input_ids"].to(device)
            weight = batch["loss_weight"].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                # right padding under a causal mask: no real token sees a pad, so no attention mask is needed (and
                # without one, SDPA takes its fused causal path)
                logits = model(input_ids=ids, use_cache=False).logits
            loss = weighted_token_loss(logits, ids, weight) / len(batch["input_ids"])
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip) if cfg.grad_clip > 0 else None
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"warm-up loss is {value} at step {step}: lower the warm-up lr")
            history.append(
                {
                    "step": step,
                    "loss": value,
                    "lr": lr,
                    "rows": len(batch["input_ids"]),
                    "grad_norm": float(grad_norm) if grad_norm is not None else 0.0,
                    "elapsed_s": round(time.time() - start, 3),
                }
            )
            info = f"loss {value:.3f}"
            if step % cfg.eval_every == 0:
                result = run_eval(step)
                if result is not None:
                    info += f"  dev reward {result['eval_reward']:.3f}"
                    if cfg.target_reward and result["eval_reward"] >= cfg.target_reward:
                        reached = True
            advance(1, description=info)
            if reached:
                break
            if cfg.time_budget_s:
                elapsed = time.time() - start
                per_step = (elapsed - eval_seconds) / step
                if elapsed + per_step + last_eval_cost > cfg.time_budget_s:
                    break
    if evaluate is not None and not (history and "eval_reward" in history[-1]):
        run_eval(step)
    model.eval()
    return history
