r"""``sdssm-train``: trains and evaluates one run.

  sdssm-train --config=quickstart --workdir=runs/quickstart
  sdssm-train --config=sdssm:task=parity --workdir=runs/parity --config.train.steps=2000
  sdssm-train --config=zoo_a5 --workdir=runs/zoo_a5          # a zoo model's recipe
  # from a clone, the same: python -m experiments.main --config=... --workdir=...

``--config`` takes a named config (``sdssm-train --help`` lists them) or a config file
(``path/to/file.py[:arg]``); ``--config.<field>=<value>`` overrides any field. Re-running
the same command on the same workdir resumes from the last checkpoint.

Many processes / hosts (``jax.distributed``; docs/multihost.md): start the same command
once per process, adding ``--coordinator=HOST:PORT --num_processes=N --process_id=I``
(or set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID); process 0 listens
at HOST:PORT and writes the workdir, which every host must see at the same path.

Exit codes: 0 done; 2 invalid config or flags (nothing written); 3 the workdir holds a
run with a different config (nothing changed); 4 another process runs in the workdir;
5 no intact checkpoint; 128 + N after signal N (SIGTERM 143, SIGINT 130), with a
checkpoint of the step it stopped at.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from sdssm_jax import distributed, host_memory, launch, train

__all__ = ["main", "run"]

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A named config and its argument (e.g. quickstart, sdssm:task=d4; "
    "--help lists them) or a config file (path/to/file.py[:arg]).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and results.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator", None, "Many processes (jax.distributed): HOST:PORT of process 0, where it "
    "listens and the others connect ('auto': detect a SLURM/Open MPI/Kubernetes cluster). "
    "Default: $JAX_COORDINATOR_ADDRESS; unset: one process.")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "With --coordinator: how many processes take part "
    "(default: $JAX_NUM_PROCESSES).", lower_bound=1)
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "With --coordinator: this process's index, 0..num_processes-1; "
    "process 0 writes the workdir (default: $JAX_PROCESS_ID).", lower_bound=0)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO; -v 0 for them
  host_memory.keep_freed_memory()  # reuse freed XLA buffers (see host_memory)
  launch.start_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  result = launch.run_training(
      lambda: train.train_and_evaluate(_CONFIG.value, _WORKDIR.value))
  if not distributed.is_main():
    return
  s, acc = result["summary"], result["per_length"]
  shown = [n for n in ("1", "10", "20", "40", "41", "60", "100", "200", "300", "400", "500")
           if n in acc]
  print("length   " + " ".join(f"{n:>6}" for n in shown))
  print("accuracy " + " ".join(f"{acc[n]:6.3f}" for n in shown))
  print(f"{result['task']}: in-distribution {s.get('id_mean', float('nan')):.4f}, "
        f"OOD mean {s.get('ood_mean', float('nan')):.4f}, "
        f"OOD min {s.get('ood_min', float('nan')):.4f}; full table in "
        f"{_WORKDIR.value}/results.json")

def _help() -> str:
  return __doc__.split("Exit codes")[0].rstrip() + "\n\n" + launch.catalogue()


def run() -> None:
  """The ``sdssm-train`` console command."""
  app.run(main, flags_parser=launch.make_flags_parser(_help))


if __name__ == "__main__":
  run()
