"""The calibration pass's shortcuts (the output head skipped, the token count stopped early) on a model dispatched by accelerate.

A forward that a calibration pass ends early leaves the hooks of the modules it was inside half-run. With accelerate's
`dispatch_model` those are hooks that move inputs and offloaded weights: the attach below must give bitwise the bases of
the same attach on the undispatched model, the offloaded head must never have run, and later forwards must match exactly.
"""
import copy, tempfile
import torch
import antipasto as ap
from antipasto.testing import tiny_lm, tiny_batch


def test_calibration_on_dispatched_model():
    from accelerate import dispatch_model
    torch.manual_seed(0)
    ref = tiny_lm().eval()
    with tempfile.TemporaryDirectory() as d:
        m = dispatch_model(copy.deepcopy(ref), device_map={'model': 'cpu', 'lm_head': 'disk'}, offload_dir=d)
        assert m.lm_head.weight.is_meta   # offloaded: accelerate's hook loads it for each forward
        calls = []
        h = m.lm_head.register_forward_hook(lambda *a: calls.append(1))
        calib = [tiny_batch(), tiny_batch()]
        cfg = ap.AntiPaSTOConfig(r=8, target_names=(r'q_proj$', r'v_proj$'))
        want, got = ap.attach(ref, cfg, calib), ap.attach(m, cfg, calib)
        assert calls == []   # the token count and the selection's pass both stopped before the head
        for n in want:
            for k in ('U', 'S', 'Vh', 'selected'): assert torch.equal(getattr(want[n], k), getattr(got[n], k)), (n, k)
        b = tiny_batch()
        with torch.no_grad(): y_ref, y = ref(**b).logits, m(**b).logits
        h.remove()
        assert calls == [1] and torch.equal(y, y_ref)
        assert m.lm_head.weight.is_meta   # offloaded again after the forward: the skipped head left no hook half-run
