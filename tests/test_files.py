"""Adapter files across fresh processes: a compact file (bases recomputed at load) is the same file and gives the same
outputs whichever process wrote or read it. Two adapters, each in its own file: one attached without calibration data
(its basis is the weight's top r) and one whose directions calibration data picked (stored as their indices)."""
import json, os, subprocess, sys

CODE = r'''
import hashlib, json, sys, torch
import antipasto as ap
from antipasto.testing import minilm, minilm_batch, model_out, perturb_trainables, SENTENCES
from safetensors import safe_open
mode, folder = sys.argv[1:3]
out = {}
for kind, calib in (('plain', None), ('picked', [minilm_batch(SENTENCES)])):
    path, m = f'{folder}/{kind}{mode}.safetensors', minilm()
    if mode == '':
        torch.manual_seed(0)
        ap.attach(m, ap.config_for('antipasto_rot', r=16), calib)
        perturb_trainables(m, 0.1)
        ap.save(m, path)
    else:
        ap.load(m, f'{folder}/{kind}.safetensors')
        ap.save(m, path)
    h = hashlib.sha256()
    with safe_open(path, 'pt') as f:
        h.update(json.dumps(f.metadata(), sort_keys=True).encode())
        for k in sorted(f.keys()): h.update(k.encode()); h.update(f.get_tensor(k).numpy().tobytes())
    with torch.no_grad(): torch.save(model_out(m, minilm_batch()), f'{folder}/{kind}{mode}.pt')
    out[kind] = h.hexdigest()
print(json.dumps(out))
'''


def _run(mode, folder):
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1'}
    p = subprocess.run([sys.executable, '-c', CODE, mode, str(folder)], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_compact_files_across_processes(tmp_path):
    import torch
    from safetensors import safe_open
    h1 = _run('', tmp_path)                 # writes plain / picked
    h2 = _run('.again', tmp_path)           # a fresh process loads them and saves them again
    assert h1 == h2, (h1, h2)               # the same file, byte for byte (so loading the copy is loading the original)
    for kind in ('plain', 'picked'):
        y1, y2 = (torch.load(tmp_path / f'{kind}{m}.pt') for m in ('', '.again'))
        assert torch.equal(y1, y2), kind    # same machine, same code path: the recomputed basis is bitwise
        path = tmp_path / f'{kind}.safetensors'
        assert os.path.getsize(path) < 60_000, kind   # 12 targets at r = 16: trainables, sketches, indices, fingerprints
        with safe_open(path, 'pt') as f: keys = list(f.keys())
        assert any(k.endswith('.selected') for k in keys) == (kind == 'picked'), keys[:6]
