"""lm-evaluation-harness adapter: run lm-eval's task zoo on longforge (or any HF causal-LM) checkpoints.

Needs the ``eval`` extra (``pip install "longforge[eval]"``, i.e. ``lm-eval``). lm-eval finds models through its
registry, which importing this module fills in (``@register_model("longforge")``), so the command line is::

    python -m longforge.eval.harness --model longforge --model_args pretrained=DIR,dtype=bfloat16 \\
        --tasks hellaswag,lambada_openai --batch_size 8

(every ``lm_eval`` argument works; this only registers the model first). From Python::

    import lm_eval
    from longforge.eval.harness import LongforgeLM
    lm = LongforgeLM(pretrained="DIR", batch_size=8)
    lm_eval.simple_evaluate(model=lm, tasks=["hellaswag"])

``LongforgeLM`` implements ``loglikelihood`` (batched teacher forcing; greedy check), ``loglikelihood_rolling``
(lm-eval's disjoint rolling windows of ``max_length`` tokens) and ``generate_until`` (batched ``model.generate``
with the model's cache, stop strings, greedy unless the task asks to sample).
"""

from __future__ import annotations

import sys
import warnings

import torch
import torch.nn.functional as F

try:
    from lm_eval.api.model import TemplateLM
    from lm_eval.api.registry import register_model
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'longforge.eval.harness needs lm-evaluation-harness: pip install "longforge[eval]" (or pip install lm-eval)'
    ) from e
from tqdm import tqdm

from .generation import generate_ids, generation_config
from .loading import load_model, load_tokenizer


def _batch_size(value) -> int:
    if isinstance(value, str) and value.startswith("auto"):
        warnings.warn("batch_size='auto' is not supported by the longforge adapter; using 1", stacklevel=3)
        return 1
    size = int(value)
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, got {value!r}")
    return size


