"""The GRPO loop: records → rollouts → rewards → advantages → clipped token-mean loss → step; held-out greedy
evaluation, TensorBoard logs, the reward curve and the summary."""

from __future__ import annotations

import copy
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ...recipes import dump_json, dump_yaml
from .config import GRPOConfig, RLDataSection
from .losses import dynamic_sampling_mask, group_advantages, grpo_loss, overlong_penalty, token_log_probs
from .rollout import TaskBalancedSampler, encode_prompt, sample_completions

# ----------------------------------------------------------------------------------------------- the loop


def load_rl_records(cfg: RLDataSection, tokenizer, seed: int) -> list:
    """Records from files, or generated from the built-in world with the policy's tokenizer."""
    from ...data.rl import build_generators, read_records

    if cfg.source == "builtin":
        gens = build_generators(tokenizer, cfg.max_tokens, cfg.min_tokens, seed, datasets=cfg.datasets or None)
        records = [g.generate(i) for g in gens.values() for i in range(cfg.items_per_dataset)]
    else:
        records = read_records([p.strip() for p in cfg.source.split(",") if p.strip()])
        if cfg.datasets:
            records = [r for r in records if r.dataset in cfg.datasets]
            if not records:
                raise ValueError(f"data.datasets {cfg.datasets} selects no record in {cfg.source}")
    return records


