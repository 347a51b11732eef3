"""The runtime contract (SPEC section 2) for every registered variant, so a variant whose notebook forgets its checks is
still caught. Each variant notebook runs the full matrix (both models x float32/bfloat16 base) through
`testing.check_all`; here each variant runs on the tiny Qwen3 with a float32 base and on MiniLM with a bfloat16 base."""
import pytest, torch
import antipasto as ap
from antipasto.testing import check_variant


@pytest.mark.parametrize('model,base_dtype', [('tiny', torch.float32), ('minilm', torch.bfloat16)], ids=['tiny-f32', 'minilm-bf16'])
@pytest.mark.parametrize('name', sorted(ap.REGISTRY))
def test_contract(name, model, base_dtype):
    res = check_variant(name, model=model, base_dtype=base_dtype)
    assert res['loss_last'] < res['loss_first']
