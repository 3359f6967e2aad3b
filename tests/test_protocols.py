"""The chomsky and walker protocols as named configs: their values, the lr schedule, the
weight-decay mask, the validation/held-out samples, early stopping and resumability."""

import json
import math
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_automata as ref  # noqa: E402

from sdssm_jax import configs, evaluation, experiment_configs, launch, runs, train  # noqa: E402


def _named(name, arg=None):
  return launch.load_get_config(experiment_configs.path(name))(arg)


# chomsky ----------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["parity", "a5", "c2xc4"])
def test_chomsky_config_is_the_sdssm_protocol(task):
  c = _named("chomsky", f"task={task},model=sdssm")
  configs.validate(c)
  assert (c.train.min_length, c.train.train_length) == (1, 40)
  assert c.train.length_sampling == "per_batch"  # one length per batch
  assert c.train.batch_size == 128 and c.train.steps == 1_000_000
  assert (c.eval.min_length, c.eval.max_length, c.eval.num_per_length) == (1, 500, 512)
  assert c.eval.seed == 2024 and c.optimizer.schedule == "constant"
  assert c.optimizer.weight_decay == 0.0 and c.train.early_stop_accuracy == 0.0
  assert c.optimizer.lr == configs.OFFICIAL[task]["lr"]
  # It is the project's default config, field for field.
  assert c.to_dict() == configs.get_config(f"task={task},model=sdssm").to_dict()


def test_chomsky_score_is_the_mean_over_41_to_500():
  lengths = np.arange(1, 501)
  acc = np.where(lengths <= 40, 1.0, 0.0)
  acc[lengths == 41] = 0.46  # the first OOD length counts, the last ID one does not
  s = evaluation.summarize(lengths, acc, 40)
  assert s["ood_mean"] == pytest.approx(0.46 / 460, abs=1e-12)
  assert s["id_mean"] == 1.0


# walker: values ---------------------------------------------------------------------------


def test_walker_config_has_the_protocol_values():
  c = _named("walker", "task=parity,model=sdssm")
  configs.validate(c)
  assert (c.task, c.model) == ("parity", "sdssm")
  assert (c.train.min_length, c.train.train_length) == (3, 40)
  assert c.train.length_sampling == "per_sequence" and c.query_token is False
  assert c.train.batch_size == 256 and c.train.steps == 100_000
  assert c.train.eval_every == 5000 and c.train.early_stop_accuracy == 0.9995
  assert (c.eval.val_min_length, c.eval.val_max_length, c.eval.val_num) == (40, 256, 8192)
  assert (c.eval.test_num, c.eval.test_seed) == (8192, 4242)
  assert c.eval.test_seed not in (c.eval.val_seed, c.eval.val_seed + 1, c.eval.seed)
  assert c.eval.best_metric == "val_ood_acc" and c.eval.checkpoint == "best"
  o = c.optimizer
  assert (o.lr, o.weight_decay, o.decay_mask, o.schedule) == (
      2e-3, 1e-2, "no_embeddings", "warmup_cosine")
  assert o.warmup_fraction == 0.1 and o.lr * o.end_lr_factor == pytest.approx(1e-5, rel=1e-12)


def _reference_lr(t, peak=2e-3, end=1e-5, total=100_000, warmup=10_000):
  if t < warmup:
    return peak * t / warmup
  return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))


def test_walker_lr_schedule():
  c = _named("walker")
  _, schedule = train.make_optimizer(c.optimizer, c.train.steps)
  for t in (0, 1, 5_000, 9_999, 10_000, 10_001, 55_000, 99_999, 100_000):
    assert float(schedule(t)) == pytest.approx(_reference_lr(t), rel=1e-5, abs=1e-12), t
  assert float(schedule(0)) == 0.0
  assert float(schedule(10_000)) == pytest.approx(2e-3, rel=1e-6)
  assert float(schedule(100_000)) == pytest.approx(1e-5, rel=1e-4)
  # The warm-up follows train.steps (10% of it), not a fixed count.
  _, short = train.make_optimizer(c.optimizer, 1000)
  assert float(short(50)) == pytest.approx(2e-3 * 50 / 100, rel=1e-5)
  assert float(short(100)) == pytest.approx(2e-3, rel=1e-6)


