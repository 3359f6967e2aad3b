"""The model zoo: loading, integrity, and re-evaluation of every shipped entry."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sdssm_jax import configs, evaluation, train, zoo

# One worker runs this module (README: --dist loadgroup): its module-scoped fixtures
# are expensive, and under plain --dist load each worker would build them again.
pytestmark = pytest.mark.xdist_group("zoo")


@pytest.fixture(scope="module")
def synthetic_zoo(tmp_path_factory):
  """A zoo root with one entry exported from a smoke run."""
  tmp = tmp_path_factory.mktemp("zoo")
  c = configs.get_smoke_config("task=cycle_navigation")
  c.eval.val_max_length = 20
  c.eval.best_metric = "val_ood_acc"
  train.train_and_evaluate(c, str(tmp / "run"))
  zoo.export(str(tmp / "run"), "tiny_cycle", root=str(tmp / "zoo"), long_length=300)
  return str(tmp / "zoo")


def test_export_load_and_card(synthetic_zoo):
  assert zoo.names(synthetic_zoo) == ["tiny_cycle"]
  model, params, card = zoo.load("tiny_cycle", synthetic_zoo)
  for key in ("task", "model_config", "param_shapes", "summary", "train_steps",
              "train_wall_time_s", "hardware", "sha256", "selection", "long_length"):
    assert key in card, key
  assert card["task"] == "cycle_navigation" and card["query_token"] is True
  assert "validation" in card["selection"]
  assert card["long_length"]["length"] == 300 and card["long_length"]["finite"]
  logits = model.apply({"params": params}, jnp.array([[2, 2, 1, card["query_symbol"]]]))
  assert logits.shape == (1, 4, 5)


def test_verify_reproduces_the_card_and_catches_a_regression(synthetic_zoo, tmp_path):
  assert zoo.verify(synthetic_zoo, verbose=False)
  res = zoo.evaluate("tiny_cycle", synthetic_zoo)
  assert res["summary"]["ood_mean"] == pytest.approx(
      zoo.card("tiny_cycle", synthetic_zoo)["summary"]["ood_mean"], abs=1e-9)
  # A card that promises more than the weights deliver fails verification.
  root = str(tmp_path / "zoo")
  shutil.copytree(synthetic_zoo, root)
  path = os.path.join(root, "tiny_cycle", "card.json")
  card = json.load(open(path))
  card["summary"]["ood_mean"] = min(1.0, card["summary"]["ood_mean"] + 0.01)
  json.dump(card, open(path, "w"))
  assert not zoo.verify(root, verbose=False)


def test_long_lengths_on_the_card_match_an_independent_count_and_verify_checks_them(
    synthetic_zoo, tmp_path):
  """The card's accuracies at 1,000, 2,000 and 10,000 equal a direct count on the same
  sample (logits at the last position of each prefix length, against the task's labels),
  and a card promising more at a long length fails verification."""
  model, params, card = zoo.load("tiny_cycle", synthetic_zoo)
  _, task, query = zoo.build_model(card)
  far = card["long_lengths"]
  assert far["num_sequences"] == zoo.LONG_NUM and set(far["accuracy"]) == {"1000", "2000",
                                                                           "10000"}
  toks = task.sample(jax.random.PRNGKey(zoo.LONG_SEED), zoo.LONG_NUM, 10_000)["tokens"]
  for L in (1000, 2000):
    logits = evaluation.prefix_logits(model, params, toks[:, :L], query)[:, -1]
    label = task.labels_at_every_prefix(toks[:, :L])[:, -1]
    assert far["accuracy"][str(L)] == pytest.approx(
        float(np.mean(np.argmax(np.asarray(logits), -1) == np.asarray(label))), abs=1e-9)
  first = far["first_below_99"]
  assert first is None or 1 <= first <= 10_000
  root = str(tmp_path / "zoo")
  shutil.copytree(synthetic_zoo, root)
  path = os.path.join(root, "tiny_cycle", "card.json")
  card["long_lengths"]["accuracy"]["2000"] += 2 * zoo.LONG_TOLERANCE
  json.dump(card, open(path, "w"))
  assert zoo.verify(root, verbose=False, long=False)  # the test protocol alone passes
  assert not zoo.verify(root, verbose=False)
  assert "| 1,000 | 2,000 | 10,000 | first < 99% |" in zoo.markdown_table(root)


def test_corrupted_weights_fail_with_sha256_error(synthetic_zoo, tmp_path):
  root = str(tmp_path / "zoo")
  shutil.copytree(synthetic_zoo, root)
  path = os.path.join(root, "tiny_cycle", "params.msgpack")
  blob = bytearray(open(path, "rb").read())
  blob[-3] ^= 0xFF
  open(path, "wb").write(bytes(blob))
  with pytest.raises(ValueError, match="sha256 mismatch"):
    zoo.load("tiny_cycle", root)


def test_unknown_name_lists_choices(synthetic_zoo):
  with pytest.raises(ValueError, match="valid choices: tiny_cycle"):
    zoo.load("nope", synthetic_zoo)


def test_time_to_target_table_sums_and_flags(tmp_path):
  """experiments/time_to_target.py: a finished run's row reads its results.json, the
  total is the sum of the training times, and a run below 99.9% is flagged."""
  import json as _json
  from experiments import time_to_target as ttt
  rows = []
  for name, secs, mean in (("a", 100.7, 1.0), ("b", 50.0, 0.9985)):
    wd = tmp_path / name
    wd.mkdir()
    (wd / "results.json").write_text(_json.dumps({
        "summary": {"ood_mean": mean, "ood_min": mean - 0.01}, "train_wall_time_s": secs,
        "checkpoint_step": 10, "hardware": "cpu"}))
    rows.append(ttt.row(name, str(wd), {"checkpoint_step": 10, "sha256": "x",
                                        "summary": {"ood_mean": 1.0, "ood_min": 1.0}}))
  assert [r["reached"] for r in rows] == [True, False]
  assert rows[0]["same_weights"] is None  # no checkpoint to compare: unknown, not "yes"
  text = ttt.markdown(rows)
  assert "151 s = 2.5 min" in text and "| NO |" in text and "all reached >= 99.9%: no" in text
  with pytest.raises(SystemExit):
    ttt.main(["--models", "no_such_model", "--root", str(tmp_path)])


def _overflowing(synthetic_zoo, tmp_path):
  """A copy of the synthetic zoo whose entry has all-ones transitions (after the column
  Lp normalisation each step multiplies a state's sum by N**(1 - 1/p) > 1) and no state
  rescaling, so its states overflow float32 long before 10,000 steps; its card states
  what the weights do on the test protocol and nothing at the long lengths."""
  root = str(tmp_path / "zoo")
  shutil.copytree(synthetic_zoo, root)
  _, params, card = zoo.load("tiny_cycle", root)
  params = dict(params, A=np.ones_like(params["A"]))
  card["model_config"]["rescale"] = False
  path = os.path.join(root, "tiny_cycle")
  with open(os.path.join(path, zoo.WEIGHTS), "wb") as f:
    f.write(zoo.weights_bytes(params))
  card["sha256"] = zoo._sha256(os.path.join(path, zoo.WEIGHTS))
  card["summary"] = zoo.evaluate_params(card, params)["summary"]
  card["long_lengths"]["accuracy"] = {k: 0.0 for k in card["long_lengths"]["accuracy"]}
  json.dump(card, open(os.path.join(path, zoo.CARD), "w"))
  return root, params, card


def test_long_lengths_and_verify_flag_non_finite_logits(synthetic_zoo, tmp_path, capsys):
  root, params, card = _overflowing(synthetic_zoo, tmp_path)
  model, task, query = zoo.build_model(card)
  far = zoo.long_lengths(model, params, task, query, num=8, chunk=8)
  assert not far["finite"]
  # The same weights with the exact power-of-two rescaling stay finite.
  assert zoo.long_lengths(model.clone(rescale=True), params, task, query, num=8,
                          chunk=8)["finite"]
  assert zoo.verify(root, long=False)  # the test protocol alone passes
  capsys.readouterr()
  assert not zoo.verify(root)
  assert "NON-FINITE logits" in capsys.readouterr().out
