"""An adapted model under TRL's real `DPOTrainer` (trl 1.16), as the README's training-tools paragraph promises it.

A deep copy of the adapted model is an independent reference: training moves the policy's adapter and nothing else, the
reference keeps its tensors bitwise, and the first step sees a reference equal to the policy (loss ln 2). The trained
adapter saves and loads onto a fresh base to the same logits bitwise. With `ref_model=None`, TRL 1.16 builds the
reference from the model's `config._name_or_path`: the bare base, without the adapter, so the first loss is not ln 2;
and a model built from a config has no path, so that construction fails.
Everything is offline: the tiny Qwen3 of `antipasto.testing`, a word-level tokenizer built in memory, eight pairs."""
import copy, importlib.util, math, os
import pytest, torch
import antipasto as ap
from antipasto.testing import tiny_lm, tiny_batch, perturb_trainables, snapshot

HAVE_TRL = importlib.util.find_spec('trl') is not None
pytestmark = pytest.mark.skipif(not HAVE_TRL, reason="trl is not installed (it is in the dev extras, trl==1.16.0): "
                                                      "these tests run TRL's DPOTrainer")

WORDS = "the a cat dog sat ran on mat fast slow is good bad yes no why because it was".split()
PAIRS = [("the cat sat on", " the mat", " the dog"), ("is it good", " yes it is good", " no it is bad"),
         ("why the dog ran", " because it was fast", " because it was slow"), ("the dog is", " good", " bad")] * 2


def _tokenizer():
    "A word-level tokenizer with 22 ids (pad 0, eos 1, unk 2), inside tiny_lm's 128-token vocabulary; no download."
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(['<pad>', '<eos>', '<unk>'] + WORDS)}, unk_token='<unk>'))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token='<pad>', eos_token='<eos>', unk_token='<unk>')


def _trainer(model, ref_model, out_dir, steps):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer
    # bf16=False: DPOConfig defaults to bf16 mixed precision, which on this CPU would autocast the forwards to bfloat16;
    # the checks below compare float32 forwards. gradient_checkpointing stays at TRL's default (on), as a user gets it.
    args = DPOConfig(out_dir, max_steps=steps, per_device_train_batch_size=2, learning_rate=1e-2, report_to=[],
                     logging_steps=1, use_cpu=True, bf16=False, seed=0, data_seed=0, disable_tqdm=True, save_strategy='no',
                     lr_scheduler_type='constant')
    ds = Dataset.from_list([dict(prompt=p, chosen=c, rejected=r) for p, c, r in PAIRS])
    return DPOTrainer(model, ref_model=ref_model, args=args, train_dataset=ds, processing_class=_tokenizer())


def _adapted(model):
    "Attach `antipasto` (q/v, r=8) and move it off identity, so an adapted reference differs from the bare base."
    ap.attach(model, ap.config_for('antipasto', r=8))
    perturb_trainables(model, 0.3)
    return model


def test_dpo_with_deepcopy_reference(tmp_path):
    policy = _adapted(tiny_lm())
    ref = copy.deepcopy(policy)
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert len(trainable) == 4 and all('.ap_adapter.' in n for n in trainable), trainable   # q/v of the 2 blocks
    pol0, ref0 = snapshot(policy)['sd'], snapshot(ref)['sd']   # every parameter and buffer, the adapters' included
    tr = _trainer(policy, ref, str(tmp_path / 'dpo'), steps=3)
    assert tr.accelerator.unwrap_model(tr.ref_model) is ref
    tr.train()

    # the reference is independent: not one of its tensors (base or adapter) moved while the policy's adapter trained
    ref1 = snapshot(ref)['sd']
    assert ref1.keys() == ref0.keys()
    assert [k for k in ref0 if not torch.equal(ref0[k], ref1[k])] == []
    # the policy: every trainable adapter tensor changed, and nothing else did (base weights, frozen bases U, S, Vh)
    pol1 = snapshot(policy)['sd']
    assert pol1.keys() == pol0.keys()
    assert {k for k in pol0 if not torch.equal(pol0[k], pol1[k])} == trainable
    assert {n for n, p in policy.named_parameters() if p.requires_grad} == trainable

    # step 1 saw a reference equal to the policy: rewards 0 and loss -log(sigmoid(0)) = ln 2. A tolerance, not equality:
    # the two forwards (train mode, checkpointed, with grad / eval, no grad) may round differently; each log-prob sum is
    # ~15 in float32 (ulp ~1e-6) and beta = 0.1, so round-off stays below 1e-6, where a reference without the adapter
    # (the ref_model=None test below) is off by ~2e-3 in the loss and ~3e-3 in the rewards.
    first = tr.state.log_history[0]
    assert first['step'] == 1 and abs(first['loss'] - math.log(2)) <= 1e-6, first
    assert abs(first['rewards/chosen']) <= 1e-6 and abs(first['rewards/rejected']) <= 1e-6, first
    assert all(abs(h['rewards/margins']) > 0 for h in tr.state.log_history[1:3]), tr.state.log_history   # it did train

    # the trained adapter saves and loads onto a fresh base to the trained policy's logits, bitwise; coeff 0 is that base
    batch = tiny_batch()
    path = str(tmp_path / 'policy.safetensors')
    ap.save(policy, path)
    fresh = tiny_lm()
    with torch.no_grad():
        y_base = fresh(**batch).logits
        with ap.steer(policy.eval(), 0.0): assert torch.equal(policy(**batch).logits, y_base)
        y_trained = policy(**batch).logits
        ap.load(fresh, path)
        y_loaded = fresh(**batch).logits
    assert torch.equal(y_loaded, y_trained)
    assert not torch.equal(y_trained, y_base)


def test_dpo_without_reference_reloads_bare_base(tmp_path):
    import trl
    from transformers import Qwen3ForCausalLM
    from antipasto.testing import model_out
    base_dir = str(tmp_path / 'base')
    tiny_lm().save_pretrained(base_dir)
    policy = _adapted(Qwen3ForCausalLM.from_pretrained(base_dir, attn_implementation='eager').eval())
    batch = tiny_batch()
    with torch.no_grad():
        y_policy = model_out(policy, batch)
        with ap.steer(policy, 0.0): y_base = model_out(policy, batch)
    tr = _trainer(policy, None, str(tmp_path / 'dpo'), steps=1)
    ref = tr.accelerator.unwrap_model(tr.ref_model)
    # TRL loaded a new model from the path, without the adapter: its logits are the bare base's, bitwise, not the policy's
    assert isinstance(ref, Qwen3ForCausalLM) and ref is not policy, (trl.__version__, type(ref))
    with pytest.raises(RuntimeError, match="no antipasto adapter is attached"): ap.adapters(ref)
    with torch.no_grad(): y_ref = model_out(ref.eval(), batch)
    assert torch.equal(y_ref, y_base), trl.__version__
    assert (y_ref - y_policy).abs().max() > 1e-2   # the 0.3 perturbation moves the tiny LM's logits by ~0.08
    tr.train()
    first = tr.state.log_history[0]
    # so step 1 does not start at ln 2 (measured: 0.6948, 1.6e-3 away; the deep-copy test above is within 1e-6 of it)
    assert abs(first['loss'] - math.log(2)) > 1e-4, first

    # a model built from its config (no path: `_name_or_path` is '') cannot be reloaded: the construction fails
    # (trl 1.16 asks the hub for a repo named '', refused as an OSError), so such a model needs ref_model passed in
    built = _adapted(tiny_lm())
    assert built.config._name_or_path == ''
    with pytest.raises(OSError): _trainer(built, None, str(tmp_path / 'dpo2'), steps=1)
