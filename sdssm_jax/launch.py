"""What the command-line launchers share: config-flag checks and clean exits.

``parse_flags_checked`` checks every ``--config.<field>`` override against the config
before absl parses them (ml-collections would raise a bare ``AttributeError`` with a
55-line traceback); ``run_training`` turns the run-integrity errors of
:mod:`sdssm_jax.runs` into one message and a documented exit code.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Callable, List, Optional, Sequence

from absl import flags

from sdssm_jax import configs, runs

__all__ = ["config_overrides", "check_config_overrides", "parse_flags_checked", "run_training",
           "load_get_config"]


def load_get_config(path: str) -> Callable:
  """The ``get_config`` function of a config file."""
  spec = importlib.util.spec_from_file_location("_launch_config", path)
  if spec is None or spec.loader is None:
    raise ValueError(f"Config file {path!r} cannot be loaded.")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config


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


def parse_flags_checked(argv: List[str]) -> List[str]:
  """An absl ``flags_parser`` (``app.run(main, flags_parser=...)``): checks the config
  overrides first, then parses; errors go to stderr in one line with exit code 2."""
  try:
    check_config_overrides(argv)
    return flags.FLAGS(argv)
  except (ValueError, flags.Error) as e:
    print(f"{argv[0]}: error: {e}", file=sys.stderr)
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
