"""The hybrid on CUDA (skipped without a GPU): same logits as on CPU, cached generation, bf16 runs."""

import pytest
import torch

from longforge.models import HybridForCausalLM

from .helpers import mixed_config

pytestmark = pytest.mark.gpu


def test_cuda_matches_cpu_and_generates():
    torch.manual_seed(0)
    model = HybridForCausalLM(mixed_config()).eval()
    ids = torch.randint(1, 97, (2, 90))
    mask = torch.ones_like(ids)
    mask[1, :20] = 0
    with torch.no_grad():
        cpu = model(ids, attention_mask=mask, use_cache=False).logits
        gpu_model = model.cuda()
        gpu = gpu_model(ids.cuda(), attention_mask=mask.cuda(), use_cache=False).logits.cpu()
        torch.testing.assert_close(gpu[0], cpu[0], atol=2e-4, rtol=0)
        torch.testing.assert_close(gpu[1, 20:], cpu[1, 20:], atol=2e-4, rtol=0)
        cached = gpu_model.generate(
            ids.cuda(), attention_mask=mask.cuda(), max_new_tokens=16, do_sample=False, pad_token_id=0
        )
        uncached = gpu_model.generate(
            ids.cuda(), attention_mask=mask.cuda(), max_new_tokens=16, do_sample=False, use_cache=False, pad_token_id=0
        )
        assert torch.equal(cached, uncached)
        bf16 = gpu_model.to(torch.bfloat16)(ids.cuda(), attention_mask=mask.cuda()).logits.float().cpu()
        assert torch.isfinite(bf16[0]).all()
        assert (bf16[0] - cpu[0]).abs().max() < 0.25
