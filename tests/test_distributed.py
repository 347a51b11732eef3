"""The runtime under torchrun (gloo, two CPU processes): DDP and FSDP2 train, steer and save through the wrapper.

Run as a script by torchrun (the worker); run by pytest (the launcher and the checks). Each worker shuts its process
group down, then leaves with os._exit (a rank can abort at interpreter exit with "terminate called without an active
exception", even after a clean destroy_process_group). The DDP run reports the step time with the frozen bases excluded from DDP's per-step buffer broadcast
(what attach sets up) and with them broadcast (DDP's default), in one run.
"""
import hashlib, json, os, subprocess, sys, time
import torch

NPROC = 2


def _digest(path) -> str:
    "A hash of an adapter file's tensors and metadata (safetensors may order the header differently per process)."
    from safetensors import safe_open
    h = hashlib.sha256()
    with safe_open(path, 'pt') as f:
        h.update(json.dumps(f.metadata(), sort_keys=True).encode())
        for k in sorted(f.keys()): h.update(k.encode()); h.update(f.get_tensor(k).numpy().tobytes())
    return h.hexdigest()


def _steps(model, wrapped, batch, opt, n=3) -> float:
    import antipasto as ap
    from antipasto.testing import model_out
    t0 = time.perf_counter()
    for _ in range(n):
        with ap.steer(wrapped, 1.0): up = model_out(wrapped, batch).pow(2).mean()
        with ap.steer(wrapped, -1.0): down = model_out(wrapped, batch).pow(2).mean()
        (up - down).backward()   # the contrastive step of steering training
        opt.step(); opt.zero_grad()
    return (time.perf_counter() - t0) / n


def worker(mode: str, out_dir: str) -> None:
    import torch.distributed as dist
    import antipasto as ap
    from antipasto.testing import tiny_lm, tiny_batch, perturb_trainables
    dist.init_process_group('gloo')
    try:
        rank = dist.get_rank()
        if mode == 'calib': return _calib(rank, out_dir)
        if mode == 'steer': return _steer_train(rank, out_dir)
        torch.manual_seed(0)
        model = tiny_lm()
        ap.attach(model, ap.config_for('antipasto', r=8))
        perturb_trainables(model, 0.1)   # the same seeded values on every rank
        batch = tiny_batch(seed=100 + rank)  # different data on each rank
        res = {}
        if mode == 'ddp':
            from torch.nn.parallel import DistributedDataParallel as DDP
            wrapped = DDP(model)
            res['ignored_buffers'] = len(wrapped.parameters_to_ignore)
            opt = torch.optim.Adam([p for p in wrapped.parameters() if p.requires_grad], lr=1e-2)
            _steps(model, wrapped, batch, opt, 1)   # warm-up
            res['step_s'] = _steps(model, wrapped, batch, opt)
            ignore = model.__dict__.pop('_ddp_params_and_buffers_to_ignore')
            broadcasting = DDP(model)   # DDP's default: every buffer, the frozen bases included, sent every forward
            opt2 = torch.optim.Adam([p for p in broadcasting.parameters() if p.requires_grad], lr=0.0)
            res['step_s_broadcast'] = _steps(model, broadcasting, batch, opt2)
            model._ddp_params_and_buffers_to_ignore = ignore
        else:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard
            fully_shard(model, mesh=init_device_mesh('cpu', (NPROC,)))
            wrapped = model
            opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
            res['step_s'] = _steps(model, wrapped, batch, opt)
            res['sharded'] = sum(type(p).__name__ == 'DTensor' for p in model.parameters())
        path = os.path.join(out_dir, f'{mode}_rank{rank}.safetensors')
        ap.save(wrapped, path)   # every rank: FSDP2's gather is collective
        res['sha'] = _digest(path)
        if mode == 'fsdp':   # the Trainer callback, called as the Trainer calls it: on every rank, rank 0 the world's zero
            from transformers import TrainingArguments
            from transformers.trainer_callback import TrainerState
            state = TrainerState(); state.global_step, state.is_world_process_zero = 3, rank == 0
            cb = os.path.join(out_dir, f'cb{rank}')   # a folder per rank, to see which ranks write
            os.makedirs(os.path.join(cb, 'checkpoint-3'), exist_ok=True)
            ap.AdapterCheckpoints().on_save(TrainingArguments(cb, use_cpu=True, report_to=[]), state, None, model=wrapped)
        if mode == 'ddp':
            fresh = tiny_lm()
            ap.load(fresh, path)
            from antipasto.testing import model_out
            with torch.no_grad(), ap.steer(wrapped, -1.0), ap.steer(fresh, -1.0):
                res['reload_err'] = (model_out(fresh, batch) - model_out(model, batch)).abs().max().item()
        with open(os.path.join(out_dir, f'{mode}_rank{rank}.json'), 'w') as f: json.dump(res, f)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _calib(rank: int, out_dir: str) -> None:
    "Each rank calibrates on its own batch; a reference passes both batches on every rank (twice the data, the same statistics)."
    import torch.distributed as dist
    import antipasto as ap
    from antipasto.testing import tiny_lm, tiny_batch
    small = {'input_ids': tiny_batch(seed=101)['input_ids'][:1, :3]}   # 3 real tokens, fewer than r: the sum over ranks counts
    mine, both = [tiny_batch(seed=100) if rank == 0 else small], [tiny_batch(seed=100), small]
    res = {}
    for v in ('antipasto', 'antipasto_corda', 'eva'):
        got = {}
        for tag, data in (('sharded', mine), ('reference', both)):
            m = tiny_lm()
            got[tag] = {f'{n}.{k}': t.detach().clone() for n, a in ap.attach(m, ap.config_for(v, r=4), data).items()
                        for k, t in a.state_dict().items()}
        h = hashlib.sha256(b''.join(got['sharded'][k].numpy().tobytes() for k in sorted(got['sharded']))).hexdigest()
        res[v] = {'sha': h, 'vs_reference': max((got['sharded'][k].double() - got['reference'][k].double()).abs().max().item()
                                                  for k in got['sharded'])}
    try: ap.attach(tiny_lm(), ap.config_for('antipasto', r=4, layers=[rank]), mine); res['other_targets'] = 'accepted'
    except ValueError as e: res['other_targets'] = 'refused' if 'every rank must attach the same targets' in str(e) else repr(e)
    own = ap.attach(tiny_lm(), ap.config_for('antipasto_corda', r=2), [tiny_batch(seed=100 + rank)], across_ranks=False)
    res['alone'] = hashlib.sha256(b''.join(a.P.numpy().tobytes() for a in own.values())).hexdigest()
    with open(os.path.join(out_dir, f'calib_rank{rank}.json'), 'w') as f: json.dump(res, f)
    dist.barrier()


