"""The first block's per-token transitions of a trained SD-SSM stack, and their spectra.

  python -m experiments.stack_transitions runs/arena_b_slice/parity-stack_sdssm-seed0 ...

In a stack the first block's mixer sees a function of the current token only (the
embedding, after the block's LayerNorm when the stack is pre-norm), so an SD-SSM mixer
there has exactly one transition ``Â_v = column_normalize(sum_k softmax(W_s x_v + c_s)_k
A_k, p)`` per token ``v``: an automaton's transition in the one-layer sense. For each
workdir this prints, per token, the moduli of Â_v's three largest eigenvalues, its
largest singular value and the selection weights. A state that must survive t tokens
(parity's sign, even_pairs' first symbol) needs an eigenvalue of modulus ~1; with
spectral radius r < 1 the past fades like r^t.

The model is rebuilt from the workdir's ``config.json`` and its "best" checkpoint; the
embedding, the norm and the selection are the model's own modules (``Module.bind``).
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sdssm_jax import train
from sdssm_jax.models.sdssm import select_transitions


def block0_transitions(model, params):
  """``(Â [V, N, N], selection [V, K])`` of the first block of an SD-SSM ``Stack``."""
  if getattr(model, "mixer", None) != "sdssm":
    raise ValueError(f"Needs a stack over the sdssm mixer, got {type(model).__name__} "
                     f"with mixer {getattr(model, 'mixer', None)!r}.")
  bound = model.bind({"params": params})
  x = bound.embed(jnp.arange(model.vocab_size))
  if bound.norm_placement == "pre":
    x = bound.mixer_norms[0](x)
  mixer = bound.mixers[0]
  logits = mixer.selector(x)
  return (np.asarray(select_transitions(logits, mixer.A, mixer.p_norm)),
          np.asarray(jax.nn.softmax(logits)))


def workdir_transitions(workdir: str):
  """``(Â, selection, step)`` of a run's best checkpoint (:func:`block0_transitions`)."""
  with open(os.path.join(workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  model, _, _ = train.make_model(config)
  params, step = train.load_params(workdir, "best")
  return block0_transitions(model, params) + (step,)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("workdirs", nargs="+")
  args = parser.parse_args()
  for workdir in args.workdirs:
    a, selection, step = workdir_transitions(workdir)
    print(f"{workdir} (best checkpoint, step {step})")
    for v in range(a.shape[0]):
      moduli = np.sort(np.abs(np.linalg.eigvals(a[v].astype(np.float64))))[::-1]
      sigma1 = np.linalg.norm(a[v].astype(np.float64), 2)
      print(f"  token {v}: |eigenvalues| {' '.join(f'{m:.3f}' for m in moduli[:3])}, "
            f"sigma_1 {sigma1:.3f}, selection {' '.join(f'{w:.2f}' for w in selection[v])}")


if __name__ == "__main__":
  main()
