"""`convert(cfg)`: HALO end to end — transfer, stage 1, layer selection, stage 2, stage 3, HyPE sweep, report.

Layout of ``cfg.out_dir`` (every file written atomically; a rerun resumes where the last one stopped)::

    convert_config.json      the resolved config; a rerun with a different one is refused (other out_dir)
    state.json               finished stages, the selection, the chosen HyPE scaling, tokens per stage
    stage1/students.safetensors   the aligned Lightning student of every layer   (+ checkpoint/ while running)
    stage1/summary.json, selection.json, stage2/model/, stage3/model/, hype.json
    model/                   the final hybrid (HF directory: config, safetensors shards, tokenizer)
    report.json, report.md, report_ruler.png, report_losses.png, report_selection.png

Under ``torchrun`` with ``parallel: fsdp`` (the default), the trained modules — the student bank in stage 1 (one
FSDP2 unit per student), the hybrid in stages 2 and 3 (one unit per decoder layer, plus the root) — and the frozen
teacher of stages 1 and 2 are sharded over the ranks; each is built on the CPU and sharded onto the GPUs, so no rank
ever holds a whole copy while training. Stage checkpoints and stage results are full state dicts gathered to rank 0
and written by it, the same files as in a one-process run. The evaluation steps (layer-selection sweep, HyPE sweep,
report) use whole, unsharded models, as in ``parallel: replicate``.
"""

from __future__ import annotations