def test_walker_model_argument_chooses_the_model(monkeypatch):
  c = _named("walker", "task=even_pairs,model=diag_complex")
  configs.validate(c)
  assert (c.task, c.model) == ("even_pairs", "diag_complex")
  assert c.model_config.to_dict() == configs.get_config(
      "task=even_pairs,model=diag_complex").model_config.to_dict()  # its own fields
  # A stack-like model (fields num_blocks, width) gets the protocol's 2 blocks of width
  # 128; the real stack need not exist for this.
  fake = ml_collections.ConfigDict({"num_blocks": 4, "width": 32, "mixer": "x"})
  monkeypatch.setattr(configs.models, "default_config",
                      lambda name: fake.copy_and_resolve_references())
  s = _named("walker", "task=parity,model=stack")
  assert s.model == "stack"
  assert s.model_config.to_dict() == {"num_blocks": 2, "width": 128, "mixer": "x"}
  with pytest.raises(ValueError, match="valid keys: task, model"):
    _named("walker", "steps=3")


class _Tiny(nn.Module):
  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(5, 4)(tokens)
    x = x + self.param("token_embedding", nn.initializers.normal(1.0), (4,))
    x = x * self.param("w_in", nn.initializers.normal(1.0), (4,))
    return nn.Dense(3)(x)


def test_weight_decay_mask_excludes_embeddings():
  params = _Tiny().init(jax.random.PRNGKey(0), jnp.zeros((1, 3), jnp.int32))["params"]
  assert set(params) == {"Embed_0", "token_embedding", "w_in", "Dense_0"}
  walker = _named("walker").optimizer
  opt = walker.copy_and_resolve_references()
  opt.schedule = "constant"  # the mask under the walker's decay settings, at lr 2e-3
  zeros = jax.tree_util.tree_map(jnp.zeros_like, params)

  def first_update(opt):
    optimizer, _ = train.make_optimizer(opt, 100)
    return jax.jit(lambda p: optimizer.update(zeros, optimizer.init(p), p)[0])(params)
  # Zero gradients: Adam's part is 0, so the update is the decoupled decay alone,
  # -lr * wd * p on the decayed parameters and 0 on the others.
  updates = first_update(opt)
  flat_u = jax.tree_util.tree_flatten_with_path(updates)[0]
  flat_p = dict(jax.tree_util.tree_flatten_with_path(params)[0])
  seen = set()
  for path, u in flat_u:
    name = "/".join(k.key for k in path)
    p = np.asarray(flat_p[path], np.float64)
    if name in ("Embed_0/embedding", "token_embedding"):
      np.testing.assert_array_equal(np.asarray(u), 0.0)
    else:
      np.testing.assert_allclose(np.asarray(u), -2e-3 * 1e-2 * p, rtol=1e-5, atol=1e-12)
      assert np.abs(p).max() > 0 or name.endswith("bias")
    seen.add(name)
  assert seen == {"Embed_0/embedding", "token_embedding", "w_in", "Dense_0/kernel",
                  "Dense_0/bias"}
  # "all" decays the embeddings too (every run before the field existed).
  opt.decay_mask = "all"
  updates = first_update(opt)
  np.testing.assert_allclose(np.asarray(updates["Embed_0"]["embedding"]),
                             -2e-5 * np.asarray(params["Embed_0"]["embedding"]), rtol=1e-5)


