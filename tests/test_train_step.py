"""The data-parallel train step (train_step.py): one all-reduce per step, outside every
while loop; the same losses on 1, 2 and 4 devices; one length per batch (official).

Multi-device checks run in subprocesses with forced host devices. They compile with
the suite's fast-compile XLA CPU flags (conftest.FAST_COMPILE, inherited through
``XLA_FLAGS``: no fusion emitters, LLVM -O0), which change codegen only, not the HLO-level placement of collectives (SPMD partitioning, loop
passes); the 1/2/4-device processes run concurrently.
"""

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from sdssm_jax import configs, data, models, tasks, train, train_step
import reference_automata

# One worker runs this module (README: --dist loadgroup): its module-scoped fixtures
# are expensive, and under plain --dist load each worker would build them again.
pytestmark = pytest.mark.xdist_group("train_step")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ------------------------------------------------------------------- helpers (also used
# by the subprocess scripts, which import this module)

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute",
               "all-to-all")
_HEADER = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->\s*.*\{\s*$")
_CALLEE = re.compile(
    r"\b(?:calls|to_apply|body|condition|true_computation|false_computation)=%?([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_COLLECTIVE_OP = re.compile(r"=\s.*?\s(" + "|".join(COLLECTIVES) + r")(?:-start|-done)?\(")


def hlo_collectives(text: str) -> dict:
  """Collectives in compiled HLO text: ``{"total": n, "in_while": {computation: [ops]}}``,
  where ``in_while`` covers the ``body=`` computations of every ``while`` and,
  transitively, every computation they call."""
  comps, current = {}, None
  for line in text.splitlines():
    if current is None:
      m = _HEADER.match(line)
      if m:
        current = m.group(1)
        comps[current] = []
    elif line.strip() == "}":
      current = None
    else:
      comps[current].append(line)
  ops = {name: [m.group(1) for l in lines for m in [_COLLECTIVE_OP.search(l)] if m]
         for name, lines in comps.items()}
  bodies = [b for lines in comps.values() for l in lines if " while(" in l
            for b in re.findall(r"\bbody=%?([\w.\-]+)", l)]
  assert bodies or "while(" not in text, "while ops found but no body= parsed"
  seen, stack = set(), list(bodies)
  while stack:
    name = stack.pop()
    if name in seen or name not in comps:
      continue
    seen.add(name)
    for line in comps[name]:
      stack.extend(_CALLEE.findall(line))
      for group in _BRANCHES.findall(line):
        stack.extend(x.strip().lstrip("%") for x in group.split(","))
  return {"total": sum(map(len, ops.values())), "while_bodies": len(bodies),
          "in_while": {name: ops[name] for name in seen if ops[name]}}


def official_config(length_sampling="per_batch"):
  """parity at the official setting: N=64, K=8, B=128, lengths 1..40, query token."""
  c = configs.get_config("task=parity,model=sdssm")
  assert (c.model_config.state_size, c.model_config.num_matrices, c.train.batch_size,
          c.train.train_length, c.query_token) == (64, 8, 128, 40, True)
  c.train.length_sampling = length_sampling
  return c


def small_config(name, length_sampling="per_sequence"):
  c = configs.get_config(f"task=parity,model={name}")
  c.train.batch_size, c.train.train_length = 8, 8
  c.train.length_sampling = length_sampling
  return c


class StaticSDSSM(models.SDSSM):
  """SD-SSM without ``last_state``: the train step's per-bucket path (query inside)."""
  dynamic_length = False


def _static(model):
  import dataclasses
  return StaticSDSSM(**{f.name: getattr(model, f.name) for f in dataclasses.fields(model)
                        if f.name not in ("parent", "name")})


def setup(c, mesh=None, make_step=None, static=False):
  """(step, state) for config ``c`` on ``mesh`` (all local devices by default);
  ``static``: SD-SSM through the per-bucket path."""
  model, task, q = train.make_model(c)
  if static:
    model = _static(model)
  opt, _ = train.make_optimizer(c.optimizer, c.train.steps)
  mesh = mesh or train.make_mesh()
  state = train.init_state(model, opt, jax.random.PRNGKey(0), mesh)
  step = (make_step or train_step.make_train_step)(model, task, opt, c, q, mesh)
  return step, state


def abstract_setup(c, make_step=None):
  """(step, state) with the state as sharded ShapeDtypeStructs: enough to lower and
  compile the step, without running the model's init."""
  model, task, q = train.make_model(c)
  opt, _ = train.make_optimizer(c.optimizer, c.train.steps)
  mesh = train.make_mesh()
  replicated = NamedSharding(mesh, P())
  shapes = jax.eval_shape(lambda k: train.init_state(model, opt, k), jax.random.PRNGKey(0))
  state = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), shapes)
  return (make_step or train_step.make_train_step)(model, task, opt, c, q, mesh), state


def legacy_make_train_step(model, task, optimizer, config, query_symbol, mesh):
  """A frozen copy of the step train.py had before train_step.py: jit with a sharding
  constraint on the batch, XLA's SPMD partitioner choosing where to reduce."""
  tc = config.train
  replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))

  def step(state, data_key):
    key = jax.random.fold_in(data_key, state["step"])
    batch = data.training_batch(task, key, tc.batch_size, tc.min_length, tc.train_length,
                                query_symbol)
    batch = jax.lax.with_sharding_constraint(batch, sharded)

    def loss_fn(params):
      logits = model.apply({"params": params}, batch["inputs"])
      logits = jnp.take_along_axis(logits, batch["read_pos"][:, None, None], axis=1)[:, 0]
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
      return loss, jnp.mean(jnp.argmax(logits, -1) == batch["label"])

    (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    new_state = {"step": state["step"] + 1,
                 "params": optax.apply_updates(state["params"], updates),
                 "opt_state": opt_state}
    return new_state, {"loss": loss, "accuracy": acc}

  return jax.jit(step, in_shardings=(replicated, replicated),
                 out_shardings=(replicated, replicated), donate_argnums=0)


def _launch(script, devices):
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]),
         "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} "  # conftest's FAST_COMPILE
                      f"--xla_force_host_platform_device_count={devices}"}
  return subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _result(proc, timeout=300):
  out, err = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, err[-4000:]
  return json.loads(out.strip().splitlines()[-1])