def _steer_train(rank: int, out_dir: str) -> None:
    "train_steering through DDP on a masked LM in train mode with dropout: each rank its own batches and dropout masks."
    import torch.distributed as dist
    import antipasto as ap
    from torch.nn.parallel import DistributedDataParallel as DDP
    from transformers import BertConfig, BertForMaskedLM
    from antipasto.steering import ByteTokenizer, builtin_pairs, train_steering
    torch.manual_seed(0)
    m = BertForMaskedLM(BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                   hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)).train()
    ap.attach(m, ap.AntiPaSTOConfig(r=8, target_names=(r'(query|value)$',)))
    g0 = torch.cat([a.g.detach().flatten() for a in ap.adapters(m).values()])
    hist = train_steering(DDP(m), ByteTokenizer(), builtin_pairs('sentiment', n=16), steps=3, lr=5e-2, batch_size=4, seed=rank,
                          progress=False)   # seed: each rank its own batches and dropout masks
    g = torch.cat([a.g.detach().flatten() for a in ap.adapters(m).values()])
    res = {'hist': hist, 'sha': hashlib.sha256(g.numpy().tobytes()).hexdigest(), 'moved': (g - g0).abs().max().item(),
           'train_mode': all(x.training for x in m.modules())}
    with open(os.path.join(out_dir, f'steer_rank{rank}.json'), 'w') as f: json.dump(res, f)
    dist.barrier()


def _run(mode, tmp_path):
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1',
           'TOKENIZERS_PARALLELISM': 'false'}
    p = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(NPROC),
                        __file__, mode, str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return [json.loads((tmp_path / f'{mode}_rank{r}.json').read_text()) for r in range(NPROC)]


