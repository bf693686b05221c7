"""The backend seam (longforge.ops._backend.resolve) and its wiring into each op."""

import warnings

import pytest
import torch

import longforge.ops.attention as attention_op
import longforge.ops.linear_attention as lightning_op
import longforge.ops.sparse_attention as sparse_op
from longforge.ops import _backend
from longforge.ops._backend import resolve

OPS = ("attention", "sparse_attention", "lightning")


def naive_impl(*args, **kwargs):
    return "naive"


FAST_MARKER = ("fast", None)


def fast_impl(*args, **kwargs):
    return FAST_MARKER


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    for op in OPS:
        monkeypatch.delenv(f"LONGFORGE_BACKEND_{op.upper()}", raising=False)
    monkeypatch.setattr(_backend, "_warned_naive_on_cuda", set())


def test_env_var_names():
    assert [_backend.env_var(op) for op in OPS] == [
        "LONGFORGE_BACKEND_ATTENTION", "LONGFORGE_BACKEND_SPARSE_ATTENTION", "LONGFORGE_BACKEND_LIGHTNING"]


def test_unset_picks_fast_only_on_cuda():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve("attention", fast_impl, naive_impl, cpu) is naive_impl
    assert resolve("attention", fast_impl, naive_impl, cuda) is fast_impl
    assert resolve("attention", None, naive_impl, cpu) is naive_impl


def test_cpu_impl_runs_off_cuda_unless_naive_is_forced(monkeypatch):
    def cpu_impl():
        pass

    assert resolve("sparse_attention", fast_impl, naive_impl, "cpu", cpu_impl=cpu_impl) is cpu_impl
    assert resolve("sparse_attention", fast_impl, naive_impl, "cuda", cpu_impl=cpu_impl) is fast_impl
    monkeypatch.setenv("LONGFORGE_BACKEND_SPARSE_ATTENTION", "naive")
    assert resolve("sparse_attention", fast_impl, naive_impl, "cpu", cpu_impl=cpu_impl) is naive_impl


def test_naive_on_cuda_warns_once_per_op():
    with pytest.warns(UserWarning, match="LONGFORGE_BACKEND_ATTENTION=naive"):
        assert resolve("attention", None, naive_impl, "cuda") is naive_impl
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve("attention", None, naive_impl, "cuda")  # second time: silent
        resolve("attention", None, naive_impl, "cpu")  # CPU: the reference is expected, silent
    with pytest.warns(UserWarning, match="'lightning'"):
        resolve("lightning", None, naive_impl, "cuda")  # another op warns on its own


@pytest.mark.parametrize("value", ["naive", "NAIVE", " naive "])
def test_env_naive_overrides(monkeypatch, value):
    monkeypatch.setenv("LONGFORGE_BACKEND_SPARSE_ATTENTION", value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked for explicitly: no warning
        assert resolve("sparse_attention", fast_impl, naive_impl, "cuda") is naive_impl


def test_env_fast(monkeypatch):
    monkeypatch.setenv("LONGFORGE_BACKEND_LIGHTNING", "fast")
    assert resolve("lightning", fast_impl, naive_impl, "cpu") is fast_impl
    with pytest.raises(ValueError, match="LONGFORGE_BACKEND_LIGHTNING=fast.*no fast implementation"):
        resolve("lightning", None, naive_impl, "cpu")


def test_env_invalid_value(monkeypatch):
    monkeypatch.setenv("LONGFORGE_BACKEND_ATTENTION", "triton")
    with pytest.raises(ValueError, match=r"'triton' is not a backend; allowed values: naive, fast"):
        resolve("attention", fast_impl, naive_impl, "cpu")


def _attention_call():
    q = torch.randn(1, 4, 2, 8)
    return attention_op.attention(q, q[:, :, :1], q[:, :, :1])


def _sparse_call():
    q = torch.randn(1, 4, 2, 8)
    return sparse_op.sparse_attention(q, q[:, :, :1], q[:, :, :1], block_size=4, kernel_size=2, kernel_stride=2)


def _lightning_call():
    q = torch.randn(1, 4, 2, 8)
    return lightning_op.lightning_attention(q, q, q, lightning_op.alibi_decay(2))


@pytest.mark.parametrize(
    "env,module,slot,call",
    [
        ("ATTENTION", attention_op, "_FAST", _attention_call),
        ("SPARSE_ATTENTION", sparse_op, "_FAST", _sparse_call),
        ("LIGHTNING", lightning_op, "_FAST_CHUNK", _lightning_call),
    ],
)
def test_public_ops_go_through_the_seam(monkeypatch, env, module, slot, call):
    # Without a fast implementation (slot emptied): 'fast' is a clear error, 'naive' runs the reference.
    monkeypatch.setattr(module, slot, None)
    monkeypatch.setenv(f"LONGFORGE_BACKEND_{env}", "fast")
    with pytest.raises(ValueError, match="no fast implementation"):
        call()
    monkeypatch.setenv(f"LONGFORGE_BACKEND_{env}", "naive")
    out = call()
    assert isinstance(out[0] if isinstance(out, tuple) else out, torch.Tensor)
    monkeypatch.setenv(f"LONGFORGE_BACKEND_{env}", "bogus")
    with pytest.raises(ValueError, match="allowed values"):
        call()
    # Filling the slot is all it takes to add a fast path.
    monkeypatch.setattr(module, slot, fast_impl)
    monkeypatch.setenv(f"LONGFORGE_BACKEND_{env}", "fast")
    assert call() is FAST_MARKER


def test_ops_import_without_transformers():
    import subprocess
    import sys

    # Block transformers (a None entry in sys.modules makes its import fail) as in a torch-only install.
    code = (
        "import sys; sys.modules['transformers'] = None; "
        "import longforge.ops; from longforge.ops.attention import attention; "
        "from longforge.ops.sparse_attention import sparse_attention; "
        "from longforge.ops.linear_attention import lightning_attention"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