class GRPOTrainer:
    """GRPO on RL records. ``reward_fn(record, completion) -> float`` replaces the registry (custom rewards);
    ``model``/``tokenizer``/``records`` may be given directly instead of through the config."""

    def __init__(self, cfg: GRPOConfig, *, model=None, tokenizer=None, records=None, reward_fn=None):
        from ...data.rl import is_heldout, task_balanced_sample
        from ..trainer import init_distributed

        cfg.validate()
        self.cfg = cfg
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device=cuda was asked for but no CUDA device is available")
        kind = "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
        self.dist = init_distributed(kind)
        self.device = torch.device(kind, self.dist.local_rank) if kind == "cuda" else torch.device("cpu")
        self.use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and kind == "cuda")
        self.out_dir = Path(cfg.out_dir)
        torch.manual_seed(cfg.seed * 1000 + self.dist.rank)
        if model is None or tokenizer is None:
            from ...models.pretrained import pretrained

            model, tokenizer = pretrained(cfg.policy.path, device="cpu", dtype=torch.float32)
        self.model = model.to(self.device)
        self.tokenizer = tokenizer
        if cfg.policy.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        self.model.train()
        self.ref_model = None
        self.reset_reference()
        records = list(records) if records is not None else load_rl_records(cfg.data, tokenizer, cfg.seed)
        self.eval_records = [r for r in records if is_heldout(r.id, cfg.data.eval_fraction)]
        self.train_records = [r for r in records if not is_heldout(r.id, cfg.data.eval_fraction)]
        if not self.train_records:
            raise ValueError("every record fell into the held-out split: lower data.eval_fraction or add records")
        self.sampler = TaskBalancedSampler(self.train_records, seed=cfg.seed * 1000 + self.dist.rank)
        self.eval_subset = (
            task_balanced_sample(self.eval_records, min(cfg.eval_items, len(self.eval_records)), cfg.seed)
            if self.eval_records
            else []
        )
        self.reward_fn = reward_fn or self._registry_reward()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
        self.step = 0
        self.history: list[dict] = []
        self.eval_history: list[dict] = []
        self.writer = None
        self._prompt_cache: dict[str, list[int]] = {}
        self.stop_requested = False  # set (e.g. by a signal handler) to end fit() after the current step
        self.on_step: Callable[[dict], None] | None = None  # called with each step's record (e.g. a log line)

    def reset_reference(self) -> None:
        """Make the current policy the KL reference (β > 0): call it after changing the policy outside GRPO, e.g.
        after an SFT warm-up, or the KL term pulls the policy back towards the weights it was constructed with."""
        if self.cfg.beta > 0:
            self.ref_model = copy.deepcopy(self.model).eval().requires_grad_(False)

    # ------------------------------------------------------------------ pieces
    def _registry_reward(self):
        from ..rewards import LLMJudge, score

        judge = None
        if self.cfg.judge.model or self.cfg.judge.url:
            j = self.cfg.judge
            judge = LLMJudge(model=j.model, url=j.url, model_name=j.model_name, api_key_env=j.api_key_env)
        overrides = dict(self.cfg.reward_overrides)
        return lambda record, completion: score(record, completion, judge, overrides.get(record.dataset))

    def prompt_ids(self, record) -> list[int]:
        if record.id not in self._prompt_cache:
            text = record.prompt + self.cfg.data.prompt_suffix
            self._prompt_cache[record.id] = encode_prompt(self.tokenizer, text, self.cfg.data.chat_template)
        return self._prompt_cache[record.id]

    def rollout(self, records, num_samples: int, do_sample: bool = True, max_new_tokens: int | None = None):
        """Sampled (or greedy) completions of ``records``, under bf16 autocast on CUDA as the loss forward."""
        cfg = self.cfg
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            return sample_completions(
                self.model,
                self.tokenizer,
                [self.prompt_ids(r) for r in records],
                num_samples,
                max_new_tokens or cfg.max_new_tokens,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                do_sample=do_sample,
                batch_size=cfg.rollout_batch_size,
            )

    def _rewards(self, record, completions) -> list[float]:
        texts = [self.tokenizer.decode(ids, skip_special_tokens=True) for ids, _ in completions]
        rewards = [float(self.reward_fn(record, t)) for t in texts]
        if self.cfg.truncated_reward is not None:  # no EOS within max_new_tokens: not an answer
            rewards = [self.cfg.truncated_reward if cut else r for r, (_, cut) in zip(rewards, completions)]
        if self.cfg.overlong_buffer:
            lengths = torch.tensor([len(ids) for ids, _ in completions])
            penalty = overlong_penalty(
                lengths, self.cfg.max_new_tokens, self.cfg.overlong_buffer, self.cfg.overlong_penalty_factor
            )
            rewards = [r + float(p) for r, p in zip(rewards, penalty)]
        return rewards

    def advantages(self, groups: Sequence[dict]) -> torch.Tensor:
        """[N, G] advantages of the step's kept groups, computed together: with ``scale_rewards=batch`` the std is
        the one over all the step's rollouts (on this rank), not each group's own."""
        rewards = torch.tensor([list(g["rewards"]) for g in groups], dtype=torch.float32)
        return group_advantages(rewards, self.cfg.group_size, self.cfg.scale_rewards)

    def _sequence_log_probs(self, model, prompt: list[int], completions: list[list[int]]) -> tuple:
        """Per-token log-probs of right-padded completions of one prompt: (logp [B, C], mask [B, C])."""
        C = max(len(c) for c in completions)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(completions), len(prompt) + C), pad, dtype=torch.long)
        attn = torch.zeros_like(ids)
        mask = torch.zeros((len(completions), C), dtype=torch.bool)
        for row, c in enumerate(completions):
            ids[row, : len(prompt)] = torch.as_tensor(prompt)
            ids[row, len(prompt) : len(prompt) + len(c)] = torch.as_tensor(c)
            attn[row, : len(prompt) + len(c)] = 1
            mask[row, : len(c)] = True
        ids, attn, mask = ids.to(self.device), attn.to(self.device), mask.to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            # the last C+1 positions: position P-1+t predicts completion token t
            logits = model(input_ids=ids, attention_mask=attn, use_cache=False, logits_to_keep=C + 1).logits
        logp = token_log_probs(logits[:, :-1], ids[:, len(prompt) :], self.cfg.temperature)
        return logp, mask

    # ------------------------------------------------------------------ one step
    def train_step(self) -> dict:
        cfg = self.cfg
        t0 = time.time()
        groups, dropped_rewards, batches = [], [], 0
        wanted = cfg.prompts_per_step
        while len(groups) < wanted and batches < (cfg.max_gen_batches if cfg.dynamic_sampling else 1):
            records = self.sampler.take(wanted - len(groups) if cfg.dynamic_sampling else wanted)
            for record, completions in zip(records, self.rollout(records, cfg.group_size)):
                rewards = self._rewards(record, completions)
                if cfg.dynamic_sampling and not bool(dynamic_sampling_mask(torch.tensor([rewards]))[0]):
                    dropped_rewards.append(rewards)
                    continue
                groups.append({"record": record, "completions": completions, "rewards": rewards})
            batches += 1
        gen_seconds = time.time() - t0
        all_rewards = [r for g in groups for r in g["rewards"]] + [r for rs in dropped_rewards for r in rs]
        record = {
            "step": self.step + 1,
            "reward": sum(all_rewards) / max(1, len(all_rewards)),
            "groups_kept": len(groups),
            "groups_dropped": len(dropped_rewards),
            "gen_seconds": round(gen_seconds, 3),
        }
        per_dataset: dict[str, list[float]] = {}
        for g in groups:
            per_dataset.setdefault(g["record"].dataset, []).extend(g["rewards"])
        for name, rs in per_dataset.items():
            record[f"reward/{name}"] = sum(rs) / len(rs)
        lengths = [len(ids) for g in groups for ids, _ in g["completions"]]
        truncated = [t for g in groups for _, t in g["completions"]]
        record["completion_length"] = sum(lengths) / max(1, len(lengths))
        record["truncated_fraction"] = sum(truncated) / max(1, len(truncated))
        lr = cfg.lr * min(1.0, (self.step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        record["lr"] = lr
        self.step += 1
        # every rank must agree on whether this step updates (they meet in the gradient all-reduce)
        total_groups = int(self.dist.all_reduce_sum(torch.tensor(float(len(groups)), device=self.device)))
        if total_groups == 0:
            warnings.warn(f"step {self.step}: every group had equal rewards; no update", stacklevel=2)
            record.update(loss=0.0, grad_norm=0.0, clip_fraction=0.0, updated=0)
            return record
        # micro-batches: slices of one group (same prompt, so no left padding in the loss forward)
        micro = []
        for g, adv in zip(groups, self.advantages(groups)):
            prompt = self.prompt_ids(g["record"])
            for s in range(0, cfg.group_size, cfg.micro_batch_size):
                comps = g["completions"][s : s + cfg.micro_batch_size]
                keep = [not (cfg.mask_truncated and t) and len(c) > 0 for c, t in comps]
                micro.append(
                    {
                        "prompt": prompt,
                        "completions": [c or [0] for c, _ in comps],
                        "advantages": adv[s : s + cfg.micro_batch_size],
                        "keep": torch.tensor(keep),
                    }
                )
        tokens = sum(sum(len(c) for c, k in zip(m["completions"], m["keep"]) if k) for m in micro)
        seqs = sum(int(m["keep"].sum()) for m in micro)
        normalizer = float(tokens if cfg.loss_agg == "token-mean" else seqs)
        normalizer = float(self.dist.all_reduce_sum(torch.tensor(normalizer, device=self.device)))
        if cfg.num_iterations > 1:  # π_old: the policy that sampled, frozen for the μ updates
            with torch.no_grad():
                for m in micro:
                    m["old_logp"] = self._sequence_log_probs(self.model, m["prompt"], m["completions"])[0].detach()
        if self.ref_model is not None:
            with torch.no_grad():
                for m in micro:
                    m["ref_logp"] = self._sequence_log_probs(self.ref_model, m["prompt"], m["completions"])[0]
        self.model.train()
        loss_total, clip_fracs, kls, grad_norm = 0.0, [], [], torch.zeros(())
        for _ in range(cfg.num_iterations):
            for m in micro:
                logp, mask = self._sequence_log_probs(self.model, m["prompt"], m["completions"])
                mask = mask & m["keep"].to(mask.device).unsqueeze(-1)
                old = m.get("old_logp", logp.detach())
                loss, stats = grpo_loss(
                    logp,
                    old,
                    m["advantages"].to(self.device),
                    mask,
                    ref_logp=m.get("ref_logp"),
                    beta=cfg.beta,
                    epsilon_low=cfg.epsilon_low,
                    epsilon_high=cfg.epsilon_high,
                    loss_agg=cfg.loss_agg,
                    normalizer=max(normalizer, 1.0),
                    max_completion_length=cfg.max_new_tokens,
                )
                loss.backward()
                loss_total += float(loss.detach())
                clip_fracs.append(stats["clip_fraction"])
                if "kl" in stats:
                    kls.append(stats["kl"])
            if self.dist.world_size > 1:  # the loss is already normalised by the global count: sum the gradients
                for p in self.model.parameters():
                    if p.requires_grad:
                        if p.grad is None:  # a rank whose groups were all dropped still takes part
                            p.grad = torch.zeros_like(p)
                        self.dist.all_reduce_sum(p.grad)
            if cfg.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        record.update(
            loss=loss_total / cfg.num_iterations,
            grad_norm=float(grad_norm),
            clip_fraction=sum(clip_fracs) / max(1, len(clip_fracs)),
            updated=1,
            step_seconds=round(time.time() - t0, 3),
        )
        if kls:
            record["kl"] = sum(kls) / len(kls)
        return record

    @torch.no_grad()
    def evaluate(self, records: Sequence | None = None) -> dict:
        """Greedy mean reward on the held-out subset, or on ``records`` (overall and per dataset)."""
        records = self.eval_subset if records is None else list(records)
        if not records:
            return {}
        outs = self.rollout(records, 1, do_sample=False)
        per: dict[str, list[float]] = {}
        for record, completions in zip(records, outs):
            text = self.tokenizer.decode(completions[0][0], skip_special_tokens=True)
            per.setdefault(record.dataset, []).append(float(self.reward_fn(record, text)))
        scores = [s for v in per.values() for s in v]
        result = {"step": self.step, "eval_reward": sum(scores) / len(scores)}
        result.update({f"eval_reward/{k}": sum(v) / len(v) for k, v in per.items()})
        return result

    # ------------------------------------------------------------------ logging and the loop
    def log(self, record: dict, prefix: str = "train") -> None:
        if not self.dist.is_main:
            return
        if self.cfg.tensorboard and self.writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                warnings.warn(
                    "tensorboard is not installed: no event files (metrics go to grpo_summary.json)", stacklevel=2
                )
                self.cfg.tensorboard = False
            else:
                self.writer = SummaryWriter(str(self.out_dir / "tensorboard"))
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    name = key if key.startswith("eval") else f"{prefix}/{key}"
                    self.writer.add_scalar(name, value, record["step"])
            self.writer.flush()

    def fit(self, progress: bool = True) -> list[dict]:
        cfg = self.cfg
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            dump_yaml(cfg, self.out_dir / "recipe.resolved.yaml")
        bar = _Bar(cfg.steps, enabled=progress and self.dist.is_main)
        start = time.time()
        try:
            if self.dist.is_main and self.eval_subset:
                self._eval_and_log()
            while self.step < cfg.steps:
                record = self.train_step()
                self.history.append(record)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    self.log(record)
                if self.dist.is_main and self.eval_subset and cfg.eval_every and self.step % cfg.eval_every == 0:
                    self._eval_and_log()
                record["elapsed_s"] = round(time.time() - start, 3)
                bar.update(record, self.eval_history[-1] if self.eval_history else None)
                if self.on_step is not None and self.dist.is_main:
                    self.on_step(record)
                if self.stop_requested:
                    break
                if cfg.time_budget_s and self.step < cfg.steps and self._out_of_time(time.time() - start):
                    break
            if self.dist.is_main and self.eval_subset and (not cfg.eval_every or self.step % cfg.eval_every):
                self._eval_and_log()
        finally:
            bar.close()
            if self.writer is not None:
                self.writer.close()
        if self.dist.is_main:
            self.save()
        self.dist.barrier()
        return self.history

    def _out_of_time(self, elapsed: float) -> bool:
        """Whether one more step (at the mean step time so far) plus a final evaluation (as long as the last one)
        would overrun ``time_budget_s``. Every rank takes the main rank's decision."""
        train_seconds = elapsed - sum(e.get("eval_seconds", 0.0) for e in self.eval_history)
        last_eval = self.eval_history[-1].get("eval_seconds", 0.0) if self.eval_history else 0.0
        stop = elapsed + train_seconds / max(1, self.step) + last_eval > self.cfg.time_budget_s
        flag = torch.tensor(float(stop and self.dist.is_main), device=self.device)
        return bool(self.dist.all_reduce_sum(flag) > 0)

    def _eval_and_log(self) -> None:
        t0 = time.time()
        result = self.evaluate()
        if result:
            result["eval_seconds"] = round(time.time() - t0, 3)
            self.eval_history.append(result)
            self.log(result, prefix="eval")

    def save(self) -> None:
        from ...utils.io import atomic_directory

        summary = {
            "steps": self.step,
            "train_records": len(self.train_records),
            "eval_records": len(self.eval_subset),
            "history": self.history,
            "eval": self.eval_history,
        }
        dump_json(summary, self.out_dir / "grpo_summary.json")
        plot_rewards(self.history, self.eval_history, self.out_dir / "rewards.png")
        if self.cfg.save:
            with atomic_directory(self.out_dir / "model") as tmp:
                self.model.save_pretrained(tmp, safe_serialization=True)
                self.tokenizer.save_pretrained(tmp)


def plot_rewards(history: list[dict], eval_history: list[dict], path: str | os.PathLike) -> bool:
    """Reward curve: mean training reward per step (and a moving average), greedy held-out reward."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed: no reward curve (pip install matplotlib)", stacklevel=2)
        return False
    import uuid

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    if history:
        steps = [h["step"] for h in history]
        rewards = [h["reward"] for h in history]
        ax.plot(steps, rewards, ".", color="#9bbbd9", label="train (mean of rollouts)")
        window = max(1, len(rewards) // 10)
        smooth = [
            sum(rewards[max(0, i - window + 1) : i + 1]) / len(rewards[max(0, i - window + 1) : i + 1])
            for i in range(len(rewards))
        ]
        ax.plot(steps, smooth, "-", color="#3b75af", label=f"train (moving average of {window})")
    if eval_history:
        ax.plot(
            [e["step"] for e in eval_history],
            [e["eval_reward"] for e in eval_history],
            "o-",
            color="#d1603d",
            label="held-out (greedy)",
        )
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward")
    ax.set_title("GRPO reward")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.stem}.tmp-{uuid.uuid4().hex[:8]}{path.suffix}"
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return True


class _Bar:
    def __init__(self, total: int, enabled: bool):
        self.enabled = enabled
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]grpo"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self.task = self.progress.add_task("grpo", total=total, info="")
        self.progress.start()

    def update(self, record: dict, last_eval: dict | None) -> None:
        if not self.enabled:
            return
        info = f"reward {record['reward']:.3f}  len {record['completion_length']:.0f}"
        if last_eval:
            info += f"  eval {last_eval['eval_reward']:.3f}"
        self.progress.update(self.task, completed=record["step"], info=info)

    def close(self) -> None:
        if self.enabled:
            self.progress.stop()


def train_grpo(cfg: GRPOConfig, progress: bool = True, **kwargs) -> GRPOTrainer:
    trainer = GRPOTrainer(cfg, **kwargs)
    trainer.fit(progress=progress)
    return trainer