# ------------------------------------------------------------ collectives in the HLO

_HLO_SCRIPT = """
import json, jax
import test_train_step as T
from sdssm_jax import models
key = jax.random.PRNGKey(1)
out = {}
def check(name, c, make_step=None, length=None):
  step, state = T.abstract_setup(c, make_step=make_step)
  lowered = step.lower(state, key) if length is None else step.lower(state, key, length)
  out[name] = T.hlo_collectives(lowered.compile().as_text())
assert jax.device_count() == 2
for name in models.names():
  check(name, T.small_config(name))
check("sdssm-official-per_sequence", T.official_config("per_sequence"))
check("sdssm-official-per_batch-40", T.official_config("per_batch"))
c = T.official_config("per_batch")  # the training-scan regularisers: their own loop;
c.train.state_noise, c.train.growth_penalty, c.train.growth_sides = 0.1, 1.0, "both"
c.optimizer.ema_decay = 0.999  # and the parameters' moving average in the optimizer state
c.train.label_smoothing = 0.1  # and smoothed targets in the loss
check("sdssm-official-per_batch-regularised-ema-smoothed", c)
check("legacy-sdssm-official", T.official_config("per_sequence"), T.legacy_make_train_step)
print(json.dumps(out))
"""

_NEW_CASES = models.names() + ["sdssm-official-per_sequence", "sdssm-official-per_batch-40",
                               "sdssm-official-per_batch-regularised-ema-smoothed"]