def test_ddp_steer_train_save(tmp_path):
    res = _run('ddp', tmp_path)
    print(f"DDP step: {res[0]['step_s'] * 1e3:.1f} ms with the frozen bases excluded from the broadcast, "
          f"{res[0]['step_s_broadcast'] * 1e3:.1f} ms with them broadcast (DDP's default); "
          f"{res[0]['ignored_buffers']} buffers excluded")
    assert res[0]['ignored_buffers'] == 3 * 4   # U, S, Vh on q/v of 2 blocks
    assert res[0]['sha'] == res[1]['sha']       # the replicas stayed identical, so the files are too
    assert res[0]['reload_err'] == 0.0


def test_fsdp2_steer_train_save(tmp_path):
    res = _run('fsdp', tmp_path)
    print(f"FSDP2 step: {res[0]['step_s'] * 1e3:.1f} ms; {res[0]['sharded']} sharded parameters")
    assert res[0]['sharded'] > 0
    assert res[0]['sha'] == res[1]['sha']   # every rank gathers and writes the same adapter file
    # AdapterCheckpoints gathers on every rank (the gather is collective: saving on rank 0 alone hung) and writes on rank 0
    from safetensors.torch import load_file
    saved, cb = load_file(tmp_path / 'fsdp_rank0.safetensors'), load_file(tmp_path / 'cb0' / 'checkpoint-3' / 'antipasto_adapter.safetensors')
    assert saved.keys() == cb.keys() and all(torch.equal(saved[k], cb[k]) for k in saved)
    assert not (tmp_path / 'cb1' / 'checkpoint-3' / 'antipasto_adapter.safetensors').exists()   # rank 1 gathered, wrote nothing


def test_calibration_sharded_per_rank(tmp_path):
    """Each rank passes its own calibration batch (a DistributedSampler's shard): the statistics are summed over the
    ranks, so the selected directions (antipasto), CorDA's basis and EVA's A are the same on every rank (bitwise), and
    equal to an attach that saw all the data (to float32 rounding of the stored tensors: 1e-5), also when one rank's
    shard alone has fewer tokens than r. Before, each rank kept
    the basis of its own shard (they differed by 0.8) and DDP, which does not broadcast the frozen bases, never noticed."""
    res = _run('calib', tmp_path)
    for v in ('antipasto', 'antipasto_corda', 'eva'):
        assert res[0][v]['sha'] == res[1][v]['sha'], v
        assert res[0][v]['vs_reference'] <= 1e-5, (v, res[0][v])
    # ranks calibrating different layers: refused on every rank (their sums would be added position by position)
    assert [r['other_targets'] for r in res] == ['refused', 'refused'], res
    assert res[0]['alone'] != res[1]['alone']   # across_ranks=False: each rank its own data, no collective


def test_train_steering_under_ddp(tmp_path):
    """`train_steering` given the DDP wrapper of a masked LM in train mode, dropout 0.1, each rank its own batches and
    dropout masks: the step reads the masked LM's config through the wrapper (it read the wrapper's, found none and
    failed for want of hidden states), the first loss is the encoder's identity loss 2m = 1 on every rank (the three
    passes of a step share their masks; with a fresh mask per pass it started near 11.5), DDP keeps the replicas equal,
    and the modules are left in train mode."""
    res = _run('steer', tmp_path)
    for r in res:
        assert abs(r['hist'][0] - 1.0) <= 1e-6, r['hist']
        assert r['moved'] > 0 and r['train_mode'], r
    assert res[0]['hist'][1:] != res[1]['hist'][1:]   # the ranks did see different batches
    assert res[0]['sha'] == res[1]['sha']             # gradients averaged: one adapter


