"""The backend seam: one place that decides whether an op runs its fast path or its naive reference.

Every op's ``__init__.py`` keeps a ``_FAST`` slot (``None`` until a fast implementation exists) and calls
:func:`resolve` with the device of its query tensor. The environment variable
``LONGFORGE_BACKEND_<OP>`` (``OP`` upper-cased: ``ATTENTION``, ``SPARSE_ATTENTION``, ``LIGHTNING``) overrides
the choice:

- unset (or empty): the fast path on CUDA when one exists, otherwise the naive reference. On CUDA without a
  fast path we warn once per op, because silently running an O(T^2) fp32 reference on a GPU is a trap;
- ``naive``: always the reference (useful to check a fast path, or on CPU where it is the only one);
- ``fast``: the fast path, or a ``ValueError`` when the op has none.

The variable is read at every call so that tests and scripts can flip it without re-importing.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch

ALLOWED_BACKENDS = ("naive", "fast")

# Ops already warned about (the naive reference running on CUDA); warn once per op per process.
_warned_naive_on_cuda: set[str] = set()


def env_var(op: str) -> str:
    """Name of the environment variable that overrides the backend of ``op`` (e.g. ``LONGFORGE_BACKEND_ATTENTION``)."""
    return f"LONGFORGE_BACKEND_{op.upper()}"


def resolve(
    op: str,
    fast_impl: Callable | None,
    naive_impl: Callable,
    device: torch.device | str,
    cpu_impl: Callable | None = None,
) -> Callable:
    """Pick the implementation of ``op`` for tensors on ``device``.

    Args:
        op: op name, e.g. ``"attention"``, ``"sparse_attention"``, ``"lightning"``.
        fast_impl: the fast implementation (same signature as ``naive_impl``) or ``None`` if there is none.
        naive_impl: the PyTorch reference.
        device: device of the op's query tensor.
        cpu_impl: what runs off CUDA when no backend is forced (pure PyTorch, tested against the reference);
            ``None`` = the reference. ``LONGFORGE_BACKEND_<OP>=naive`` still forces the reference everywhere.

    Returns:
        The callable to run.

    Raises:
        ValueError: ``LONGFORGE_BACKEND_<OP>`` is not ``naive``/``fast``/unset, or asks for ``fast`` when
            ``op`` has no fast implementation.
    """
    name = env_var(op)
    requested = os.environ.get(name, "").strip().lower()
    if requested == "naive":
        return naive_impl
    if requested == "fast":
        if fast_impl is None:
            raise ValueError(
                f"{name}=fast, but op '{op}' has no fast implementation yet; "
                f"unset {name} or set it to 'naive'"
            )
        return fast_impl
    if requested:
        raise ValueError(
            f"{name}={os.environ[name]!r} is not a backend; allowed values: {', '.join(ALLOWED_BACKENDS)} (or unset)"
        )

    device = torch.device(device)
    if device.type != "cuda" and cpu_impl is not None:
        return cpu_impl
    if device.type == "cuda":
        if fast_impl is not None:
            return fast_impl
        if op not in _warned_naive_on_cuda:
            _warned_naive_on_cuda.add(op)
            warnings.warn(
                f"longforge.ops: no fast '{op}' implementation is available; the naive fp32 PyTorch reference "
                f"runs on CUDA (slow, memory hungry). Set {name}=naive to acknowledge.",
                stacklevel=3,
            )
    return naive_impl
