"""Adapters attached to a model that has already run compiled: the compiled model must run them.

torch.compile does not guard on a module's hook dictionaries, so a graph compiled before a hook was added to a new layer
kept running without it (a second named adapter on other layers, or an adapter attached after detaching everything, was
silently absent). The runtime resets dynamo when a hook comes or goes on a compiled model. Run in a fresh process:
dynamo's cleanup of the dropped graphs prints spurious KeyErrors at the exit of a long-lived one.
Tolerance: the eager backend runs the same ops as the uncompiled model, so 1e-5 covers reordering only.
"""
import os, subprocess, sys

SCRIPT = r'''
import torch, antipasto as ap
from antipasto.testing import tiny_lm, tiny_batch, perturb_trainables, model_out
batch = tiny_batch()
torch.manual_seed(0)
m = tiny_lm(); ap.attach(m, ap.config_for('antipasto', r=8)); perturb_trainables(m, 0.5)
cm = torch.compile(m, backend='eager')
err = lambda a, b: (a - b).abs().max().item()
with torch.no_grad():
    one = model_out(cm, batch)                                   # compiled with hooks on q/v only
    ap.attach(cm, ap.config_for('lora', r=4, target_names=('o_proj$',)), name='two'); perturb_trainables(m, 0.5, seed=1)
    both_c, both_e = model_out(cm, batch), model_out(m, batch)
    ap.detach(cm); base_c = model_out(cm, batch)
    ap.attach(cm, ap.config_for('lora', r=4, target_names=('o_proj$',)), name='three'); perturb_trainables(m, 0.5, seed=2)
    new_c, new_e = model_out(cm, batch), model_out(m, batch)
print(err(both_c, both_e), err(both_e, one), err(new_c, new_e), err(new_e, base_c))
'''


def test_attach_after_a_compiled_forward():
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1'}
    p = subprocess.run([sys.executable, '-c', SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    second, second_effect, after_detach, effect = map(float, p.stdout.split()[-4:])
    assert second_effect > 1e-2 and effect > 1e-2, (second_effect, effect)   # each new adapter changes the output
    assert second <= 1e-5 and after_detach <= 1e-5, (second, after_detach)   # and the compiled model runs it
