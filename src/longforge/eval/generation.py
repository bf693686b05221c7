"""Batched greedy decoding for evaluation, and the progress bar evaluations share.

Prompts are sorted by length so each left-padded batch wastes little, decoded with ``model.generate`` (the model's
own cache; greedy, as RULER's temperature 0) and returned in the caller's order as the text of the new tokens only.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import torch


def _eos_ids(model, tokenizer) -> list[int]:
    ids = [tokenizer.eos_token_id]
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += config_eos if isinstance(config_eos, list) else [config_eos]
    return sorted({int(i) for i in ids if i is not None})


def generation_config(model, tokenizer, max_new_tokens: int, **overrides):
    """The model's generation config with greedy decoding (RULER: temperature 0), EOS and pad ids filled in;
    ``overrides`` (e.g. ``do_sample=True, temperature=0.7``) win."""
    eos = _eos_ids(model, tokenizer)
    if not eos:
        raise ValueError("the tokenizer has no EOS token (eos_token is None): generation could not end or pad")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    config = copy.deepcopy(model.generation_config)
    config.update(
        do_sample=False, num_beams=1, temperature=None, top_p=None, top_k=None, max_new_tokens=max_new_tokens,
        pad_token_id=pad, eos_token_id=eos,
    )  # fmt: skip
    config.update(**overrides)
    return config


@torch.no_grad()
def generate_ids(
    model,
    encoded: Sequence[Sequence[int]],
    config,
    batch_size: int = 1,
    *,
    tokenizer=None,
    on_batch: Callable[[int], None] | None = None,
) -> list[list[int]]:
    """The new token ids ``model.generate`` appends to each prompt in ``encoded``, batched (longest first, left
    padded with ``config.pad_token_id``) and returned in input order. ``tokenizer`` is needed for stop strings."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    device = next(model.parameters()).device
    pad = config.pad_token_id
    outputs: list[list[int]] = [[] for _ in encoded]
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):  # left padding: every prompt ends at the last column
            ids[row, width - len(encoded[i]) :] = torch.tensor(list(encoded[i]), dtype=torch.long)
            mask[row, width - len(encoded[i]) :] = 1
        extra = {"tokenizer": tokenizer} if getattr(config, "stop_strings", None) else {}
        generated = model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config, **extra
        )
        for row, i in enumerate(batch):
            outputs[i] = generated[row, width:].tolist()
        if on_batch is not None:
            on_batch(len(batch))
    return outputs


def greedy_generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 1,
    *,
    add_special_tokens: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """Greedy continuations of ``prompts`` (at most ``max_new_tokens`` each, ending early at EOS), as text.

    ``add_special_tokens``: let the tokenizer add BOS etc. (False when prompts are rendered chat templates).
    ``on_batch(n)`` is called after each batch with its size (progress bars)."""
    config = generation_config(model, tokenizer, max_new_tokens)
    encoded = [tokenizer(p, add_special_tokens=add_special_tokens, verbose=False)["input_ids"] for p in prompts]
    new_ids = generate_ids(model, encoded, config, batch_size, on_batch=on_batch)
    return [tokenizer.decode(ids, skip_special_tokens=True) for ids in new_ids]


class _Bar:
    def __init__(self, progress, task_id):
        self._progress, self._task = progress, task_id

    def describe(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=text)

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)


@contextmanager
def evaluation_progress(total: int, enabled: bool = True):
    """A rich progress bar on stderr (samples done / total, rate, ETA); a no-op when ``enabled`` is False."""
    if not enabled:
        yield _Bar(None, None)
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("samples"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as progress:
        yield _Bar(progress, progress.add_task("evaluating", total=total))