@pytest.fixture(scope="module")
def launched():
  """All subprocesses of this module, started at once (their compiles dominate)."""
  procs = {"hlo": _launch(_HLO_SCRIPT, 2), **{n: _launch(_LOSSES_SCRIPT, n) for n in (1, 2, 4)}}
  yield procs
  for proc in procs.values():
    if proc.poll() is None:
      proc.kill()
      proc.wait()


@pytest.fixture(scope="module")
def hlo_report(launched):
  return _result(launched["hlo"])


@pytest.mark.parametrize("case", _NEW_CASES)
def test_one_all_reduce_and_no_collective_inside_while_bodies(hlo_report, case):
  r = hlo_report[case]
  assert r["while_bodies"] > 0  # the model's scans (and the samplers) are loops
  assert r["in_while"] == {}, f"collectives inside while bodies: {r['in_while']}"
  # Gradients and metrics are reduced by ONE (tuple) all-reduce: not vacuous.
  assert r["total"] == 1, r


def test_legacy_step_has_an_all_reduce_inside_the_backward_scan(hlo_report):
  # The previous jit + with_sharding_constraint step: XLA reduces the [3, 64, 64]
  # transition-table gradient inside the backward scan's while body, once per time step.
  # The new step's check above would fail on it.
  r = hlo_report["legacy-sdssm-official"]
  assert r["in_while"] and all(ops == ["all-reduce"] for ops in r["in_while"].values()), r


def test_hlo_parser_finds_a_collective_in_a_nested_while_body():
  text = """HloModule m

%add (a: f32[], b: f32[]) -> f32[] {
  ROOT %s = f32[] add(f32[] %a, f32[] %b)
}

%inner (p: f32[4]) -> f32[4] {
  %p = f32[4] parameter(0)
  ROOT %ar = f32[4]{0} all-reduce(%p), channel_id=1, to_apply=%add
}

%body (t: (s32[], f32[4])) -> (s32[], f32[4]) {
  %x = f32[4]{0} fusion(%t), kind=kLoop, calls=%inner
  ROOT %r = (s32[], f32[4]) tuple(%i, %x)
}

%cond (t: (s32[], f32[4])) -> pred[] {
  ROOT %c = pred[] constant(true)
}

ENTRY %main (x: f32[4]) -> f32[4] {
  %w = (s32[], f32[4]) while(%t0), condition=%cond, body=%body
  ROOT %g = f32[4]{0} all-gather(%x), dimensions={0}
}
"""
  r = hlo_collectives(text)
  assert r == {"total": 2, "while_bodies": 1, "in_while": {"inner": ["all-reduce"]}}


# ------------------------------------------------- the same losses on 1, 2, 4 devices