import gc
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
    one_layer_nope,
    retrieval_gains,
    selection_scores,
    student_config,
)
from .stages import Runtime, align_loss, clear_checkpoint, distill_loss, finetune_loss, heldout_loss, run_stage

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
    "tokenizer.model", "generation_config.json",
)  # fmt: skip
# Fields that may differ between a run and its resumption without changing any result.
_RESUMABLE_FIELDS = {"stages", "save_every", "report", "eval_batch_size", "parallel"}


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
    return Runtime(device, use_bf16, rank, world, cfg.save_every, progress, parallel=cfg.parallel)


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
        self._teacher = None  # whole, on this rank's device (evaluation; training when not sharded)
        self._sharded_teacher = None  # FSDP2-sharded (training under parallel: fsdp)
        if not self.rt.sharded:
            self._teacher = self._load_teacher(self.rt.device)
        self.teacher_path = self._teacher_dir()
        self.teacher_save_dtype = _checkpoint_dtype(self.teacher_path)
        self.students = None
        self.hybrid = None
        self._heldout = {}

    # -------------------------------------------------------------------------------------------- the teacher

    def _load_teacher(self, device):
        dtype = torch.bfloat16 if self.rt.device.type == "cuda" else torch.float32
        teacher = load_teacher(self.cfg.teacher, dtype=dtype).to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        return teacher

    @property
    def teacher(self):
        """The whole frozen teacher on this rank's device (loaded when first needed; frees a sharded one)."""
        if self._teacher is None:
            self._drop_sharded_teacher()
            self._teacher = self._load_teacher(self.rt.device)
        return self._teacher

    def _shard_teacher(self, cpu_teacher) -> None:
        """Make ``cpu_teacher`` (a whole teacher on the CPU) the FSDP2-sharded training teacher."""
        self._teacher = None
        self._drop_sharded_teacher()
        self._sharded_teacher = self.rt.shard(cpu_teacher, cpu_teacher.model.layers)

    def _reshard_teacher(self) -> None:
        # FSDP2 keeps a root's parameters gathered after forward (for backward); the frozen teacher has no backward.
        if self._sharded_teacher is not None:
            self._sharded_teacher.reshard()

    def _drop_sharded_teacher(self) -> None:
        if self._sharded_teacher is not None:
            self._sharded_teacher = None
            _free_memory()

    def _num_layers(self) -> int:
        """The teacher's depth, without loading its weights when they are not in memory."""
        if self._teacher is None and self.teacher_path is not None and (self.teacher_path / "config.json").is_file():
            config = json.loads((self.teacher_path / "config.json").read_text())
            if isinstance(config.get("num_hidden_layers"), int):
                return config["num_hidden_layers"]
        return self.teacher.config.num_hidden_layers

    def training_teacher(self):
        return self._sharded_teacher if self.rt.sharded else self.teacher

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

    def bank_config(self, teacher=None):
        config = (teacher if teacher is not None else self.teacher).config
        n = config.num_hidden_layers
        return student_config(config, ["lightning_attention"] * n, self.cfg.recipe, self.cfg.hybrid)

    def load_students(self) -> None:
        self.students = build_student_bank(self.teacher, self.bank_config()).float()
        if self.done("1"):
            self._read_students(self.students)
        self.students.to(self.rt.device)

    def _read_students(self, bank):
        from safetensors.torch import load_file

        path = self.out / "stage1" / "students.safetensors"
        if not path.is_file():
            raise ValueError(f"{path} is missing although stage 1 is marked done; delete {self.out} to restart")
        bank.load_state_dict(load_file(str(path)))
        return bank

    def stage1(self) -> None:
        from safetensors.torch import save_file

        from ..train.fsdp import full_state

        if self.done("1"):
            if not self.rt.sharded:
                self.load_students()
            return
        if self.rt.sharded:  # the bank and the teacher, built whole on the CPU, then sharded onto the devices
            cpu_teacher = self._load_teacher("cpu")
            students = build_student_bank(cpu_teacher, self.bank_config(cpu_teacher)).float()
            self._shard_teacher(cpu_teacher)
            self.rt.shard(students, list(students))
        else:
            self.load_students()
            students = self.students
        teacher = self.training_teacher()
        spec = self.cfg.stage1
        summary = run_stage(
            "1 (align)", spec, students,
            lambda batch: align_loss(teacher, students, batch, self.rt),
            self.stream(salt=1), self.out / "stage1", self.rt, after_step=self._reshard_teacher,
        )  # fmt: skip
        weights, _ = full_state(students)  # a collective when sharded: every rank takes part, rank 0 gets it
        if self.rt.is_main:
            weights = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
            tmp = self.out / "stage1" / ".students.safetensors.tmp"
            save_file(weights, str(tmp))
            os.replace(tmp, self.out / "stage1" / "students.safetensors")
        self.rt.barrier()
        self._mark_done("1", _stage_info(summary, spec))
        clear_checkpoint(self.out / "stage1")
        if self.rt.sharded:
            del students, teacher
            _free_memory()

    def select(self) -> list[int]:
        if self.done("select"):
            return self.state["selection"]["keep"]
        cfg = self.cfg.select
        n = self._num_layers()
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
            retrieval, general, nope = [], [], []
            from ..utils.progress import progress_bar

            with progress_bar("layer selection", n, enabled=self.rt.progress and self.rt.is_main) as advance:
                for i in range(n):
                    with one_layer_converted(self.teacher, i, self.students[i].to(self.teacher.dtype)) as probe:
                        retrieval.append(self.ruler(probe, cfg.tasks, [cfg.length], cfg.samples)["overall_average"])
                        general.append(-heldout_loss(probe, batches, self.rt))
                    self.students[i].float()
                    text = f"layer {i}: R {retrieval[-1]:.1f} C {general[-1]:.4f}"
                    if cfg.mode == "hype":
                        with one_layer_nope(self.teacher, i) as probe:
                            nope.append(self.ruler(probe, cfg.tasks, [cfg.length], cfg.samples)["overall_average"])
                        text += f" N {nope[-1]:.1f}"
                    advance(1, text)
            kept_r = nope if cfg.mode == "hype" else None
            scores = selection_scores(retrieval, general, kept_retrieval=kept_r)
            gains = retrieval_gains(retrieval, kept_r)
            keep = kept_layers(scores, self.cfg.attn_ratio, self.cfg.recipe, gains, [max(general) - c for c in general])
            selection = {
                "keep": keep, "given": False, "mode": cfg.mode, "retrieval": retrieval, "general": general,
                "scores": scores, "teacher_retrieval": base_r, "teacher_general": base_c, "tasks": cfg.tasks,
                "length": cfg.length, "samples": cfg.samples,
            }  # fmt: skip
            if kept_r is not None:
                selection["nope_retrieval"] = nope
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
        """An HF directory written by rank 0; a sharded model is gathered first (every rank must call this then)."""
        from ..train.fsdp import is_sharded

        if is_sharded(model):
            _save_sharded(model, target, self.cfg.max_shard_size, self.rt)
        elif self.rt.is_main:
            model.save_pretrained(target, max_shard_size=self.cfg.max_shard_size)
        if not self.rt.is_main:
            return
        if self.teacher_path is not None:
            for name in TOKENIZER_FILES:
                if (self.teacher_path / name).is_file():
                    atomic_write_bytes(target / name, (self.teacher_path / name).read_bytes())

    def _load_model(self, stage: str, device=None):
        from ..models import HybridForCausalLM

        path = self.out / f"stage{stage}" / "model"
        model = HybridForCausalLM.from_pretrained(path, dtype=torch.float32)
        return model.to(self.rt.device if device is None else device)

    def stage2(self) -> None:
        if self.done("2"):
            return
        if not self.done("1"):
            raise ValueError("stage 2 needs the stage-1 students: run stage 1 first")
        keep = self.keep()
        if self.rt.sharded:  # assembled whole on the CPU, then sharded onto the devices
            self.students = None
            cpu_teacher = self._load_teacher("cpu")
            students = self._read_students(build_student_bank(cpu_teacher, self.bank_config(cpu_teacher)).float())
            hybrid = assemble_hybrid(cpu_teacher, students, keep, self.cfg.recipe, self.cfg.hybrid).float()
            del students
            self._shard_teacher(cpu_teacher)
            self.rt.shard(hybrid, hybrid.model.layers)
        else:
            if self.students is None:
                self.load_students()
            hybrid = assemble_hybrid(self.teacher, self.students, keep, self.cfg.recipe, self.cfg.hybrid)
            hybrid = hybrid.float().to(self.rt.device)
            self.students = None  # their weights now live in the hybrid
        teacher = self.training_teacher()
        spec = self.cfg.stage2
        summary = run_stage(
            "2 (distill)", spec, hybrid,
            lambda batch: distill_loss(hybrid, teacher, batch, self.rt, self.cfg.kl_chunk),
            self.stream(salt=2), self.out / "stage2", self.rt, after_step=self._reshard_teacher,
        )  # fmt: skip
        self._save_model(hybrid, self.out / "stage2" / "model")
        self.rt.barrier()
        self._mark_done("2", _stage_info(summary, spec))
        clear_checkpoint(self.out / "stage2")
        if self.rt.sharded:  # later steps load the whole model from stage2/model
            del hybrid, teacher
            self._drop_sharded_teacher()
        else:
            self.hybrid = hybrid

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
        if self.rt.sharded:  # loaded whole on the CPU from stage 2's result, then sharded onto the devices
            if not self.done("2"):
                raise ValueError("no trained hybrid yet: run stage 2 first")
            self.hybrid = None
            self._drop_sharded_teacher()
            model = self._load_model("2", device="cpu")
        else:
            model = self.current_hybrid()
        if self.cfg.gradient_checkpointing:
            _set_checkpointing(model, True)
        if self.rt.sharded:
            self.rt.shard(model, model.model.layers)
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
        if self.rt.sharded:
            del model
            _free_memory()

    def train_length(self) -> int:
        return self.cfg.stage3.seq_len if "3" in self.cfg.stages or self.done("3") else self.cfg.stage2.seq_len

    def hype(self) -> None:
        if self.done("hype"):
            self.current_hybrid().set_attn_logit_scaling(self.state["hype"]["chosen"])
            return
        cfg = self.cfg.hype
        model = self.current_hybrid().eval()
        length = cfg.length or 2 * self.train_length()
        candidates = ([None] if cfg.include_none else []) + [f"hype {a:g}" for a in cfg.alphas]
        results = []
        for value in candidates:
            model.set_attn_logit_scaling(value)
            score = self.ruler(model, cfg.tasks, [length], cfg.samples)["overall_average"]
            results.append({"attn_logit_scaling": value, "score": score})
        best = max(results, key=lambda r: (r["score"], r["attn_logit_scaling"] is not None))
        model.set_attn_logit_scaling(best["attn_logit_scaling"])
        self.state["hype"] = {"length": length, "tasks": cfg.tasks, "samples": cfg.samples, "sweep": results,
                              "chosen": best["attn_logit_scaling"]}  # fmt: skip
        self._mark_done("hype")

    # ------------------------------------------------------------------------------------------------ final

    def finish(self) -> dict | None:
        if self.hybrid is None and not (self.done("2") or self.done("3")):
            return None
        if self.rt.sharded and not self.rt.is_main and self.hybrid is None:
            self.rt.barrier()  # rank 0 alone loads the final hybrid, saves it and writes the report
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


