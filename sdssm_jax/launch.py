"""What the command-line launchers share: named configs, config-flag checks, ``--help``
and clean exits.

``make_flags_parser`` returns an absl ``flags_parser`` that resolves a named config
(``--config=quickstart`` -> the file inside the installed package), prints the launcher's
help and exits 0 on ``--help``, and checks every ``--config.<field>`` override against
the config before absl parses them (ml-collections would raise a bare
``AttributeError`` with a 55-line traceback); ``run_training`` turns the run-integrity
errors of :mod:`sdssm_jax.runs` into one message and a documented exit code.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Callable, List, Optional, Sequence

from absl import flags

from sdssm_jax import configs, runs

__all__ = ["config_overrides", "check_config_overrides", "make_flags_parser",
           "parse_flags_checked", "resolve_config_spec", "run_training", "load_get_config",
           "catalogue", "start_distributed"]


def load_get_config(path: str) -> Callable:
  """The ``get_config`` function of a config file."""
  spec = importlib.util.spec_from_file_location("_launch_config", path)
  if spec is None or spec.loader is None:
    raise ValueError(f"Config file {path!r} cannot be loaded.")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config


def resolve_config_spec(spec: str) -> str:
  """``"quickstart"`` / ``"sdssm:task=d4"`` -> ``"<package>/experiment_configs/sdssm.py:task=d4"``;
  a spec whose file part ends in ``.py`` is returned unchanged."""
  from sdssm_jax import experiment_configs
  name, sep, arg = spec.partition(":")
  if name.endswith(".py"):
    return spec
  return experiment_configs.path(name) + sep + arg


def _resolve_argv(argv: Sequence[str], flag: str = "config") -> List[str]:
  out = list(argv)
  for i, arg in enumerate(out):
    if arg.startswith(f"--{flag}="):
      out[i] = f"--{flag}=" + resolve_config_spec(arg.split("=", 1)[1])
    elif arg == f"--{flag}" and i + 1 < len(out):
      out[i + 1] = resolve_config_spec(out[i + 1])
  return out


def catalogue() -> str:
  """Named configs, tasks and models, and where the config fields are documented."""
  from sdssm_jax import configs as configs_lib, experiment_configs, models, tasks
  lines = ["named configs (--config=<name>[:task=...,model=...]):"]
  lines += [f"  {n:24s} {experiment_configs.describe(n)}" for n in experiment_configs.names()]
  lines.append(f"tasks: {', '.join(tasks.names())}, c2xc<N>, d<N>, a5_k<N>, s5_k<N>")
  lines.append(f"models: {', '.join(models.names())}")
  lines.append(f"config fields, one comment each: {configs_lib.__file__} "
               "(override with --config.<field>=<value>)")
  return "\n".join(lines)


def config_overrides(argv: Sequence[str], flag: str = "config") -> tuple:
  """``(config_spec or None, [dotted fields overridden])`` from raw ``argv``."""
  spec, fields = None, []
  args = list(argv[1:])
  for i, arg in enumerate(args):
    if arg in (f"--{flag}", f"-{flag}") and i + 1 < len(args):
      spec = args[i + 1]
    elif arg.startswith((f"--{flag}=", f"-{flag}=")):
      spec = arg.split("=", 1)[1]
    elif arg.startswith((f"--{flag}.", f"-{flag}.")):
      fields.append(arg.split(".", 1)[1].split("=", 1)[0])
  return spec, fields


def check_config_overrides(argv: Sequence[str], flag: str = "config") -> None:
  """Raises ``ValueError`` naming the field and the valid ones if an override names a
  field the config does not have. A config file that fails to load is left to absl."""
  spec, fields = config_overrides(argv, flag)
  if spec is None or not fields:
    return
  path, _, arg = spec.partition(":")
  try:
    config = load_get_config(path)(arg or None)
  except Exception:  # pylint: disable=broad-except  # absl reports it with its own message
    return
  for field in fields:
    configs.check_field(config, field)


def make_flags_parser(help_text: Optional[Callable[[], str]] = None,
                      config_flag: Optional[str] = "config") -> Callable[[List[str]], List[str]]:
  """An absl ``flags_parser`` (``app.run(main, flags_parser=...)``).

  Args:
    help_text: what ``--help`` / ``-h`` prints (before the flags); it then exits 0.
    config_flag: the ml-collections config flag to resolve names for and check, or None.
  Returns:
    The parser: errors go to stderr in one line, exit code 2 (nothing written).
  """
  def parse(argv: List[str]) -> List[str]:
    if any(a in ("--help", "-h", "--helpfull", "-help") for a in argv[1:]):
      if help_text is not None:
        print(help_text())
      print("\nflags:")
      print(flags.FLAGS.main_module_help() or flags.FLAGS.module_help(sys.argv[0]))
      sys.exit(0)
    try:
      if config_flag:
        argv = _resolve_argv(argv, config_flag)
        check_config_overrides(argv, config_flag)
      return flags.FLAGS(argv)
    except (ValueError, flags.Error) as e:
      print(f"{os.path.basename(argv[0])}: error: {e}", file=sys.stderr)
      sys.exit(runs.EXIT_CONFIG)
  return parse


parse_flags_checked = make_flags_parser()


def start_distributed(coordinator: Optional[str], num_processes: Optional[int],
                      process_id: Optional[int]) -> bool:
  """``--coordinator/--num_processes/--process_id`` (or their environment variables):
  starts ``jax.distributed`` (:func:`sdssm_jax.distributed.initialize_from_env`); a flag
  error exits with :data:`runs.EXIT_CONFIG`. Returns whether the run is distributed."""
  from sdssm_jax import distributed
  try:
    return distributed.initialize_from_env(coordinator, num_processes, process_id)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(runs.EXIT_CONFIG)


def run_training(fn: Callable[[], dict]) -> Optional[dict]:
  """Calls ``fn`` (which runs ``train.train_and_evaluate``); the errors a user can act on
  are printed as one message and end the process with their exit code (see
  :mod:`sdssm_jax.runs`), without a traceback."""
  try:
    return fn()
  except runs.Interrupted as e:
    print(str(e), file=sys.stderr, flush=True)
    sys.exit(e.exit_code)
  except runs.RunConflictError as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(runs.EXIT_CONFLICT)
  except runs.WorkdirBusyError as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(runs.EXIT_BUSY)
  except runs.CheckpointError as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(runs.EXIT_CHECKPOINT)
  except ValueError as e:  # invalid config, raised before anything is written
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(runs.EXIT_CONFIG)