_LOSSES_SCRIPT = """
import json, jax, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
import test_train_step as T
from sdssm_jax import train
n = jax.device_count()
key = jax.random.PRNGKey(1)
out = {"devices": n}
steps = {}
for mode in ("per_batch", "per_sequence"):
  step, state = T.setup(T.official_config(mode))
  steps[mode] = step
  losses = []
  for _ in range(5):
    state, m = step(state, key)
    losses.append(float(m["loss"]))
  out[mode] = losses
  out[mode + "_finite"] = float(m["finite"])
if n == 1:
  # 100 per-batch steps: the programs compiled stay at the buckets; the device used the
  # host's length; a state the step did not return (as after a resume) continues exactly.
  step, state = steps["per_batch"], T.setup(T.official_config("per_batch"))[1]
  lengths = []
  for s in range(100):
    state, m = step(state, key)
    lengths.append(float(m["length"]))
    if s == 29:
      at_30 = [np.asarray(x) for x in jax.tree_util.tree_leaves(state)]
  out["num_compiled"] = step.num_compiled()
  out["buckets"] = list(step.buckets)
  out["lengths_ok"] = lengths == [float(step.length(key, s)) for s in range(100)]
  state = T.setup(T.official_config("per_batch"))[1]
  for s in range(30):
    if s == 15:  # as train_and_evaluate restores a checkpoint
      host = jax.tree_util.tree_map(np.asarray, state)
      state = jax.device_put(host, NamedSharding(train.make_mesh(), P()))
    state, m = step(state, key)
  out["resume_bit_exact"] = all(np.array_equal(a, np.asarray(b)) for a, b in
                                zip(at_30, jax.tree_util.tree_leaves(state)))
  out["num_compiled_after_resume"] = step.num_compiled()
  # The one-program path (last_state, n steps, query by model.step) against the
  # per-bucket programs (padded to the bucket, query inside the scan): same losses.
  static, state = T.setup(T.official_config("per_batch"), static=True)
  out["static"] = []
  for _ in range(5):
    state, m = static(state, key)
    out["static"].append(float(m["loss"]))
  out["static_buckets"] = list(static.buckets)
  # per_sequence: the same losses as the previous step.
  legacy, state = T.setup(T.official_config("per_sequence"),
                          make_step=T.legacy_make_train_step)
  out["legacy"] = []
  for _ in range(5):
    state, m = legacy(state, key)
    out["legacy"].append(float(m["loss"]))
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def device_runs(launched):
  return {n: _result(launched[n]) for n in (1, 2, 4)}


@pytest.mark.parametrize("mode", ["per_batch", "per_sequence"])
def test_same_losses_on_one_two_and_four_devices(device_runs, mode):
  assert [device_runs[n]["devices"] for n in (1, 2, 4)] == [1, 2, 4]
  one = device_runs[1][mode]
  for n in (2, 4):
    np.testing.assert_allclose(device_runs[n][mode], one, rtol=1e-5)
    assert device_runs[n][mode + "_finite"] == 1.0
  assert len(set(one)) == len(one)  # the losses move


def test_per_sequence_matches_the_previous_step(device_runs):
  np.testing.assert_allclose(device_runs[1]["per_sequence"], device_runs[1]["legacy"],
                             rtol=1e-6)


def test_per_batch_compiles_one_program_and_resumes_exactly(device_runs):
  r = device_runs[1]
  assert r["buckets"] == [40]  # SD-SSM: one program, the loop runs n steps
  assert r["num_compiled"] == r["num_compiled_after_resume"] == 1  # 100 steps, ~40 lengths
  assert r["lengths_ok"] and r["resume_bit_exact"]


def test_one_program_path_matches_the_per_bucket_programs(device_runs):
  r = device_runs[1]
  assert r["static_buckets"] == [8, 16, 24, 32, 40]
  np.testing.assert_allclose(r["per_batch"], r["static"], rtol=1e-5)


# ------------------------------------------------------------- per-batch lengths (host)


def _host_step(c):
  model, task, q = train.make_model(c)
  opt, _ = train.make_optimizer(c.optimizer, c.train.steps)
  return train_step.make_train_step(model, task, opt, c, q, train.make_mesh())


def test_per_batch_lengths_are_uniform_and_a_pure_function_of_key_and_step():
  c = official_config("per_batch")
  step = _host_step(c)
  key = jax.random.PRNGKey(1)
  lengths = np.array([step.length(key, s) for s in range(4000)])
  counts = np.bincount(lengths, minlength=41)
  assert counts[0] == 0 and lengths.max() == 40
  assert counts[1:].min() > 60 and counts[1:].max() < 140  # 100 expected, sd ~10
  # Reproducible: another step object, another key object with the same value, random
  # access order, and the documented formula all agree.
  other = _host_step(c)
  for s in (3999, 0, 1234, 77, 5000, 3):
    expected = int(data.batch_length(jax.random.fold_in(key, s), 1, 40))
    assert step.length(key, s) == other.length(jax.random.PRNGKey(1), s) == expected
  assert [step.length(jax.random.PRNGKey(2), s) for s in range(20)] != list(lengths[:20])
  c.train.min_length, c.train.train_length = 5, 12
  narrow = _host_step(c)
  got = {narrow.length(key, s) for s in range(300)}
  assert got == set(range(5, 13)) and narrow.buckets == (12,)  # SD-SSM: one program
  model, task, q = train.make_model(c)
  opt, _ = train.make_optimizer(c.optimizer, c.train.steps)
  assert train_step.make_train_step(_static(model), task, opt, c, q,
                                    train.make_mesh()).buckets == (8, 12)


def test_length_buckets():
  assert data.length_buckets(1, 40) == (8, 16, 24, 32, 40)
  assert data.length_buckets(1, 8) == (8,)
  assert data.length_buckets(20, 40) == (24, 32, 40)
  assert data.length_buckets(1, 500) == (100, 200, 300, 400, 500)
  assert [data.bucket_for((8, 16), n) for n in (1, 8, 9, 16)] == [8, 8, 16, 16]
  with pytest.raises(ValueError, match="largest bucket"):
    data.bucket_for((8, 16), 17)


@pytest.mark.parametrize("task_name,query", [("parity", True), ("modular_arithmetic", True),
                                             ("d4", False)])
def test_per_batch_batch_one_length_labels_and_padding(task_name, query):
  task = tasks.get(task_name)
  q = task.vocab_size if query else None
  ref = reference_automata.labeller(task_name)
  fn = jax.jit(lambda k, n: data.per_batch_training_batch(task, k, 64, n, 24, q))
  for seed, n in ((0, 17), (1, 24), (2, 18), (3, 1)):
    batch = {k: np.asarray(v) for k, v in fn(jax.random.PRNGKey(seed), np.int32(n)).items()}
    eff = int(task.effective_length(n))
    assert np.all(batch["length"] == eff)
    assert np.all(batch["read_pos"] == (eff if query else eff - 1))
    for inp, label in zip(batch["inputs"], batch["label"]):
      assert label == ref(inp[:eff].tolist())
      if query:
        assert inp[eff] == q and np.all(inp[:eff] < task.vocab_size)
      assert np.all(inp[eff + (1 if query else 0):] == 0)  # zero padding after the read


def test_invalid_length_sampling_names_the_choices():
  c = official_config("per_batch")
  configs.validate(c)
  c.train.length_sampling = "per_step"
  with pytest.raises(ValueError, match="train.length_sampling.*per_sequence, per_batch"):
    configs.validate(c)


def test_flat_finiteness_and_norm_match_a_per_leaf_reference():
  """The step's finiteness flag and gradient norm reduce flattened leaves (one kernel
  per dtype); they must equal a plain per-leaf computation, complex leaves included."""
  from sdssm_jax import train_step as ts
  rng = np.random.default_rng(0)
  tree = {"a": rng.normal(size=(3, 4)).astype(np.float32),
          "b": {"c": rng.normal(size=(5,)).astype(np.float32),
                "z": (rng.normal(size=(2, 2)) + 1j * rng.normal(size=(2, 2))).astype(np.complex64)},
          "d": np.float32(2.5)}
  leaves = [np.asarray(x, np.complex128) for x in jax.tree_util.tree_leaves(tree)]
  want = np.sqrt(sum(np.sum(np.abs(x) ** 2) for x in leaves))
  np.testing.assert_allclose(float(jax.jit(ts._global_norm)(tree)), want, rtol=1e-6)
  assert bool(jax.jit(ts._all_finite)(tree))
  for path, bad in ((("a",), np.inf), (("b", "c"), np.nan), (("b", "z"), complex(0, np.inf))):
    broken = jax.tree_util.tree_map(np.copy, tree)
    leaf = broken[path[0]] if len(path) == 1 else broken[path[0]][path[1]]
    leaf.flat[1] = bad
    assert not bool(jax.jit(ts._all_finite)(broken)), path
