"""The engine on CUDA (skipped without a GPU): generate's tokens with the fast paths, timings and peak memory
reported, and a real out-of-memory turned into InferenceMemoryError."""

import pytest
import torch

from longforge.infer import InferenceEngine, InferenceMemoryError
from longforge.models import HybridForCausalLM
from longforge.models.shapes import tiny_hybrid_shape

pytestmark = pytest.mark.gpu


def _model():
    torch.manual_seed(0)
    return HybridForCausalLM(tiny_hybrid_shape()).eval().cuda()


def test_cuda_engine_equals_generate():
    model = _model()
    ids = torch.randint(0, 512, (1, 300), generator=torch.Generator().manual_seed(1)).cuda()
    with torch.no_grad():
        ref = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=0)[:, 300:]
    result = InferenceEngine(model, chunk_size=128).generate(ids, 12)
    assert torch.equal(result.tokens, ref)
    assert result.peak_mem_bytes > 0 and result.decode_tokens_per_s > 0 and len(result.chunk_times_s) == 3


def test_cuda_real_out_of_memory_is_reported():
    model = _model()
    free, _ = torch.cuda.mem_get_info()
    # the planner is told there is plenty; the pre-allocated cache for this many new tokens cannot exist
    engine = InferenceEngine(model, chunk_size=64, memory_budget_bytes=1 << 62)
    per_token = 2 * 2 * model.config.num_key_value_heads * model.config.head_dim * 4  # full + sparse layer, fp32
    with pytest.raises(InferenceMemoryError, match="ran out of memory"):
        engine.generate(torch.ones(1, 8, dtype=torch.long, device="cuda"), 2 * free // per_token)
    # and the device is usable afterwards
    assert InferenceEngine(model, chunk_size=64).generate(torch.ones(1, 8, dtype=torch.long, device="cuda"), 2)
