"""Every family variant and LoRA, attached with default targets, on tiny models of each architecture built from their
configs (no download), and on bitsandbytes 4-bit (nf4, fp4) and 8-bit bases on CPU: the runtime contract
(`testing.check_variant`: identity at init exact, adapter-only gradients, a loss that goes down, steering, exact
save/load and bit-identical detach) and the float64 dense reference (`architectures.dense_reference`: the layer's
output against x W^T + b, the adapter's change against its formula at relative 1e-5, the basis against W's SVD).
MiniLM's real weights run the same matrix in each variant's notebook (`check_all`) and in tests/test_variants.py."""
import importlib.util
import pytest, torch
import antipasto as ap
from antipasto.architectures import ARCHS, QUANTS, check_row, registered_model, quantize_blocks, tiny_arch, arch_batch
from antipasto.core import config_for
from antipasto.layers import cpu_packed, dense_weight, layouts_held
from antipasto.testing import snapshot, assert_unchanged, model_out, check_variant, check_kw

FAMILY = ['antipasto', 'antipasto_rot', 'antipasto_ablate', 'antipasto_corda', 'antipasto_dplr']
VARIANTS = FAMILY + ['lora']
HAVE_BNB = importlib.util.find_spec('bitsandbytes') is not None
needs_bnb = pytest.mark.skipif(not HAVE_BNB, reason="bitsandbytes is not installed (it is in the dev extras): "
                                                   "the quantized-base tests need its CPU backend")


def _check(name, model):
    row = check_row(name, model)
    if check_kw(name).get('identity_tol', 0.0) == 0.0:  # rot and ablate start near identity by design
        assert row['identity'] == 0, row      # delta form: the base output, quantized or not, is untouched at init
    assert row['save/load'] == 0, row
    assert row['dense ref (adapter)'] <= 1e-5, row
    return row


# every family variant and LoRA on every architecture (78 cases; the 24 of the four architectures added on 2026-12-01 took 6 s)
ARCH_CASES = [(a, n) for a in sorted(ARCHS) for n in VARIANTS]


@pytest.mark.parametrize('arch,name', ARCH_CASES)
def test_architecture(arch, name):
    row = _check(name, arch)
    assert row['dense ref (base)'] <= 1e-5, row


@needs_bnb
@pytest.mark.parametrize('name', VARIANTS)
@pytest.mark.parametrize('quant', sorted(QUANTS))
def test_quantized_base(quant, name):
    _check(name, f'llama:{quant}')


@needs_bnb
@pytest.mark.parametrize('name', ['dora', 'delora', 'ia3', 'hra', 'eva', 'road', 'ia3_ff'])
def test_other_variants_on_4bit(name):
    "The LoRA-likes that read the weight (DoRA, DeLoRA) or only the layer's sizes, on an nf4 base."
    res = check_variant(name, model=registered_model('llama:nf4'))
    assert res['loss_last'] < res['loss_first']


@needs_bnb
def test_detach_keeps_quantized_tensors():
    "After training and detach, the 4-bit codes and scales are bit-identical, and no layer was rewritten for CPU."
    m, batch = quantize_blocks(tiny_arch('llama'), 'nf4'), arch_batch('llama')
    for l in m.modules():
        if hasattr(l, 'support_avx512bf16_for_cpu'): l.support_avx512bf16_for_cpu = True  # as an AVX512-BF16 CPU
    snap = snapshot(m)
    ap.attach(m, ap.AntiPaSTOConfig(r=8))
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        model_out(m, batch).pow(2).mean().backward(); opt.step(); opt.zero_grad()
        with torch.no_grad(): model_out(m.eval(), batch)   # the eval forward that would rewrite the layers
    assert not any(cpu_packed(l) for l in m.modules())
    ap.detach(m)
    assert_unchanged(m, snap)
    with torch.no_grad(): model_out(m, batch)
    assert any(cpu_packed(l) for l in m.modules())          # the flag is given back
    with pytest.raises(RuntimeError, match='Reload the model and attach adapters before running it in eval mode'):
        ap.attach(m, ap.LoRAConfig())
    assert not hasattr(m, '_antipasto')


@needs_bnb
@pytest.mark.parametrize('name', ['antipasto', 'antipasto_corda', 'eva'])
def test_calibration_keeps_4bit_layout(name):
    "On an AVX512-BF16 CPU (its flag forced on), an attach's calibration pass leaves every 4-bit layer as it was: exact identity."
    m, batch = quantize_blocks(tiny_arch('llama'), 'nf4'), arch_batch('llama')
    for l in m.modules():
        if hasattr(l, 'support_avx512bf16_for_cpu'): l.support_avx512bf16_for_cpu = True
    with torch.no_grad(), layouts_held(m): base = model_out(m, batch)
    ap.attach(m, config_for(name, r=8), [batch, batch])
    assert not any(cpu_packed(l) for l in m.modules())   # the pass ran eval without gradients, and nothing was rewritten
    with torch.no_grad(): assert torch.equal(model_out(m, batch), base)


def test_unknown_kind_named():
    "A layer kind antipasto cannot read a weight from is refused by name before anything changes; LoRA still fits it."
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__(); self.in_features, self.out_features = 8, 8
            self.weight = torch.nn.Parameter(torch.randn(8, 8))
        def forward(self, x): return x @ self.weight
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__(); self.blocks = torch.nn.ModuleList([Odd()])
        def forward(self, x): return self.blocks[0](x)
    m = M(); snap = snapshot(m)
    with pytest.raises(TypeError, match='Odd is not a layer kind antipasto can read a weight from'):
        ap.attach(m, ap.AntiPaSTOConfig(r=4, target_names=('blocks',)))
    assert_unchanged(m, snap)
    ap.attach(m, ap.LoRAConfig(r=2, target_names=('blocks',)))
    ap.detach(m)