WRAPPED = r'''
import gc, os, tempfile, torch, torch.distributed as dist
os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=os.environ.get('PORT', '29561'))
dist.init_process_group('gloo', rank=0, world_size=1)
import antipasto as ap
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from antipasto.testing import tiny_lm, snapshot, assert_unchanged
def refused(f, words):
    try: f(); return 'accepted'
    except RuntimeError as e: return 'refused' if words in str(e) else repr(e)
res, d = [], tempfile.mkdtemp()
m = tiny_lm(); ap.attach(m, ap.config_for('antipasto', r=8)); ap.save(m, os.path.join(d, 'a.st'))
ddp = DDP(m)
snap = snapshot(m)
res.append(refused(lambda: ap.attach(ddp, ap.config_for('lora', r=4), name='more'), 'attach under DistributedDataParallel'))
res.append(refused(lambda: ap.load(ddp, os.path.join(d, 'a.st'), name='default'), 'load under DistributedDataParallel'))
m2 = tiny_lm(); ap.attach(m2, ap.config_for('antipasto', r=8)); ap.attach(m2, ap.config_for('lora', r=4), name='b')
ddp2 = DDP(m2); snap2 = snapshot(m2)
res.append(refused(lambda: ap.detach(m2, name='b'), 'detach under DistributedDataParallel'))   # one of two: DDP would wait
assert_unchanged(m, snap); assert_unchanged(m2, snap2)
import warnings
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter('always'); ap.detach(m)    # every adapter: allowed (inference after training), told about the base
res.append('detached' if any('does not average theirs' in str(x.message) for x in w) else 'not warned')
del ddp2; gc.collect(); ap.detach(m2, name='b')      # the wrapper is gone: fine
f = tiny_lm(); ap.attach(f, ap.config_for('antipasto', r=8))
fully_shard(f, mesh=init_device_mesh('cpu', (1,)))
res.append(refused(lambda: ap.merge(f), 'FSDP2 (fully_shard) shards its weight'))
res.append(refused(lambda: ap.attach(f, ap.config_for('lora', r=4), name='more'), 'attach under FSDP2'))
g = tiny_lm(); fully_shard(g, mesh=init_device_mesh('cpu', (1,)))
res.append(refused(lambda: ap.attach(g, ap.config_for('lora', r=4)), 'attach under FSDP2'))
print(*res)
dist.destroy_process_group()
os._exit(0)
'''


def test_adapters_not_changed_under_a_wrapper():
    """attach, load and a partial detach under a live DDP, and attach or merge on a model FSDP2 has sharded: refused with the model
    unchanged. Accepted, DDP never averaged the new adapter's gradients (each rank trained its own, spread 6e-3 after
    three steps) and a detach left it waiting for gradients; FSDP2 failed deep in torch with mixed Tensor and DTensor."""
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'PORT': str(29961 + os.getpid() % 400)}
    p = subprocess.run([sys.executable, '-c', WRAPPED], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.split()[-7:] == ['refused'] * 3 + ['detached'] + ['refused'] * 3, p.stdout[-800:]


if __name__ == '__main__':
    worker(sys.argv[1], sys.argv[2])
    # Done, the group destroyed and the results on disk: leave without the interpreter's teardown, where a rank can still
    # abort with "terminate called without an active exception" (gloo's teardown race; tests/test_ddp.py saw it too).
    # A failure above raises before this line, so it still exits non-zero.
    sys.stdout.flush(); sys.stderr.flush(); os._exit(0)


CAST = r'''
import gc, os, torch, torch.distributed as dist
os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=os.environ.get('PORT', '29561'))
dist.init_process_group('gloo', rank=0, world_size=1)
import antipasto as ap
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from antipasto.testing import tiny_lm, tiny_batch, model_out
def refused(f):
    try: f(); return 'accepted'
    except RuntimeError as e: return 'refused' if 'cast under' in str(e) else repr(e)
res = []
m = tiny_lm(); ap.attach(m, ap.config_for('antipasto', r=8))
ddp = DDP(m)
res += [refused(lambda: ap.cast(m, 'bfloat16')), refused(lambda: ap.cast(torch.compile(ddp, backend='eager'), 'bfloat16'))]
res.append(str(ap.adapter_config(m).dtype))                      # unchanged by the refusals
del ddp; gc.collect()
res.append(refused(lambda: ap.cast(m, 'bfloat16')))              # the wrapper is gone: a cast is fine
f = tiny_lm(); ap.attach(f, ap.config_for('antipasto', r=8))
fully_shard(f, mesh=init_device_mesh('cpu', (1,)))
with torch.no_grad(): model_out(f, tiny_batch())
res.append(refused(lambda: ap.cast(f, 'bfloat16')))
print(*res)
dist.destroy_process_group()
os._exit(0)
'''


def test_cast_refused_under_a_wrapper_it_cannot_see():
    """`ap.cast` on the model inside a live DDP (or on a compiled DDP, as accelerate's prepare returns) and on a model
    under FSDP2's `fully_shard`: refused with the model unchanged. Accepted, DDP silently stopped averaging the cast
    adapter's gradients, and FSDP2 put float32 shards back under a bfloat16 config. After the DDP is dropped, accepted."""
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'PORT': str(29561 + os.getpid() % 400)}
    p = subprocess.run([sys.executable, '-c', CAST], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.split()[-5:] == ['refused', 'refused', 'float32', 'accepted', 'refused'], p.stdout[-500:]