@pytest.mark.parametrize("change,match", [
    (lambda c: setattr(c.optimizer, "decay_mask", "embeddings"),
     "valid choices: all, no_embeddings"),
    (lambda c: setattr(c.optimizer, "warmup_fraction", 1.0), "warmup_fraction"),
    (lambda c: (setattr(c.eval, "val_max_length", 0), setattr(c.eval, "best_metric", "id_acc")),
     "early_stop_accuracy > 0"),
    (lambda c: setattr(c.train, "early_stop_accuracy", 1.5), "in \\[0, 1\\]"),
    (lambda c: setattr(c.eval, "test_seed", c.eval.val_seed + 1), "test_seed"),
    (lambda c: setattr(c.eval, "val_min_length", 300), "val_min_length"),
    (lambda c: setattr(c.eval, "val_num", -1), "val_num"),
])
def test_invalid_protocol_fields_are_refused(change, match):
  c = _named("walker")
  change(c)
  with pytest.raises(ValueError, match=match):
    configs.validate(c)


# walker: samples and their accuracy -------------------------------------------------------


@pytest.mark.parametrize("task_name,query", [("parity", True), ("modular_arithmetic", False)])
def test_length_sample_and_its_accuracy_against_a_per_sequence_loop(task_name, query):
  c = _named("walker", f"task={task_name},model=diag_real")
  c.query_token = query
  c.model_config.state_size = 8
  model, task, q = train.make_model(c)
  params = jax.jit(model.init)(jax.random.PRNGKey(1), jnp.zeros((1, 2), jnp.int32))["params"]
  num, lo, hi = 50, 5, 20
  sample = train.length_sample(task, 3, num, lo, hi, q)
  label_fn = getattr(ref, task_name)
  lengths = sample["length"]
  assert lengths.shape == (num,) and lengths.min() >= lo - 1 and lengths.max() <= hi
  assert len(np.unique(lengths)) >= 5  # lengths vary per sequence
  tokens = sample["inputs"]
  # Independent: labels from the reference labeller, inputs rebuilt by hand (the task
  # tokens, then the query after each sequence, padding after), one forward pass.
  width = hi + 1
  rebuilt = np.zeros((num, width), np.int32)
  read = np.zeros(num, np.int64)
  for i, n in enumerate(lengths):
    seq = tokens[i, :n].tolist()
    assert label_fn(seq) is not None and sample["label"][i] == label_fn(seq)
    rebuilt[i, :n] = seq
    if query:
      rebuilt[i, n] = q
    read[i] = n if query else n - 1
  logits = np.asarray(jax.jit(model.apply)({"params": params}, jnp.asarray(rebuilt)))
  pred = np.array([int(np.argmax(logits[i, read[i]])) for i in range(num)])
  labels = np.array([label_fn(tokens[i, :n].tolist()) for i, n in enumerate(lengths)])
  hits = int((pred == labels).sum())
  # batch 16 does not divide 50: the padded last chunk must not count.
  assert train.sample_accuracy(model, params, sample, 16) == hits / num
  assert train.sample_accuracy(model, params, {**sample, "label": pred}, 16) == 1.0
  wrong = (pred + 1) % task.num_classes
  assert train.sample_accuracy(model, params, {**sample, "label": wrong}, 16) == 0.0


# walker: a tiny run -----------------------------------------------------------------------


def _tiny_walker(threshold):
  c = _named("walker", "task=parity,model=diag_real")
  c.model_config.state_size = 8
  c.train.steps, c.train.batch_size, c.train.train_length = 30, 16, 8
  c.train.eval_every = c.train.checkpoint_every = c.train.log_every = 10
  c.train.progress_bar, c.train.progress_every = False, 0
  c.train.early_stop_accuracy = threshold
  c.eval.val_min_length, c.eval.val_max_length, c.eval.max_length = 8, 24, 24
  c.eval.val_num = c.eval.test_num = 64
  c.eval.num_per_length = c.eval.id_num_per_length = 16
  return c