@register_model("longforge")
class LongforgeLM(TemplateLM):
    """An lm-eval ``LM`` over a longforge / transformers causal LM.

    Args:
        pretrained: local model directory or built-in name (or pass ``model`` and ``tokenizer`` objects).
        device, dtype: as for ``longforge eval`` ('auto' = CUDA + bfloat16 when available).
        batch_size: requests per forward / generate call.
        max_length: context window used to truncate inputs; default: the config's ``max_position_embeddings``.
        max_gen_toks: default generation budget when a task does not set ``max_gen_toks``.
        add_bos_token: prepend the tokenizer's BOS to every encoded context (lm-eval's HF default: no).
    """

    def __init__(
        self,
        pretrained: str | None = None,
        model=None,
        tokenizer=None,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int | str = 1,
        max_length: int | None = None,
        max_gen_toks: int = 256,
        add_bos_token: bool = False,
        **kwargs,
    ):
        super().__init__()
        kwargs.pop("max_batch_size", None)  # lm-eval passes these along with every model
        if kwargs:
            warnings.warn(f"LongforgeLM ignores unknown model_args {sorted(kwargs)}", stacklevel=2)
        if model is None:
            if pretrained is None:
                raise ValueError("LongforgeLM needs pretrained=<model dir or built-in name> (or model and tokenizer)")
            model = load_model(pretrained, device or "auto", dtype)
        if tokenizer is None:
            if pretrained is None:
                raise ValueError("LongforgeLM was given a model without its tokenizer")
            tokenizer = load_tokenizer(pretrained)
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token: lm-eval's generation and rolling windows need one")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.batch_size = _batch_size(batch_size)
        self._max_length = int(max_length) if max_length else None
        self.max_gen_toks = int(max_gen_toks)
        self.add_bos_token = add_bos_token in (True, "True", "true", "1")
        self._device = next(model.parameters()).device
        self.pretrained = str(pretrained) if pretrained is not None else type(model).__name__

    # ---- what TemplateLM needs ----------------------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        """Conditions the first token of a context-free request: BOS if the tokenizer has one, else EOS."""
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.eot_token_id

    @property
    def max_length(self) -> int:
        if self._max_length:
            return self._max_length
        return int(getattr(self.model.config, "max_position_embeddings", None) or 2048)

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "") or self.pretrained).replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        add = self.add_bos_token if add_special_tokens is None else add_special_tokens
        return self.tokenizer(string, add_special_tokens=add, verbose=False)["input_ids"]

    def tok_decode(self, tokens, **kwargs) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(
            chat_history,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt,
        )

    # ---- scoring ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _score_batch(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """Sum of log p(continuation | context) and whether greedy decoding reproduces it, for right-padded rows
        truncated on the left to ``max_length + 1`` tokens (the last token is only predicted, never read)."""
        rows = []
        for context, continuation in pairs:
            tokens = (list(context) + list(continuation))[-(self.max_length + 1) :]
            scored = min(len(continuation), len(tokens) - 1)  # a continuation longer than the window is cut too
            rows.append((tokens[:-1], tokens[-scored:]))
        width = max(len(inputs) for inputs, _ in rows)
        ids = torch.full((len(rows), width), self.eot_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (inputs, _) in enumerate(rows):
            ids[r, : len(inputs)] = torch.tensor(inputs)
            mask[r, : len(inputs)] = 1
        logits = self.model(input_ids=ids.to(self._device), attention_mask=mask.to(self._device)).logits
        results = []
        for r, (inputs, target) in enumerate(rows):
            positions = slice(len(inputs) - len(target), len(inputs))  # position t predicts token t + 1
            logprobs = F.log_softmax(logits[r, positions].float(), dim=-1)
            target_ids = torch.tensor(target, device=logprobs.device)
            total = logprobs.gather(-1, target_ids[:, None]).sum().item()
            results.append((total, bool((logprobs.argmax(-1) == target_ids).all())))
        return results

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i][1]) - len(requests[i][2]))
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), disable=disable_tqdm, desc="loglikelihood")
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            for i, answer in zip(batch, self._score_batch([(requests[i][1], requests[i][2]) for i in batch])):
                results[i] = answer
                if requests[i][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], answer)
            bar.update(len(batch))
        bar.close()
        return results  # type: ignore[return-value]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of whole documents, scored in disjoint windows of ``max_length`` tokens (lm-eval's
        rolling scheme: every token predicted exactly once, each window with the most context that fits)."""
        results = []
        for request in tqdm(requests, disable=disable_tqdm, desc="loglikelihood_rolling"):
            (text,) = request.args
            windows = [
                make_disjoint_window(w)
                for w in get_rolling_token_windows(
                    token_list=self.tok_encode(text, add_special_tokens=False),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                )
            ]
            total = sum(
                score
                for start in range(0, len(windows), self.batch_size)
                for score, _ in self._score_batch(windows[start : start + self.batch_size])
            )
            results.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
        return results

    # ---- generation ---------------------------------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Continue each context until a stop string, EOS or ``max_gen_toks``; batches share generation kwargs."""
        eos_text = self.tok_decode([self.eot_token_id]) or None
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(repr(sorted(request.args[1].items())), []).append(i)
        results: list[str] = [""] * len(requests)
        bar = tqdm(total=len(requests), disable=disable_tqdm, desc="generate_until")
        for indices in groups.values():
            kwargs = dict(requests[indices[0]].args[1])
            until = kwargs.pop("until", None)
            until = [until] if isinstance(until, str) else list(until or [])
            if eos_text and eos_text not in until:
                until.append(eos_text)
            max_new = int(kwargs.pop("max_gen_toks", self.max_gen_toks))
            sampling = {k: kwargs.pop(k) for k in ("do_sample", "temperature", "top_p", "top_k") if k in kwargs}
            if sampling.get("temperature", 0) == 0 and not sampling.get("do_sample"):
                sampling = {}  # greedy, as lm-eval means by temperature 0
            elif "temperature" in sampling and "do_sample" not in sampling:
                sampling["do_sample"] = True
            if kwargs:
                warnings.warn(f"generate_until ignores gen_kwargs {sorted(kwargs)}", stacklevel=2)
            config = generation_config(self.model, self.tokenizer, max_new, **sampling)
            if until:
                config.stop_strings = until
            budget = max(self.max_length - max_new, 1)  # keep the newest context tokens that leave room
            encoded = [self.tok_encode(requests[i].args[0])[-budget:] for i in indices]
            new_ids = generate_ids(
                self.model, encoded, config, self.batch_size, tokenizer=self.tokenizer, on_batch=bar.update
            )
            for i, ids in zip(indices, new_ids):
                text = self.tok_decode(ids)
                for stop in until:  # generation may run past a stop string inside the last token
                    if stop:
                        text = text.split(stop)[0]
                results[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
        bar.close()
        return results


def main(argv: list[str] | None = None) -> None:
    """``python -m longforge.eval.harness <lm_eval arguments>``: lm-eval's CLI with ``--model longforge``."""
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
