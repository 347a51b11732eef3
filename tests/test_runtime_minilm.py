"""The runtime's workflow guarantees on the real MiniLM encoder (the runtime notebook checks them on the tiny LM)."""
import copy, pickle, threading
import pytest, torch, transformers
import antipasto as ap
from antipasto.testing import minilm, minilm_batch, model_out, perturb_trainables, snapshot, assert_unchanged, enable_checkpointing


def _adapted(seed=0, **kw):
    torch.manual_seed(seed)
    m = minilm()
    ap.attach(m, ap.config_for('antipasto', r=16, **kw))
    perturb_trainables(m, 0.3)
    return m


def test_deepcopy_and_pickle_are_independent():
    m, b = _adapted(), minilm_batch()
    with torch.no_grad(): y = model_out(m, b)
    cp = copy.deepcopy(m)
    with torch.no_grad():
        for a in ap.adapters(cp).values(): a.g.zero_()
        assert torch.equal(model_out(m, b), y)
    model_out(cp, b).pow(2).mean().backward()
    assert all(a.g.grad is None for a in ap.adapters(m).values())
    again = pickle.loads(pickle.dumps(m))
    with torch.no_grad(): assert torch.equal(model_out(again, b), y)


def test_contrastive_step_under_gradient_checkpointing():
    b = minilm_batch()
    def grads(mode):
        m = _adapted()
        m.train()
        for mod in m.modules():   # MiniLM has dropout: switch it off so the passes are comparable
            if isinstance(mod, torch.nn.Dropout): mod.p = 0.0
        if mode is not None: enable_checkpointing(m, use_reentrant=mode)
        with ap.steer(m, -1.0): l1 = model_out(m, b).pow(2).mean()
        with ap.steer(m, 1.0): l2 = model_out(m, b).pow(2).mean()
        (l2 - l1).backward()
        return torch.cat([a.g.grad for a in ap.adapters(m).values()])
    ref = grads(None)
    assert ref.abs().sum() > 0
    for mode in (False, True): assert torch.equal(grads(mode), ref), mode


def test_every_other_block_checkpointed():
    "transformers 5 can checkpoint every n-th block only: the steered contrastive step's gradients are still exact."
    import inspect
    m = minilm()
    if 'every_n_layers' not in inspect.signature(getattr(m, 'activation_checkpointing_enable', lambda: None)).parameters:
        pytest.skip(f"transformers {transformers.__version__} has no activation_checkpointing_enable(every_n_layers=...)")
    b = minilm_batch()
    def grads(every):
        m = _adapted()
        m.train()
        for mod in m.modules():
            if isinstance(mod, torch.nn.Dropout): mod.p = 0.0
        if every: m.activation_checkpointing_enable(every_n_layers=every)
        with ap.steer(m, -1.0): l1 = model_out(m, b).pow(2).mean()
        with ap.steer(m, 1.0): l2 = model_out(m, b).pow(2).mean()
        (l2 - l1).backward()
        return [x for x in m.modules() if getattr(x, 'gradient_checkpointing', False)], torch.cat([a.g.grad for a in ap.adapters(m).values()])
    _, ref = grads(None)
    ckpt, got = grads(2)
    assert 0 < len(ckpt) < 6, len(ckpt)   # some blocks checkpointed, not all
    assert torch.equal(got, ref)


def test_threads_and_named_adapters():
    m, b = _adapted(), minilm_batch()
    ap.attach(m, ap.config_for('lora', r=4, target_names=(r'\.value$', r'output\.dense$')), name='style')
    perturb_trainables(m, 0.05, seed=1)
    with torch.no_grad():
        want = {}
        for c in (-1.0, 0.5, 2.0):
            with ap.steer(m, {'default': c, 'style': -c}): want[c] = model_out(m, b)
    wrong = []
    def work(c):
        for _ in range(3):
            with ap.steer(m, {'default': c, 'style': -c}), torch.no_grad():
                if not torch.equal(model_out(m, b), want[c]): wrong.append(c)
    ts = [threading.Thread(target=work, args=(c,)) for c in want]
    for t in ts: t.start()
    for t in ts: t.join()
    assert wrong == []
    snap = snapshot(minilm())
    ap.detach(m, name='style'); ap.detach(m)
    assert_unchanged(m, snap)


def test_to_bfloat16_keeps_adapter_dtype():
    m = _adapted().to(torch.bfloat16)
    assert {t.dtype for a in ap.adapters(m).values() for t in a.state_dict().values()} == {torch.float32}