def _save_sharded(model, target: Path, max_shard_size: str, rt: Runtime) -> None:
    """Gather an FSDP2-sharded hybrid's full state to rank 0 (a collective) and write it there as an ordinary HF
    directory, through a plain twin of the model built on the meta device (no second copy of the weights)."""
    from ..models import HybridForCausalLM
    from ..train.fsdp import full_state

    state, _ = full_state(model)
    if not rt.is_main:
        return
    with torch.device("meta"):
        plain = HybridForCausalLM(model.config)
    missing, unexpected = plain.load_state_dict(state, strict=False, assign=True)
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"gathered state does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    if model.config.tie_word_embeddings:
        plain.tie_weights()
    plain.save_pretrained(target, max_shard_size=max_shard_size)


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _set_checkpointing(model, on: bool) -> None:
    # transformers >= 5.2x renamed gradient_checkpointing_* to activation_checkpointing_*; 5.17 has only the old name.
    name = "activation_checkpointing" if hasattr(model, "activation_checkpointing_enable") else "gradient_checkpointing"
    getattr(model, f"{name}_{'enable' if on else 'disable'}")()


def _stage_info(summary: dict, spec) -> dict:
    return {"tokens": summary["tokens"], "steps": summary["steps"], "seconds": summary["seconds"],
            "tokens_per_s": summary.get("tokens_per_s"), "peak_mem_gib": summary.get("peak_mem_gib"),
            "steady_tokens_per_s": summary.get("steady_tokens_per_s"),
            "peak_mem_gib_per_rank": summary.get("peak_mem_gib_per_rank"), "parallel": summary.get("parallel"),
            "world_size": summary.get("world_size"),
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
