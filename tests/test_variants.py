"""The runtime contract (`testing.check_variant`: exact identity at init, adapter-only gradients, a loss that goes down,
steering, exact save/load and detach) for every registered variant, so a variant whose notebook forgets its checks is
still caught. Each variant notebook runs the full matrix (tiny LM and MiniLM x float32/bfloat16 base) through
`testing.check_all`; here each variant runs on the tiny Qwen3 with a float32 and a bfloat16 base (MiniLM in bfloat16
costs ~10-50 s per variant on a CPU, and the notebooks already run it)."""
import pytest, torch
import antipasto as ap
from antipasto.testing import check_variant


@pytest.mark.parametrize('model,base_dtype', [('tiny', torch.float32), ('tiny', torch.bfloat16)], ids=['tiny-f32', 'tiny-bf16'])
@pytest.mark.parametrize('name', sorted(ap.REGISTRY))
def test_contract(name, model, base_dtype):
    res = check_variant(name, model=model, base_dtype=base_dtype)
    assert res['loss_last'] < res['loss_first']
