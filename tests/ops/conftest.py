import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    """Every ops test draws its random inputs from a fixed seed, so a failure reproduces."""
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    """The loop references issue tens of thousands of tiny ops; with 2+ intra-op threads on a loaded CI box each
    op can stall on a descheduled worker (measured: 100 s vs 17 s for tests/ops). One thread is also faster
    unloaded for these sizes. Restored afterwards so other test folders keep their setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
