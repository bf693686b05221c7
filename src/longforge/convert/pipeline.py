"""`convert(cfg)`: HALO end to end — transfer, stage 1, layer selection, stage 2, stage 3, HyPE sweep, report.

Layout of ``cfg.out_dir`` (every file written atomically; a rerun resumes where the last one stopped)::

    convert_config.json      the resolved config; a rerun with a different one is refused (other out_dir)
    state.json               finished stages, the selection, the chosen HyPE scaling, tokens per stage
    stage1/students.safetensors   the aligned Lightning student of every layer   (+ checkpoint/ while running)
    stage1/summary.json, selection.json, stage2/model/, stage3/model/, hype.json
    model/                   the final hybrid (HF directory: config, safetensors shards, tokenizer)
    report.json, report.md, report_ruler.png, report_losses.png, report_selection.png
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from ..recipes import to_dict
from ..utils.io import atomic_write_bytes, atomic_write_text
from .config import ConvertConfig
from .models import (
    assemble_hybrid,
    build_student_bank,
    kept_layers,
    load_teacher,
    one_layer_converted,
    selection_scores,
    student_config,
)
from .stages import Runtime, align_loss, clear_checkpoint, distill_loss, finetune_loss, heldout_loss, run_stage

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
    "tokenizer.model", "generation_config.json",
)  # fmt: skip
# Fields that may differ between a run and its resumption without changing any result.
_RESUMABLE_FIELDS = {"stages", "save_every", "report", "eval_batch_size"}


def _runtime(cfg: ConvertConfig, progress: bool) -> Runtime:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda was asked for but no CUDA device is available")
    kind = "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = 0, 0
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if kind == "cuda" else "gloo")
        rank, local = dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0"))
        if kind == "cuda":
            torch.cuda.set_device(local)
    device = torch.device("cuda", local) if kind == "cuda" else torch.device("cpu")
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and kind == "cuda")
    return Runtime(device, use_bf16, rank, world, cfg.save_every, progress)


class _Run:
    """The state of one conversion: config, runtime, data, teacher and what the stages produced."""

    def __init__(self, cfg: ConvertConfig, progress: bool):
        from ..eval.loading import load_tokenizer

        cfg.validate()
        self.cfg = cfg
        self.rt = _runtime(cfg, progress)
        self.out = Path(cfg.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self._check_config()
        self.state = self._read_json("state.json") or {"completed": [], "stages": {}}
        self.tokenizer = load_tokenizer(cfg.teacher)
        if getattr(self.tokenizer, "eos_token_id", None) is None:
            raise ValueError(f"the teacher's tokenizer ({cfg.teacher}) has no eos token; the data stream needs one")
        self.user_docs = self._read_user_data()
        torch.manual_seed(cfg.seed)
        teacher_dtype = torch.bfloat16 if self.rt.device.type == "cuda" else torch.float32
        self.teacher = load_teacher(cfg.teacher, dtype=teacher_dtype).to(self.rt.device).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher_path = self._teacher_dir()
        self.teacher_save_dtype = _checkpoint_dtype(self.teacher_path)
        self.students = None
        self.hybrid = None
        self._heldout = {}

    # -------------------------------------------------------------------------------------------- bookkeeping

    def _read_json(self, name: str):
        path = self.out / name
        return json.loads(path.read_text()) if path.is_file() else None

    def _write_json(self, name: str, data) -> None:
        if self.rt.is_main:
            atomic_write_text(self.out / name, json.dumps(data, indent=2, default=str))

    def _check_config(self) -> None:
        current = to_dict(self.cfg)
        previous = self._read_json("convert_config.json")
        if previous is not None:
            changed = sorted(k for k in set(current) | set(previous) if k not in _RESUMABLE_FIELDS
                             and current.get(k) != previous.get(k))  # fmt: skip
            if changed:
                raise ValueError(
                    f"{self.out} holds a conversion with a different config ({', '.join(changed)} differ); "
                    "use another out_dir, or delete it to start over"
                )
        self._write_json("convert_config.json", current)

    def _teacher_dir(self) -> Path | None:
        from ..eval.loading import resolve_model_path

        try:
            return resolve_model_path(self.cfg.teacher)
        except ValueError:
            return None

    def _mark_done(self, stage: str, info: dict | None = None) -> None:
        if stage not in self.state["completed"]:
            self.state["completed"].append(stage)
        if info is not None:
            self.state["stages"][stage] = info
        self._write_json("state.json", self.state)

    def done(self, stage: str) -> bool:
        return stage in self.state["completed"]

    def _read_user_data(self):
        if self.cfg.data is None:
            return None
        from ..data.corpus import Document
        from ..data.sources import read_texts

        texts = []
        for path in self.cfg.data:
            texts.extend(read_texts(path, field=self.cfg.text_field))  # raises on a missing or empty source
        return [Document(f"data:{i}", t) for i, t in enumerate(texts)]

    def stream(self, salt: int):
        from ..data.stream import TrainStream
        from ..train.trainer import cache_dir

        kwargs = (
            dict(prose_docs=self.user_docs)
            if self.user_docs is not None
            else dict(prose_sources=tuple(self.cfg.prose_sources), cache_dir=str(cache_dir()))
        )
        mix = {"prose": 1.0} if self.user_docs is not None else dict(self.cfg.mix)
        return TrainStream(
            self.tokenizer, seed=self.cfg.seed * 1000 + salt * 10 + self.rt.rank, mix=mix,
            answer_weight=1.0, context_weight=1.0, **kwargs,
        )  # fmt: skip

    def heldout_batches(self, seq_len: int, num_batches: int) -> list[dict]:
        key = (seq_len, num_batches)
        if key not in self._heldout:
            stream = self.stream(salt=9)
            try:
                self._heldout[key] = stream.eval_batches(self.cfg.eval_batch_size, seq_len, "prose", num_batches)
            except ValueError as e:
                raise ValueError(f"held-out data for the general score: {e} (give more documents)") from e
        return self._heldout[key]

    def ruler(self, model, tasks: list[str], lengths: list[int], samples: int, progress: bool = False) -> dict:
        from ..eval.ruler import evaluate

        model.eval()
        return evaluate(
            model, self.tokenizer, tasks, lengths, samples, self.cfg.eval_batch_size, seed=self.cfg.seed,
            progress=progress and self.rt.is_main,
        )  # fmt: skip

    # ------------------------------------------------------------------------------------------------ stages

    def bank_config(self):
        n = self.teacher.config.num_hidden_layers
        return student_config(self.teacher.config, ["lightning_attention"] * n, self.cfg.recipe, self.cfg.hybrid)

    def load_students(self) -> None:
        from safetensors.torch import load_file

        self.students = build_student_bank(self.teacher, self.bank_config()).float()
        path = self.out / "stage1" / "students.safetensors"
        if self.done("1"):
            if not path.is_file():
                raise ValueError(f"{path} is missing although stage 1 is marked done; delete {self.out} to restart")
            self.students.load_state_dict(load_file(str(path)))
        self.students.to(self.rt.device)

    def stage1(self) -> None:
        from safetensors.torch import save_file

        self.load_students()
        if self.done("1"):
            return
        spec = self.cfg.stage1
        summary = run_stage(
            "1 (align)", spec, self.students,
            lambda batch: align_loss(self.teacher, self.students, batch, self.rt),
            self.stream(salt=1), self.out / "stage1", self.rt,
        )  # fmt: skip
        if self.rt.is_main:
            weights = {k: v.detach().cpu().contiguous() for k, v in self.students.state_dict().items()}
            tmp = self.out / "stage1" / ".students.safetensors.tmp"
            save_file(weights, str(tmp))
            os.replace(tmp, self.out / "stage1" / "students.safetensors")
        self.rt.barrier()
        self._mark_done("1", _stage_info(summary, spec))
        clear_checkpoint(self.out / "stage1")

    def select(self) -> list[int]:
        if self.done("select"):
            return self.state["selection"]["keep"]
        cfg = self.cfg.select
        n = self.teacher.config.num_hidden_layers
        if cfg.layers is not None:
            if any(not 0 <= i < n for i in cfg.layers) or not cfg.layers:
                raise ValueError(f"select.layers must name layers in [0, {n}), got {cfg.layers}")
            selection = {"keep": sorted(set(cfg.layers)), "given": True}
        else:
            if self.students is None:
                self.load_students()
            if not self.done("1"):
                raise ValueError("layer selection needs the stage-1 students: run stage 1 first (stages: [1, select])")
            batches = self.heldout_batches(cfg.loss_seq_len, cfg.loss_batches)
            base_r = self.ruler(self.teacher, cfg.tasks, [cfg.length], cfg.samples)["overall_average"]
            base_c = -heldout_loss(self.teacher, batches, self.rt)
            retrieval, general = [], []
            from ..utils.progress import progress_bar

            with progress_bar("layer selection", n, enabled=self.rt.progress and self.rt.is_main) as advance:
                for i in range(n):
                    with one_layer_converted(self.teacher, i, self.students[i].to(self.teacher.dtype)) as probe:
                        retrieval.append(self.ruler(probe, cfg.tasks, [cfg.length], cfg.samples)["overall_average"])
                        general.append(-heldout_loss(probe, batches, self.rt))
                    self.students[i].float()
                    advance(1, f"layer {i}: R {retrieval[-1]:.1f} C {general[-1]:.4f}")
            scores = selection_scores(retrieval, general)
            keep = kept_layers(scores, self.cfg.attn_ratio, self.cfg.recipe, [max(retrieval) - r for r in retrieval])
            selection = {
                "keep": keep, "given": False, "retrieval": retrieval, "general": general, "scores": scores,
                "teacher_retrieval": base_r, "teacher_general": base_c, "tasks": cfg.tasks, "length": cfg.length,
                "samples": cfg.samples,
            }  # fmt: skip
        self.state["selection"] = selection
        self._mark_done("select")
        return selection["keep"]

    def keep(self) -> list[int]:
        if "selection" in self.state:
            return self.state["selection"]["keep"]
        if self.cfg.select.layers is not None:
            return self.select()
        raise ValueError("no layer selection yet: include 'select' in stages (after stage 1) or set select.layers")

    def _save_model(self, model, target: Path) -> None:
        if not self.rt.is_main:
            return
        model.save_pretrained(target, max_shard_size=self.cfg.max_shard_size)
        if self.teacher_path is not None:
            for name in TOKENIZER_FILES:
                if (self.teacher_path / name).is_file():
                    atomic_write_bytes(target / name, (self.teacher_path / name).read_bytes())

    def _load_model(self, stage: str):
        from ..models import HybridForCausalLM

        path = self.out / f"stage{stage}" / "model"
        model = HybridForCausalLM.from_pretrained(path, dtype=torch.float32)
        return model.to(self.rt.device)

    def stage2(self) -> None:
        if self.done("2"):
            return
        if self.students is None:
            self.load_students()
        if not self.done("1"):
            raise ValueError("stage 2 needs the stage-1 students: run stage 1 first")
        keep = self.keep()
        self.hybrid = assemble_hybrid(self.teacher, self.students, keep, self.cfg.recipe, self.cfg.hybrid)
        self.hybrid = self.hybrid.float().to(self.rt.device)
        self.students = None  # their weights now live in the hybrid
        spec = self.cfg.stage2
        summary = run_stage(
            "2 (distill)", spec, self.hybrid,
            lambda batch: distill_loss(self.hybrid, self.teacher, batch, self.rt, self.cfg.kl_chunk),
            self.stream(salt=2), self.out / "stage2", self.rt,
        )  # fmt: skip
        self._save_model(self.hybrid, self.out / "stage2" / "model")
        self.rt.barrier()
        self._mark_done("2", _stage_info(summary, spec))
        clear_checkpoint(self.out / "stage2")

    def current_hybrid(self):
        if self.hybrid is not None:
            return self.hybrid
        for stage in ("3", "2"):
            if self.done(stage):
                self.hybrid = self._load_model(stage)
                return self.hybrid
        raise ValueError("no trained hybrid yet: run stage 2 first")

    def stage3(self) -> None:
        if self.done("3"):
            return
        model = self.current_hybrid()
        if self.cfg.gradient_checkpointing:
            _set_checkpointing(model, True)
        spec = self.cfg.stage3
        summary = run_stage(
            "3 (long fine-tune)", spec, model,
            lambda batch: finetune_loss(model, batch, self.rt, self.cfg.kl_chunk),
            self.stream(salt=3), self.out / "stage3", self.rt,
        )  # fmt: skip
        if self.cfg.gradient_checkpointing:
            _set_checkpointing(model, False)
        model.eval()
        self._save_model(model, self.out / "stage3" / "model")
        self.rt.barrier()
        self._mark_done("3", _stage_info(summary, spec))
        clear_checkpoint(self.out / "stage3")

    def train_length(self) -> int:
        return self.cfg.stage3.seq_len if "3" in self.cfg.stages or self.done("3") else self.cfg.stage2.seq_len

    def hype(self) -> None:
        if self.done("hype"):
            self._apply_scaling(self.current_hybrid(), self.state["hype"]["chosen"])
            return
        cfg = self.cfg.hype
        model = self.current_hybrid().eval()
        length = cfg.length or 2 * self.train_length()
        candidates = ([None] if cfg.include_none else []) + [f"hype {a:g}" for a in cfg.alphas]
        results = []
        for value in candidates:
            self._apply_scaling(model, value)
            score = self.ruler(model, cfg.tasks, [length], cfg.samples)["overall_average"]
            results.append({"attn_logit_scaling": value, "score": score})
        best = max(results, key=lambda r: (r["score"], r["attn_logit_scaling"] is not None))
        self._apply_scaling(model, best["attn_logit_scaling"])
        self.state["hype"] = {"length": length, "tasks": cfg.tasks, "samples": cfg.samples, "sweep": results,
                              "chosen": best["attn_logit_scaling"]}  # fmt: skip
        self._mark_done("hype")

    @staticmethod
    def _apply_scaling(model, value) -> None:
        model.config.attn_logit_scaling = value
        for layer in model.model.layers:
            mixer = layer.mixer
            if hasattr(mixer, "logit_scaling"):
                uses = model.config.layer_uses_logit_scaling(mixer.layer_idx)
                mixer.logit_scaling = model.config.logit_scaling if uses else None

    # ------------------------------------------------------------------------------------------------ final

    def finish(self) -> dict | None:
        if self.hybrid is None and not (self.done("2") or self.done("3")):
            return None
        # The final hybrid is stored in the teacher's checkpoint dtype (bf16 for most), and evaluated as stored.
        model = self.current_hybrid().eval().to(self.teacher_save_dtype)
        self._save_model(model, self.out / "model")
        self.rt.barrier()
        if not self.rt.is_main:
            return None
        report = self.report(model)
        from .report import write_report

        write_report(self.out, report)
        return report

    def report(self, model) -> dict:
        rcfg = self.cfg.report
        train_len = self.train_length()
        lengths = rcfg.lengths or sorted({max(256, train_len // 4), max(256, train_len // 2), train_len,
                                          2 * train_len, 4 * train_len})  # fmt: skip
        start = time.time()
        if rcfg.samples > 0:
            teacher_ruler = self.ruler(self.teacher, rcfg.tasks, lengths, rcfg.samples, progress=True)
            hybrid_ruler = self.ruler(model, rcfg.tasks, lengths, rcfg.samples, progress=True)
        else:  # samples: 0 skips RULER (quick runs, tests)
            teacher_ruler = hybrid_ruler = {"average": {}, "scores": {}}
            lengths = []
        loss_len = min(train_len, 2048)
        batches = self.heldout_batches(loss_len, rcfg.loss_batches)
        losses = {"teacher": heldout_loss(self.teacher, batches, self.rt),
                  "hybrid": heldout_loss(model, batches, self.rt)}  # fmt: skip
        stages = self.state.get("stages", {})
        total_tokens = sum(s.get("tokens", 0) for s in stages.values())
        teacher_tokens = _teacher_tokens(self.teacher_path)
        return {
            "teacher": self.cfg.teacher,
            "recipe": self.cfg.recipe,
            "layer_types": list(model.config.layer_types),
            "kept_attention_layers": [i for i, t in enumerate(model.config.layer_types) if t != "lightning_attention"],
            "selection": self.state.get("selection"),
            "hype": self.state.get("hype"),
            "attn_logit_scaling": model.config.attn_logit_scaling,
            "stages": stages,
            "conversion_tokens": total_tokens,
            "teacher_training_tokens": teacher_tokens,
            "conversion_token_fraction": (total_tokens / teacher_tokens) if teacher_tokens else None,
            "heldout_loss": {**losses, "seq_len": loss_len},
            "ruler": {
                "tasks": rcfg.tasks,
                "lengths": lengths,
                "samples": rcfg.samples,
                "teacher": {"average": teacher_ruler["average"], "scores": teacher_ruler["scores"]},
                "hybrid": {"average": hybrid_ruler["average"], "scores": hybrid_ruler["scores"]},
            },  # fmt: skip
            "train_length": train_len,
            "report_seconds": round(time.time() - start, 1),
            "config": to_dict(self.cfg),
            "environment": _environment(model),
        }


def _set_checkpointing(model, on: bool) -> None:
    # transformers >= 5.2x renamed gradient_checkpointing_* to activation_checkpointing_*; 5.17 has only the old name.
    name = "activation_checkpointing" if hasattr(model, "activation_checkpointing_enable") else "gradient_checkpointing"
    getattr(model, f"{name}_{'enable' if on else 'disable'}")()


def _stage_info(summary: dict, spec) -> dict:
    return {"tokens": summary["tokens"], "steps": summary["steps"], "seconds": summary["seconds"],
            "tokens_per_s": summary.get("tokens_per_s"), "peak_mem_gib": summary.get("peak_mem_gib"),
            "seq_len": spec.seq_len, "final_loss": summary["history"][-1]["loss"] if summary["history"] else None,
            "history": [[h["step"], h["loss"]] for h in summary["history"]]}  # fmt: skip


def _checkpoint_dtype(path: Path | None) -> torch.dtype:
    if path is None or not (path / "config.json").is_file():
        return torch.float32
    cfg = json.loads((path / "config.json").read_text())
    name = str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32").replace("torch.", "")
    return getattr(torch, name, torch.float32) if name in ("float32", "bfloat16", "float16") else torch.float32


def _teacher_tokens(path: Path | None) -> int | None:
    if path is None or not (path / "train_summary.json").is_file():
        return None
    try:
        return int(json.loads((path / "train_summary.json").read_text())["tokens_seen"])
    except (ValueError, KeyError):
        return None


def _environment(model) -> dict:
    from ..eval.run import environment

    return environment(model)


def convert(cfg: ConvertConfig, progress: bool = True) -> dict | None:
    """Run the stages of ``cfg.stages`` (resuming any finished or interrupted ones) and write the final hybrid and
    the report into ``cfg.out_dir``. Returns the report (rank 0), or None when no hybrid exists yet (e.g. only
    stage 1 was asked for)."""
    run = _Run(cfg, progress)
    for stage in cfg.stages:
        {"1": run.stage1, "select": run.select, "2": run.stage2, "3": run.stage3, "hype": run.hype}[stage]()
    if run.done("hype") and "hype" not in cfg.stages:
        run.hype()  # keep the chosen scaling on a resumed run
    return run.finish()


__all__ = ["ConvertConfig", "convert"]
