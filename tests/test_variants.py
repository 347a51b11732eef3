"""The runtime contract (SPEC section 2) for every registered variant, on both test models, base in float32 and bfloat16."""
import pytest, torch
import antipasto as ap
from antipasto.testing import check_variant


@pytest.mark.parametrize('base_dtype', [torch.float32, torch.bfloat16], ids=['f32', 'bf16'])
@pytest.mark.parametrize('model', ['tiny', 'minilm'])
@pytest.mark.parametrize('name', sorted(ap.REGISTRY))
def test_contract(name, model, base_dtype):
    res = check_variant(name, model=model, base_dtype=base_dtype)
    assert res['loss_last'] < res['loss_first']
