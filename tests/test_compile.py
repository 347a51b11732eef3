"""Adapters attached to a model that has already run compiled: the compiled model must run them.

torch.compile does not guard on a module's hook dictionaries, so a graph compiled before a hook was added to a new layer
kept running without it (a second named adapter on other layers, or an adapter attached after detaching everything, was
silently absent). The runtime resets dynamo when a hook comes or goes on a compiled model, the compiled wrapper included
(torch.compile marks the module it is given, which may sit above the model carrying the adapters, as a peft model does).
Run in a fresh process: dynamo's cleanup of the dropped graphs prints spurious KeyErrors at the exit of a long-lived one.
Tolerance: the eager backend runs the same ops as the uncompiled model, so 1e-5 covers reordering only.
"""
import os, subprocess, sys

SCRIPT = r'''
import torch, antipasto as ap
from peft import LoraConfig, get_peft_model
from antipasto.testing import tiny_lm, tiny_batch, model_out
batch = tiny_batch()
err = lambda a, b: (a - b).abs().max().item()
def perturb(model, name, seed):   # only adapter `name`: its effect alone must show
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for a in ap.adapters(model, name).values():
            for p in a.parameters(): p.add_(0.5 * torch.randn(p.shape, generator=g))
out = {}
for wrap in ('plain', 'peft'):
    torch.manual_seed(0)
    m = tiny_lm()
    if wrap == 'peft': m = get_peft_model(m, LoraConfig(r=2, target_modules=['k_proj']))
    ap.attach(m, ap.config_for('antipasto', r=8), name='one'); perturb(m, 'one', 0)
    cm = torch.compile(m, backend='eager')
    with torch.no_grad():
        one = model_out(cm, batch)                                   # compiled with hooks on q/v only
        ap.attach(cm, ap.config_for('lora', r=4, target_names=('o_proj$',)), name='two'); perturb(m, 'two', 1)
        both_c, both_e = model_out(cm, batch), model_out(m, batch)
        ap.detach(cm, name='two'); back_c = model_out(cm, batch)     # a hook went: the compiled model runs without it
        ap.detach(cm); base_c, base_e = model_out(cm, batch), model_out(m, batch)
        ap.attach(cm, ap.config_for('lora', r=4, target_names=('o_proj$',)), name='three'); perturb(m, 'three', 2)
        new_c, new_e = model_out(cm, batch), model_out(m, batch)
    out[wrap] = [err(both_c, both_e), err(both_e, one), err(back_c, one), err(base_c, base_e), err(new_c, new_e), err(new_e, base_c)]
print(*[x for w in ('plain', 'peft') for x in out[w]])
'''


