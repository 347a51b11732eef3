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


def test_head_under_an_offloaded_parent_runs():
    "BERT's head (`cls.predictions.decoder`) sits inside `cls`, which accelerate offloads: the pass must not stop inside `cls`'s hook."
    from accelerate import dispatch_model
    from transformers import BertConfig, BertForMaskedLM
    torch.manual_seed(0)
    ref = BertForMaskedLM(BertConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, max_position_embeddings=64)).eval()
    cfg, calib = ap.AntiPaSTOConfig(r=8, target_names=(r'query$',)), [tiny_batch(), tiny_batch(seed=1)]
    with tempfile.TemporaryDirectory() as d:
        m = dispatch_model(copy.deepcopy(ref), device_map={'bert': 'cpu', 'cls': 'disk'}, offload_dir=d)
        want, got = ap.attach(ref, cfg, calib), ap.attach(m, cfg, calib)
        assert m.cls.predictions.bias.is_meta   # offloaded again: cls's hook ran to its end
        for n in want:
            for k in ('U', 'S', 'Vh', 'selected'): assert torch.equal(getattr(want[n], k), getattr(got[n], k)), (n, k)


def test_dataloader_read_once():
    "A DataLoader is read once by an attach that needs one pass: torch's random state moves as one pass moves it, and a stream that cannot start over gives the bases a list gives."
    from torch.utils.data import DataLoader, IterableDataset
    batches = [tiny_batch(seed=i) for i in range(3)]
    cfg = ap.AntiPaSTOConfig(r=8, target_names=(r'q_proj$',))
    torch.manual_seed(0)
    want = ap.attach(tiny_lm().eval(), cfg, batches)

    loader = DataLoader(batches, batch_size=None, shuffle=True)
    m = tiny_lm().eval()
    torch.manual_seed(1); list(loader); after_one_pass = torch.get_rng_state()
    torch.manual_seed(1); ap.attach(m, cfg, loader)
    assert torch.equal(torch.get_rng_state(), after_one_pass)

    class Stream(IterableDataset):   # a stream that is used up after one read, as a generator-backed dataset is
        def __init__(self): self.it = iter(batches)
        def __iter__(self): return self.it
    got = ap.attach(tiny_lm().eval(), cfg, DataLoader(Stream(), batch_size=None))
    for n in want:
        for k in ('U', 'S', 'Vh', 'selected'): assert torch.equal(getattr(want[n], k), getattr(got[n], k)), (n, k)


def test_embeddings_offloaded():
    "The input embeddings offloaded to disk (the model's first parameter on meta): the pass sends its batches where values are, not to meta."
    from accelerate import dispatch_model
    torch.manual_seed(0)
    ref = tiny_lm().eval()
    with tempfile.TemporaryDirectory() as d:
        m = dispatch_model(copy.deepcopy(ref), device_map={'model.embed_tokens': 'disk', 'model.layers': 'cpu',
                                                            'model.norm': 'cpu', 'model.rotary_emb': 'cpu', 'lm_head': 'cpu'},
                           offload_dir=d)
        assert next(m.parameters()).is_meta
        calib = [tiny_batch(), tiny_batch(seed=1)]
        for v in ('antipasto', 'antipasto_corda', 'eva'):   # these read the calibration data; each failed with "Cannot copy out of meta tensor"
            cfg = ap.config_for(v, r=8, target_names=(r'q_proj$', r'v_proj$'))
            want, got = ap.attach(ref, cfg, calib), ap.attach(m, cfg, calib)
            for n in want:
                for k, t in want[n].state_dict().items(): assert torch.equal(t, got[n].state_dict()[k]), (v, n, k)
            b = tiny_batch(seed=2)
            with torch.no_grad(): assert torch.equal(m(**b).logits, ref(**b).logits), v
            ap.detach(ref); ap.detach(m)