@pytest.mark.slow
def test_early_stop_records_max_validation_and_heldout_test_then_resumes(tmp_path):
  workdir = str(tmp_path / "run")
  c = _tiny_walker(threshold=0.01)  # met at the first validation (step 10)
  r = train.train_and_evaluate(c, workdir)
  assert r["early_stop"] == {"threshold": 0.01, "stopped_early": True, "step": 10}
  assert r["train_steps"] == 10 and r["checkpoint_step"] == 10
  assert sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints"))) == [10]
  records = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert max(rec["step"] for rec in records) == 10
  vals = [[rec["step"], rec["val_ood_acc"]] for rec in records if "val_ood_acc" in rec]
  assert len(vals) == 1 and vals[0][1] >= 0.01
  v = r["validation"]
  assert v["history"] == vals and v["max_accuracy"] == vals[0][1] and v["max_step"] == 10
  assert (v["min_length"], v["max_length"], v["num"], v["sampling"]) == (
      8, 24, 64, "per_sequence")
  with open(os.path.join(workdir, train.EARLY_STOP_FILE)) as f:
    assert json.load(f)["step"] == 10
  # The held-out accuracy, recomputed sequence by sequence with the reference labels.
  h = r["heldout_test"]
  assert (h["num"], h["min_length"], h["max_length"], h["seed"], h["checkpoint_step"]) == (
      64, 8, 24, 4242, 10)
  model, task, _ = train.make_model(c)
  params, step = train.load_params(workdir, "best")
  assert step == 10
  sample = train.length_sample(task, 4242, 64, 8, 24, None)
  logits = np.asarray(jax.jit(model.apply)({"params": params}, jnp.asarray(sample["inputs"])))
  hits = sum(int(np.argmax(logits[i, n - 1])) == ref.parity(sample["inputs"][i, :n].tolist())
             for i, n in enumerate(sample["length"]))
  assert h["accuracy"] == hits / 64
  val_sample = train.length_sample(task, c.eval.val_seed + 1, 64, 8, 24, None)
  assert not np.array_equal(val_sample["inputs"], sample["inputs"])  # its own seed
  # Rerunning the command only evaluates: nothing is trained past the stop.
  again = train.train_and_evaluate(c, workdir)
  assert again["early_stop"] == r["early_stop"] and again["train_steps"] == 10
  assert again["heldout_test"] == h and again["validation"] == v
  assert max(runs.iter_steps(os.path.join(workdir, "metrics.jsonl"))) == 10
  with open(os.path.join(workdir, runs.IDENTITY_FILE)) as f:
    assert json.load(f)["history"][-1]["from_step"] == 10


# resumability -----------------------------------------------------------------------------


def test_old_identities_still_resume_and_new_values_are_refused(tmp_path):
  c = configs.get_smoke_config("task=parity")
  new = ("optimizer.warmup_fraction", "optimizer.decay_mask", "train.early_stop_accuracy")
  assert all(k in runs.ADDED_FIELDS for k in new)
  assert (runs.ADDED_FIELDS["optimizer.warmup_fraction"], runs.ADDED_FIELDS[
      "optimizer.decay_mask"], runs.ADDED_FIELDS["train.early_stop_accuracy"]) == (
          0.0, "all", 0.0)
  fields = runs.identity_fields(c)
  assert all(k in fields for k in new)  # they shape the trajectory: in the identity
  assert not any(k in fields for k in ("eval.val_num", "eval.test_num", "eval.val_min_length"))
  old = {k: v for k, v in fields.items() if k not in new}  # a run from before the fields
  with open(tmp_path / runs.IDENTITY_FILE, "w") as f:
    json.dump({"fields": old, "fingerprint": runs.fingerprint(old), "history": []}, f)
  assert runs.check_identity(str(tmp_path), c) is not None
  # The default config's new values are the ones old runs implicitly had.
  for k in new:
    section, name = k.split(".")
    assert c[section][name] == runs.ADDED_FIELDS[k]
  # Evaluation-side fields never block a resume.
  c.eval.val_num, c.eval.test_num, c.eval.val_min_length = 100, 100, 3
  assert runs.check_identity(str(tmp_path), c) is not None
  c.optimizer.decay_mask = "no_embeddings"
  c.train.early_stop_accuracy = 0.9
  with pytest.raises(runs.RunConflictError) as info:
    runs.check_identity(str(tmp_path), c)
  assert [d[0] for d in info.value.differences] == ["optimizer.decay_mask",
                                                     "train.early_stop_accuracy"]
