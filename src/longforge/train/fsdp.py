"""FSDP2 helpers shared by `longforge train` and `longforge convert` under ``torchrun``.

Sharding follows torchtitan: one `fully_shard` unit per decoder layer (all-gathered just before the layer runs and
freed after it, in forward and again in backward), then the root, which holds what is left (embeddings, final norm,
lm_head — tied weights must live in one unit, and the root is the only unit that holds both ends). Checkpoints are
*full* state dicts gathered to rank 0 on the CPU (`torch.distributed.checkpoint.state_dict`, FQN-keyed), so a
checkpoint written on N ranks loads on any number of ranks, sharded or not, and the final model is an ordinary
safetensors directory.

The same two functions read and write state for a plain (unsharded) module, without a process group: that gives one
checkpoint format for every parallel mode.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def shard_model(model: nn.Module, units: Iterable[nn.Module], mesh=None) -> nn.Module:
    """FSDP2 in place: ``fully_shard`` each module of ``units`` (decoder layers), then ``model`` (the root).

    Parameters move to ``mesh``'s device as they are sharded (one unit at a time), so a model loaded on the CPU never
    exists whole on the GPU. ``mesh`` None: torch's default one-dimensional mesh over the world."""
    from torch.distributed.fsdp import fully_shard

    kwargs = {} if mesh is None else {"mesh": mesh}
    for unit in units:
        fully_shard(unit, **kwargs)
    fully_shard(model, **kwargs)
    return model


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> tuple[dict, dict | None]:
    """Full (unsharded) model and optimizer state dicts on the CPU, keyed by parameter name.

    Under FSDP2 this is a collective (every rank must call it) and only rank 0 receives the tensors; the other ranks
    get empty dicts. For a plain module it is a CPU copy of ``state_dict()`` and a name-keyed optimizer state."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(model, options=opts)
    optim_state = get_optimizer_state_dict(model, optimizer, options=opts) if optimizer is not None else None
    return model_state, optim_state


def load_full_state(
    model: nn.Module, model_state: dict, optimizer: torch.optim.Optimizer | None = None, optim_state: dict | None = None
) -> None:
    """The inverse of :func:`full_state`: every rank passes the full dicts (read from the checkpoint files) and keeps
    its own shard. Works for sharded and plain modules alike."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    set_model_state_dict(model, model_state, options=opts)
    if optimizer is not None and optim_state is not None:
        set_optimizer_state_dict(model, optimizer, optim_state, options=opts)


def grad_norm_value(norm) -> float:
    """``clip_grad_norm_``'s result as a float: a DTensor (sharded parameters) is reduced to the full norm first."""
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