def test_attach_after_a_compiled_forward():
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1'}
    p = subprocess.run([sys.executable, '-c', SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    vals = list(map(float, p.stdout.split()[-12:]))
    for wrap, (both, effect2, back, base, new, effect3) in zip(('plain', 'peft'), (vals[:6], vals[6:])):
        assert effect2 > 1e-2 and effect3 > 1e-2, (wrap, effect2, effect3)   # each new adapter changes the output
        assert max(both, back, base, new) <= 1e-5, (wrap, both, back, base, new)   # and the compiled model follows


CAST = r'''
import torch, antipasto as ap
from antipasto.testing import tiny_lm, tiny_batch, model_out, perturb_trainables
batch = tiny_batch()
torch.manual_seed(0)
m = tiny_lm().to(torch.bfloat16)
ap.attach(m, ap.config_for('antipasto', r=8)); perturb_trainables(m, 0.3)
cm = torch.compile(m, backend='eager')
with torch.no_grad(): before = model_out(cm, batch)       # compiled with the float32 adapter
ap.cast(cm, 'bfloat16')
with torch.no_grad(): after_c, after_e = model_out(cm, batch), model_out(m, batch)
print((after_c.float() - after_e.float()).abs().max().item(), (after_e.float() - before.float()).abs().max().item())
'''


def test_cast_under_compile():
    """`ap.cast` on a model that already ran compiled: the compiled model recompiles for the new dtype and matches the eager
    one. The family's `U` is a column-major view; refilled in place (`.data`) it kept its float32 base under it, and
    dynamo refused to trace it (float32 != bfloat16), so `cast` replaces buffers. Tolerance as above (eager backend)."""
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1'}
    p = subprocess.run([sys.executable, '-c', CAST], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    same, moved = map(float, p.stdout.split()[-2:])
    assert same <= 1e-5 and moved > 0, (same, moved)   # the compiled model follows the cast, which moved the output


CALIB = r'''
import torch, antipasto as ap
from antipasto.testing import tiny_lm, tiny_batch, model_out
calib, batch = [tiny_batch(), tiny_batch(seed=1)], tiny_batch(seed=5)
ref, m = tiny_lm().eval(), tiny_lm().eval()
m.compile(backend='eager')                       # in place: m(...) runs the compiled graph
with torch.no_grad(): model_out(m, tiny_batch(seed=3))
for v in ('antipasto', 'eva'):
    cfg = ap.config_for(v, r=8, target_names=(r'q_proj$',))
    want, got = ap.attach(ref, cfg, calib), ap.attach(m, cfg, calib)
    same = all(torch.equal(x, y) for n in want for x, y in zip(want[n].state_dict().values(), got[n].state_dict().values()))
    with torch.no_grad(): diff = (model_out(ref, batch) - model_out(m, batch)).abs().max().item()
    print(int(same), diff)
    ap.detach(ref); ap.detach(m)
'''


def test_calibration_after_a_compiled_forward():
    """A model compiled in place that has run: attach's calibration pass must see its inputs (the graph traced before
    ran none of the pass's hooks, and every target saw no tokens) and leave no hook of its own in the graph after it.
    The adapters must be bitwise those of the same attach on the uncompiled model; outputs within the tolerance above."""
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1'}
    p = subprocess.run([sys.executable, '-c', CALIB], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    vals = p.stdout.split()[-4:]
    for same, diff in (vals[:2], vals[2:]): assert same == '1' and float(diff) <= 1e-5, vals


SOME_BLOCKS = r'''
import torch, antipasto as ap
from antipasto.testing import tiny_lm, tiny_batch
ids = tiny_batch()['input_ids']
for targets in (r'layers\.1\.self_attn\.(q|v)_proj$', r'layers\.0\.self_attn\.(q|v)_proj$'):
    torch.compiler.reset()
    m = tiny_lm()
    with torch.no_grad(): base = m(input_ids=ids, use_cache=False).logits
    ads = ap.attach(m, ap.AntiPaSTOConfig(r=8, target_names=(targets,)))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for a in ads.values(): a.g.copy_(torch.randn(a.g.shape, generator=g))   # a trained gain
    cm = torch.compile(m, backend='eager')
    for c in (1.0, -1.0):
        with torch.no_grad(), ap.steer(m, c):   # serving: the first compiled calls
            e = m(input_ids=ids, use_cache=False).logits
            k = cm(input_ids=ids, use_cache=False).logits
        print((k - e).abs().max().item(), (e - base).abs().max().item())
    with ap.steer(m, 1.0): loss = cm(input_ids=ids, use_cache=False).logits.pow(2).mean()   # training through it
    print(float(loss.requires_grad), 0.0)
'''


def test_adapters_on_some_blocks_compiled(tmp_path):
    """Adapters on block 1 only: dynamo compiles a block's forward as its own frame (the adapter hook breaks the graph) and,
    without guards on hook dictionaries, block 1 ran block 0's hook-free code: the compiled model was the base, 0.15 off
    the eager one, and its loss had no gradient. No KV cache (`use_cache=False`), where dynamo does not recompile per block
    anyway. Tolerance as above (eager backend). Run from a file: from `python -c` the wrong reuse did not show."""
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1'}
    (tmp_path / 'some_blocks.py').write_text(SOME_BLOCKS)
    p = subprocess.run([sys.executable, str(tmp_path / 'some_blocks.py')], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = [list(map(float, l.split())) for l in p.stdout.strip().splitlines()[-6:]]
    for blocks in (rows[:3], rows[3:]):
        assert all(diff <= 1e-5 and effect > 1e-2 for diff, effect in blocks[:2]) and blocks[2][0] == 1.0, rows


UNPICKLED = r'''
import pickle, torch, antipasto as ap
import torch._dynamo.config as dc
from antipasto.testing import tiny_lm, tiny_batch
ids = tiny_batch()['input_ids']
m = tiny_lm()
ads = ap.attach(m, ap.AntiPaSTOConfig(r=8, target_names=(r'layers\.1\.self_attn\.(q|v)_proj$',)))
with torch.no_grad():
    for a in ads.values(): a.g.normal_(0, 1, generator=torch.Generator().manual_seed(1))
blob = pickle.dumps(m)
dc.skip_nnmodule_hook_guards = True   # as in a process that never attached (the default)
m = pickle.loads(blob)
cm = torch.compile(m, backend='eager')
for c in (1.0, -1.0):
    with torch.no_grad(), ap.steer(m, c):
        e = m(input_ids=ids, use_cache=False).logits
        k = cm(input_ids=ids, use_cache=False).logits
    with torch.no_grad(), ap.steer(m, 0.0): base = m(input_ids=ids, use_cache=False).logits
    print((k - e).abs().max().item(), (e - base).abs().max().item())
'''


def test_unpickled_model_compiled(tmp_path):
    """An adapted model unpickled where no attach ran (a worker, `torch.load` of the whole model): unpickling its record turns
    the hook guards on, or the compiled model ran the base with adapters on block 1 only (0.15 off). Tolerance as above."""
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1'}
    (tmp_path / 'unpickled.py').write_text(UNPICKLED)
    p = subprocess.run([sys.executable, str(tmp_path / 'unpickled.py')], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = [list(map(float, l.split())) for l in p.stdout.strip().splitlines()[-2:]]
    assert all(diff <= 1e-5 and effect > 1e-2 for diff, effect in rows), rows
