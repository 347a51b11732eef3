"""Every variant on a CUDA device: attach (with calibration data where the variant takes it), identity at init, gradients
that reach the adapter, a compact file loaded onto a fresh model, merge and an exact unmerge. Bugs that only a second
device shows (a tensor accumulated on the CPU meeting a weight on the GPU) live here. Skipped, with the reason printed,
on a machine without a GPU; CI has none, so this runs on the GPU machine when a session has one."""
from dataclasses import fields
import pytest, torch
import antipasto as ap
from antipasto.core import variant_cls
from antipasto.testing import tiny_lm, tiny_batch, model_out, perturb_trainables, check_kw

NO_GPU = "no CUDA device on this machine: these checks run where torch.cuda.is_available()"


def _on(dev, batch): return {k: v.to(dev) for k, v in batch.items()}


def run_on(name: str, dev: str, tmp_path) -> None:
    "The device round trip for variant `name` on `dev`; raises on the first thing that differs."
    cls, kw = variant_cls(name), check_kw(name)
    cfg = ap.config_for(name, **{k: v for k, v in kw.items() if k in {f.name for f in fields(cls.config_cls)}})
    torch.manual_seed(0)
    m, batch = tiny_lm().to(dev), _on(dev, tiny_batch())
    weights = {k: v.clone() for k, v in m.state_dict().items()}
    with torch.no_grad(): base = model_out(m, batch)
    calib = [_on(dev, tiny_batch(4, 32, seed=1))] if cls.calibration != 'none' else None
    adp = ap.attach(m, cfg, calib)
    assert all(t.device.type == torch.device(dev).type for a in adp.values() for t in a.state_dict().values()), name
    # family and LoRA-likes add exactly zero at init; the near-identity inits have their own bound (testing.CHECK_KW)
    with torch.no_grad(): err = (model_out(m, batch) - base).abs().max().item()
    assert err <= max(kw.get('identity_tol', 0.0), 1e-6), (name, err)
    perturb_trainables(m, 0.1)
    model_out(m, batch).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters() if p.requires_grad), name
    with torch.no_grad(): y = model_out(m, batch)
    ap.save(m, tmp_path / 'a.safetensors')
    fresh = tiny_lm().to(dev)
    ap.load(fresh, tmp_path / 'a.safetensors')
    with torch.no_grad(): torch.testing.assert_close(model_out(fresh, batch), y, rtol=1e-4, atol=1e-5)
    ap.merge(m)
    with torch.no_grad(): torch.testing.assert_close(model_out(m, batch), y, rtol=1e-4, atol=1e-4)
    ap.unmerge(m); ap.detach(m)
    assert all(torch.equal(v, weights[k]) for k, v in m.state_dict().items()), name   # the base back bitwise


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)
@pytest.mark.parametrize('name', sorted(ap.REGISTRY))
def test_variant_on_cuda(name, tmp_path):
    run_on(name, 'cuda', tmp_path)
