"""Rollouts: prompt encoding, batched sampling with ``model.generate`` (the model's own cache), task-balanced
prompt sampling."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch

# ----------------------------------------------------------------------------------------------- rollouts


def _eos_ids(model, tokenizer) -> list[int]:
    ids = [tokenizer.eos_token_id]
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += config_eos if isinstance(config_eos, list) else [config_eos]
    return sorted({int(i) for i in ids if i is not None})


def encode_prompt(tokenizer, text: str, chat_template: bool = False) -> list[int]:
    """Token ids of a prompt: as a user turn of the tokenizer's chat template (``chat_template`` and the tokenizer
    has one), else the plain text with the tokenizer's special tokens (BOS where it adds one)."""
    if chat_template and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(text)["input_ids"])


@torch.no_grad()
def sample_completions(
    model,
    tokenizer,
    prompt_ids: Sequence[Sequence[int]],
    num_samples: int,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    do_sample: bool = True,
    batch_size: int = 32,
    on_batch: Callable[[int], None] | None = None,
) -> list[list[tuple[list[int], bool]]]:
    """``num_samples`` completions of each prompt with ``model.generate`` (left-padded batches of at most
    ``batch_size`` sequences, longest prompts first, the model's own cache).

    Returns, per prompt, ``num_samples`` pairs (completion token ids up to and including the first EOS, truncated):
    ``truncated`` is True when no EOS came within ``max_new_tokens``. Sampling is pure (no top-k, no repetition
    penalty) so the completions come from the policy the loss assumes."""
    from transformers import GenerationConfig

    eos = _eos_ids(model, tokenizer)
    if not eos:
        raise ValueError("the tokenizer has no EOS token: completions could not end")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    config = GenerationConfig(
        do_sample=do_sample,
        temperature=temperature if do_sample else None,
        top_p=top_p if do_sample and top_p < 1.0 else None,
        top_k=0 if do_sample else None,
        max_new_tokens=max_new_tokens,
        pad_token_id=pad,
        eos_token_id=eos,
    )
    jobs = [(i, j) for i in range(len(prompt_ids)) for j in range(num_samples)]
    jobs.sort(key=lambda ij: -len(prompt_ids[ij[0]]))
    device = next(model.parameters()).device
    out: list[list] = [[None] * num_samples for _ in prompt_ids]
    was_training = model.training
    model.eval()

    def run(batch: list) -> None:
        width = max(len(prompt_ids[i]) for i, _ in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (i, _) in enumerate(batch):
            p = prompt_ids[i]
            ids[row, width - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
            mask[row, width - len(p) :] = 1
        try:
            generated = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config
            )
        except torch.cuda.OutOfMemoryError:
            if len(batch) == 1:
                raise
            # a batch too large for the device: the two halves one after the other (same completions' distribution)
            torch.cuda.empty_cache()
            half = len(batch) // 2
            run(batch[:half])
            run(batch[half:])
            return
        new = generated[:, width:].tolist()
        for row, (i, j) in enumerate(batch):
            tokens = new[row]
            cut = next((k for k, t in enumerate(tokens) if t in eos), None)
            out[i][j] = (tokens[: cut + 1], False) if cut is not None else (tokens[:max_new_tokens], True)

    try:
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start : start + batch_size]
            run(batch)
            if on_batch is not None:
                on_batch(len(batch))
    finally:
        model.train(was_training)
    return out


class TaskBalancedSampler:
    """Prompts drawn with equal share per dataset (the paper's task balancing: −1.53 points without it): datasets
    in a shuffled round-robin, items in a shuffled order per dataset, reshuffled when used up."""

    def __init__(self, records: Sequence, seed: int = 0):
        if not records:
            raise ValueError("no training records to sample from")
        self.rng = random.Random(seed)
        self.by_dataset: dict[str, list] = {}
        for r in records:
            self.by_dataset.setdefault(r.dataset, []).append(r)
        self.queues: dict[str, list] = {d: [] for d in self.by_dataset}
        self.cycle: list[str] = []

    def next(self):
        if not self.cycle:
            self.cycle = sorted(self.by_dataset)
            self.rng.shuffle(self.cycle)
        name = self.cycle.pop()
        if not self.queues[name]:
            self.queues[name] = self.rng.sample(self.by_dataset[name], len(self.by_dataset[name]))
        return self.queues[name].pop()

    def take(self, n: int) -> list:
        return [self.next() for _ in range(n)]
