"""A user's first day: console commands, named configs and zoo recipes, progress lines in a
pipe, the README's example output, and the installed wheel outside the clone."""

import glob
import json
import os
import re
import subprocess
import sys
import sysconfig
import venv

import pytest

from sdssm_jax import configs, experiment_configs, launch, runs, zoo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, cwd, env=None, timeout=300):
  return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                        env=env or {**os.environ, "PYTHONPATH": ROOT})


@pytest.mark.parametrize("name", experiment_configs.names())
def test_every_named_config_loads_and_validates(name):
  get_config = launch.load_get_config(experiment_configs.path(name))
  arg = {"sdssm": "task=parity", "smoke": "task=parity", "zoo_fast": "model=parity"}
  c = get_config(arg[name]) if name in arg else get_config()
  configs.validate(c)
  assert experiment_configs.describe(name)
  doc = open(experiment_configs.path(name)).read().split('"""')[1]
  assert f"--config={name}" in doc  # the docstring gives the command


@pytest.mark.parametrize("name", zoo.names())
def test_every_zoo_card_has_its_one_command_recipe(name):
  card = zoo.card(name)
  recipe = card["recipe"]
  assert recipe["config"] == f"zoo_{name}"
  assert recipe["command"] == f"sdssm-train --config=zoo_{name} --workdir=runs/zoo_{name}"
  c = launch.load_get_config(experiment_configs.path(recipe["config"]))()
  configs.validate(c)
  # The recipe trains what the card's run trained (identity: every trajectory field), for
  # as long, and selects its checkpoint the same way.
  stored, new = runs.identity_fields(card["training_config"]), runs.identity_fields(c)
  assert runs._differences(stored, new) == []
  assert c.train.steps == card["train_steps"]
  for field in ("best_metric", "val_max_length", "val_seed", "seed", "num_per_length"):
    assert c.eval[field] == card["training_config"]["eval"][field], field
  assert c.train.eval_every == card["training_config"]["train"]["eval_every"]
  doc = open(experiment_configs.path(recipe["config"])).read()
  assert f"OOD mean {100 * card['summary']['ood_mean']:.2f}%" in doc  # the expected result


@pytest.mark.parametrize("name", zoo.names())
def test_zoo_fast_is_the_recipe_stopped_at_the_target(name):
  recipe = launch.load_get_config(experiment_configs.path(f"zoo_{name}"))()
  fast = launch.load_get_config(experiment_configs.path("zoo_fast"))(f"model={name}")
  configs.validate(fast)
  # The same parameter trajectory (only evaluation fields differ, and where it stops: a
  # run's identity includes its stopping rule, which leaves the steps before it alone) ...
  assert runs._differences(runs.identity_fields(recipe), runs.identity_fields(fast)) == [
      ("train.early_stop_accuracy", 0.0, 0.9995)]
  assert fast.train.steps == recipe.train.steps
  assert fast.train.eval_every == recipe.train.eval_every
  # ... stopped at the first validation on the test's lengths at the paper's bar.
  assert fast.train.early_stop_accuracy > 0.999  # a margin over the test's bar
  assert fast.eval.rescale_states  # scored as the zoo scores
  assert (fast.eval.best_metric, fast.eval.val_max_length) == ("val_ood_acc", 500)
  assert fast.eval.val_seed == recipe.eval.val_seed != fast.eval.seed
  # As many validation strings per length as the test has: errors that are a few
  # drifting strings slip through 128 (modular_arithmetic at p = 2: 99.98% -> 99.78%).
  assert fast.eval.id_num_per_length == fast.eval.num_per_length == 512


def test_zoo_fast_names_the_valid_models():
  get_config = launch.load_get_config(experiment_configs.path("zoo_fast"))
  for arg in ("", "model=a6", "model=a5,task=d4"):
    with pytest.raises(ValueError, match="model=<zoo name>, one of: a5, c2xc30, c2xc4"):
      get_config(arg)


def test_unknown_named_config_lists_the_valid_ones():
  with pytest.raises(ValueError, match="valid named configs: chomsky, quickstart, sdssm, smoke"):
    launch.resolve_config_spec("quikstart")
  assert launch.resolve_config_spec("a/b.py:task=d4") == "a/b.py:task=d4"
  assert launch.resolve_config_spec("sdssm:task=d4").endswith(
      os.path.join("experiment_configs", "sdssm.py") + ":task=d4")


