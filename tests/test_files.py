"""Adapter files across fresh processes: a compact file (bases recomputed at load) is the same file and gives the same
outputs whichever process wrote or read it."""
import json, os, subprocess, sys
import pytest
from safetensors import safe_open

CODE = r'''
import hashlib, json, sys, torch
import antipasto as ap
from antipasto.testing import minilm, minilm_batch, model_out, perturb_trainables, SENTENCES
from safetensors import safe_open
mode, path, out = sys.argv[1:4]
m = minilm()
if mode.startswith('write'):
    torch.manual_seed(0)
    calib = [minilm_batch(SENTENCES)] if mode == 'write_calibrated' else None
    ap.attach(m, ap.config_for('antipasto_rot', r=16), calib)
    perturb_trainables(m, 0.1)
    ap.save(m, path)
else:
    ap.load(m, path)
    ap.save(m, path + '.again')
h = hashlib.sha256()
with safe_open(path, 'pt') as f:
    h.update(json.dumps(f.metadata(), sort_keys=True).encode())
    for k in sorted(f.keys()): h.update(k.encode()); h.update(f.get_tensor(k).numpy().tobytes())
with torch.no_grad(): y = model_out(m, minilm_batch())
torch.save(y, out)
print(h.hexdigest())
'''


def _run(*args):
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1'}
    p = subprocess.run([sys.executable, '-c', CODE, *args], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize('write', ['write', 'write_calibrated'])
def test_compact_file_across_processes(tmp_path, write):
    "Uncalibrated: the basis is the weight's top-r; calibrated: directions picked by the data, stored as indices."
    import torch
    path = str(tmp_path / 'a.safetensors')
    h1 = _run(write, path, str(tmp_path / 'y1.pt'))
    h2 = _run('read', path, str(tmp_path / 'y2.pt'))
    _run('read', path + '.again', str(tmp_path / 'y3.pt'))
    assert h1 == h2
    y1, y2, y3 = (torch.load(tmp_path / f'y{i}.pt') for i in (1, 2, 3))
    assert torch.equal(y1, y2) and torch.equal(y1, y3)   # same machine, same code path: the recomputed basis is bitwise
    assert os.path.getsize(path) < 60_000   # 12 targets at r = 16: trainables, sketches, indices, fingerprints
    with safe_open(path, 'pt') as f: keys = list(f.keys())
    assert any(k.endswith('.selected') for k in keys) == (write == 'write_calibrated'), keys[:6]