@pytest.mark.parametrize("module", ["sdssm_jax.cli.train", "sdssm_jax.cli.sweep"])
def test_help_exits_0_and_lists_tasks_models_and_configs(module, tmp_path):
  proc = _run([sys.executable, "-m", module, "--help"], cwd=str(tmp_path))
  assert proc.returncode == 0, proc.stderr
  for text in ("quickstart", "zoo_a5", "tasks: parity", "models: sdssm", "configs.py",
               "--config"):
    assert text in proc.stdout, text


def test_piped_run_prints_progress_lines_and_the_readme_format(tmp_path):
  """A named config from a directory outside the clone, output piped: progress lines on
  stderr, and stdout in the format of the README's example output."""
  proc = _run([sys.executable, "-m", "sdssm_jax.cli.train", "--config=smoke:task=parity",
               f"--workdir={tmp_path / 'run'}"], cwd=str(tmp_path))
  assert proc.returncode == 0, proc.stderr
  progress = re.findall(r"^sdssm/parity step (\d+)/30: loss [\d.]+ accuracy [\d.]+ "
                        r"[\d.]+ steps/s ETA \S+", proc.stderr, re.M)
  assert progress == ["10", "20", "30"]
  readme = open(os.path.join(ROOT, "README.md")).read()
  block = readme.split("## Install and try it")[1].split("```\n", 3)[2].split("```")[0]
  shape = lambda line: re.sub(r"\d+\.\d+|\d+", "#", line.split(";")[0]).split()[:3]
  printed = proc.stdout.strip().splitlines()
  example = block.strip().splitlines()
  assert len(printed) == len(example) == 3
  for got, want in zip(printed, example):
    assert shape(got) == shape(want), (got, want)


@pytest.mark.slow
def test_installed_wheel_works_outside_the_clone(tmp_path):
  """Build the wheel, install it into a fresh venv, and from a directory outside the clone
  run the console commands: --help, a tiny training run, and zoo verify."""
  dist = tmp_path / "dist"
  proc = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
               "-w", str(dist), ROOT], cwd=str(tmp_path), timeout=600)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  (wheel,) = glob.glob(str(dist / "sdssm_jax-*.whl"))
  env_dir = tmp_path / "venv"
  venv.EnvBuilder(system_site_packages=False, with_pip=False).create(env_dir)
  py, bindir = str(env_dir / "bin" / "python"), env_dir / "bin"
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  proc = _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps",
               "--no-index", wheel], cwd=str(tmp_path), env=env, timeout=600)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  # The dependencies (jax, flax, ...) come from this interpreter's site-packages, put on
  # the venv's path by a plain path line: that does not run the .pth files there (so the
  # clone's editable install stays out), and the package itself comes only from the wheel.
  site = _run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
              cwd=str(tmp_path)).stdout.strip()
  base = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
  with open(os.path.join(site, "base_site_packages.pth"), "w") as f:
    f.write("\n".join(sorted(base)) + "\n")
  outside = tmp_path / "elsewhere"
  outside.mkdir()
  where = _run([py, "-c", "import sdssm_jax, importlib.util as u; print(sdssm_jax.__file__);"
                " print(u.find_spec('experiments'))"], cwd=str(outside), env=env)
  assert where.returncode == 0, where.stderr
  file_line, experiments_line = where.stdout.strip().splitlines()
  assert file_line.startswith(str(env_dir)), file_line  # the installed copy, not the clone
  assert experiments_line == "None"  # no top-level `experiments` package is installed
  for cmd in ("sdssm-train", "sdssm-sweep", "sdssm-zoo", "sdssm-bench"):
    assert (bindir / cmd).exists(), cmd
  proc = _run([str(bindir / "sdssm-train"), "--help"], cwd=str(outside), env=env)
  assert proc.returncode == 0 and "quickstart" in proc.stdout, proc.stderr
  proc = _run([str(bindir / "sdssm-train"), "--config=smoke:task=parity",
               "--workdir=run", "--config.train.steps=20"], cwd=str(outside), env=env)
  assert proc.returncode == 0, proc.stderr
  assert json.load(open(outside / "run" / "results.json"))["train_steps"] == 20
  proc = _run([str(bindir / "sdssm-zoo"), "verify", "--short"], cwd=str(outside), env=env,
              timeout=600)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert proc.stdout.count("ok ") == len(zoo.names())
