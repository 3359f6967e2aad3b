"""Where each zoo model stops emulating its automaton, and its learned transitions.

  python -m experiments.long_length_analysis --out docs/long_lengths

For every zoo entry: the accuracy at every length 1..10,000 (256 strings, one prefix pass,
``zoo.long_lengths``' sample), the first length below 99%, and, from the per-symbol
transitions Â_v (N x N) on the states the model visits (the span of its normalised
states over 64 strings of length 500, ``rank`` directions holding 99.99% of their
energy):

* ``sv_ratio``: the mean over symbols of σ2/σ1 of Â_v restricted to that span (how far a
  single step is from rank one there);
* ``leak``: the mean over symbols of ||(I - U Uᵀ) Â_v U|| / ||Â_v U|| (how much one step
  pushes a visited state out of the visited span);
* ``word_gap``: for 32 random words of length 64, the mean of log(σ1/σ2) of the product
  of their transitions on the span: a large gap means long products collapse onto one
  direction, erasing the automaton's state;
* ``log2_norm``: the mean over 16 strings of log2 ||x_t|| (the raw state, rescaling
  exponents included) at t = 40 and t = 10,000: whether the transitions grow the
  states the model visits (the inputs B u_t then fade against the automaton's part) or
  shrink them (the state is then held up by the inputs, and the automaton's part must
  not fade against them).

``--previous ROOT`` adds the entries of an earlier zoo (a checkpoints directory, e.g.
from git: ``git archive d6780cc sdssm_jax/zoo/checkpoints | tar -x -C /tmp/prev``) whose
weights differ from the shipped ones, as ``<name> (previous)``: the same task and
architecture with a shorter reach, so the two rows say what changed in the transitions.
``--extra "NAME (LABEL)=ROOT"`` (repeatable) adds entry NAME of another checkpoints
directory as its own row.

Writes ``<out>.json``, ``<out>_table.md`` (the table) and ``<out>.png`` (accuracy vs length).
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

from sdssm_jax import evaluation, zoo

MAX_LENGTH = 10_000


def _curve(model, params, task, query, num=256, seed=zoo.LONG_SEED, chunk=64):
  toks = task.sample(jax.random.PRNGKey(seed), num, MAX_LENGTH)["tokens"]
  score = jax.jit(lambda p, t: (evaluation.prefix_scores(model, p, task, t, query)[0],
                                jnp.sum(task.labels_at_every_prefix(t) >= 0, axis=0)))
  correct = np.zeros(toks.shape[1])
  valid = np.zeros(toks.shape[1])
  for s in range(0, num, chunk):
    c, v = score(params, toks[s:s + chunk])
    correct += np.asarray(c)
    valid += np.asarray(v)
  lengths = np.nonzero(valid)[0] + 1
  return lengths, correct[lengths - 1] / valid[lengths - 1]


def _log2_norms(model, params, task, num=16, seed=zoo.LONG_SEED, at=(40, MAX_LENGTH)):
  toks = task.sample(jax.random.PRNGKey(seed), num, MAX_LENGTH)["tokens"]
  states = model.apply({"params": params}, toks, method="states")
  m, k = states if isinstance(states, tuple) else (states, jnp.zeros(states.shape[:-1]))
  logn = np.log2(np.linalg.norm(np.asarray(m, np.float64), axis=-1)) + np.asarray(k)
  return [float(logn[:, min(t, logn.shape[1]) - 1].mean()) for t in at]


def _spectra(model, params, task, query=None, rank_energy=0.9999, seed=3):
  table = np.asarray(model.apply({"params": params}, method="symbol_transitions"),
                     np.float64)[:task.vocab_size]
  toks = task.sample(jax.random.PRNGKey(seed), 64, 500)["tokens"]
  states = model.apply({"params": params}, toks, method="states")
  h = np.asarray(states[0] if isinstance(states, tuple) else states, np.float64)
  h = h.reshape(-1, h.shape[-1])
  h /= np.linalg.norm(h, axis=-1, keepdims=True) + 1e-30
  _, s, vt = np.linalg.svd(h, full_matrices=False)
  energy = np.cumsum(s ** 2) / np.sum(s ** 2)
  rank = int(np.searchsorted(energy, rank_energy) + 1)
  U = vt[:rank].T                                               # [N, r]
  ratios, leaks = [], []
  for a in table:
    au = a @ U
    sv = np.linalg.svd(U.T @ au, compute_uv=False)
    ratios.append(sv[1] / sv[0] if len(sv) > 1 else 0.0)
    leaks.append(np.linalg.norm(au - U @ (U.T @ au)) / np.linalg.norm(au))
  rng = np.random.default_rng(0)
  gaps = []
  for _ in range(32):
    p = np.eye(rank)
    for v in rng.integers(0, len(table), 64):
      p = (U.T @ table[v] @ U) @ p
      p /= np.linalg.norm(p)
    sv = np.linalg.svd(p, compute_uv=False)
    gaps.append(np.log(sv[0] / max(sv[1], 1e-300)) if len(sv) > 1 else np.inf)
  return {"rank": rank, "sv_ratio": float(np.mean(ratios)), "leak": float(np.mean(leaks)),
          "word_gap": float(np.mean(gaps)), **_lyapunov(model, params, task, table),
          **_relation_error(model, params, task, query)}


def _relation_error(model, params, task, query=None, num=64, prefix=200, repeats=(1, 10),
                    seed=6):
  """How far one relation word moves the state: for every symbol v that permutes the
  reachable automaton states, with order k (v^k is the identity of the automaton), the
  distance between the model's LayerNorm-normalised state after a random prefix u and
  after u v^(k m), over the mean distance between the states of prefixes in different
  automaton states (1: as far as a wrong state). An exact emulation gives 0 at every m;
  a systematic error per step grows with m. With a ``query`` token, the states compared
  are those after it (what the readout sees). ``None`` if no symbol is a permutation (e.g.
  modular_arithmetic, whose symbols are not invertible)."""
  from sdssm_jax import automata
  try:
    dfa = automata.DFA.from_task(task)
  except (TypeError, ValueError, AttributeError):
    return {"relation_error": None}
  keep = dfa.reachable_states()
  table = np.asarray(dfa.transitions)
  orders = {}
  for v in range(task.vocab_size):
    perm = table[keep, v]
    if sorted(perm.tolist()) != keep.tolist():
      continue
    cur, k = perm.copy(), 1
    while not np.array_equal(cur, keep) and k <= len(keep):
      cur, k = table[cur, v], k + 1
    if np.array_equal(cur, keep):
      orders[v] = k
  if not orders:
    return {"relation_error": None}

  def normed(tokens):
    x = model.apply({"params": params}, jnp.asarray(tokens), method="states")
    if query is not None:
      x = model.apply({"params": params}, x, query, method="step")
    x = np.asarray(x[0] if isinstance(x, tuple) else x, np.float64)[:, -1]
    x = x - x.mean(-1, keepdims=True)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)

  u = np.asarray(task.sample(jax.random.PRNGKey(seed), num, prefix)["tokens"])
  base = normed(u)
  q = np.array([dfa.run(row.tolist()) for row in u])
  diff = q[:, None] != q[None, :]
  scale = np.linalg.norm(base[:, None] - base[None, :], axis=-1)[diff].mean()
  out = {}
  for m in repeats:
    errs = [np.linalg.norm(normed(np.concatenate([u, np.full((num, k * m), v)], 1)) - base,
                           axis=-1).mean() / scale for v, k in orders.items()]
    out[str(m)] = float(max(errs))
  return {"relation_error": out}


def _lyapunov(model, params, task, table, num=32, length=2000, skip=100, k=4, seed=5):
  """The top ``k`` Lyapunov exponents (per step) of the model's normalised state dynamics
  y -> (Â_v y + b_v / s) / ||.|| along random strings (float64): how fast a small error in
  the direction of the state (its scale does not matter: LayerNorm) grows (> 0) or dies
  out (< 0) on the states the model visits. Perturbations are carried by the tangent map
  J = (I - y' y'ᵀ) Â_v / ||Â_v y + b_v / s|| and re-orthonormalised every step; the
  exponents average log |diag R| over steps ``skip..length`` and over ``num`` strings."""
  b = np.asarray(params["B"], np.float64)[:task.vocab_size]      # [V, N]
  toks = np.asarray(task.sample(jax.random.PRNGKey(seed), num, length)["tokens"])
  n = table.shape[-1]
  rng = np.random.default_rng(seed)
  y = np.zeros((num, n))
  log_s = np.full(num, -np.inf)                                  # log ||x||, x_0 = 0
  q = np.linalg.qr(rng.standard_normal((num, n, k)))[0]          # [num, N, k]
  sums = np.zeros((num, k))
  for t in range(toks.shape[1]):
    a, bv = table[toks[:, t]], b[toks[:, t]]                     # [num, N, N], [num, N]
    inv_s = np.where(np.isfinite(log_s), np.exp(-np.where(np.isfinite(log_s), log_s, 0.0)),
                     1.0)                                        # x_1 = b_v (y = 0)
    x = np.einsum("bij,bj->bi", a, y) + bv * inv_s[:, None]
    norm = np.linalg.norm(x, axis=-1)
    y_new = x / norm[:, None]
    if np.isfinite(log_s).all():
      d = np.einsum("bij,bjk->bik", a, q) / norm[:, None, None]
      d -= y_new[:, :, None] * np.einsum("bi,bik->bk", y_new, d)[:, None, :]
      q, r = np.linalg.qr(d)
      if t >= skip:
        sums += np.log(np.abs(np.diagonal(r, axis1=1, axis2=2)) + 1e-300)
    y, log_s = y_new, np.where(np.isfinite(log_s), log_s + np.log(norm), np.log(norm))
  lyap = np.sort(sums.mean(0) / (toks.shape[1] - skip))[::-1]
  return {"lyapunov": [float(v) for v in lyap]}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="docs/long_lengths")
  parser.add_argument("--previous", default="", help="an earlier zoo's checkpoints directory")
  parser.add_argument("--extra", action="append", default=[],
                      help="'NAME (LABEL)=ROOT': entry NAME of the checkpoints directory ROOT "
                           "as a row labelled 'NAME (LABEL)' (repeatable)")
  args = parser.parse_args()
  rows, curves = {}, {}
  entries = [(name, None, name) for name in zoo.names()]
  if args.previous:
    entries += [(f"{name} (previous)", args.previous, name) for name in zoo.names(args.previous)
                if name in zoo.names()
                and zoo.card(name, args.previous)["sha256"] != zoo.card(name)["sha256"]]
  for extra in args.extra:
    label, root = extra.rsplit("=", 1)
    entries.append((label, root, label.split(" ")[0]))
  for label, root, name in sorted(entries, key=lambda e: (e[2], e[1] is not None)):
    model, params, card = zoo.load(name, root)
    _, task, query = zoo.build_model(card)
    lengths, acc = _curve(model, params, task, query)
    below = lengths[acc < 0.99]
    rows[label] = {"first_below_99": int(below[0]) if len(below) else None,
                  **{str(L): float(acc[np.searchsorted(lengths, L)]) if L <= lengths[-1]
                     else float(acc[-1]) for L in (500, 1000, 2000, 5000, 10000)},
                  **_spectra(model, params, task, query),
                  "log2_norm": _log2_norms(model, params, task)}
    curves[label] = (lengths, acc)
    print(label, rows[label], flush=True)
  with open(args.out + ".json", "w") as f:
    json.dump(rows, f, indent=1)
  lines = ["| model | 500 | 1,000 | 2,000 | 5,000 | 10,000 | first < 99% | span rank | "
           "σ2/σ1 on span | leak | log σ1/σ2 of 64-step words | λ1, λ2 per 1,000 steps | "
           "relation error, 1 and 10 relations | log2 ||x|| at 40 and 10,000 |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for name, r in rows.items():
    cells = " | ".join(f"{100 * r[str(L)]:.1f}%" for L in (500, 1000, 2000, 5000, 10000))
    lines.append(f"| `{name}` | {cells} | {r['first_below_99'] or 'none'} | {r['rank']} | "
                 f"{r['sv_ratio']:.3f} | {r['leak']:.2e} | {r['word_gap']:.2f} | "
                 f"{1000 * r['lyapunov'][0]:.2f}, {1000 * r['lyapunov'][1]:.2f} | "
                 + (f"{r['relation_error']['1']:.3f}, {r['relation_error']['10']:.3f} |"
                    if r["relation_error"] else "- |")
                 + f" {r['log2_norm'][0]:.2f}, {r['log2_norm'][1]:.2f} |")
  with open(args.out + "_table.md", "w") as f:
    f.write("\n".join(lines) + "\n")
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(8, 4.5))
  colors = {}
  for label, (lengths, acc) in curves.items():
    name = label.split(" ")[0]
    color = colors.setdefault(name, f"C{len(colors)}")
    ax.plot(lengths, acc, label=label, lw=1, color=color,
            ls="-" if label == name else "--" if label.endswith("(previous)") else ":")
  ax.set_xscale("log")
  ax.axhline(0.99, color="gray", lw=0.5, ls="--")
  ax.axvline(40, color="gray", lw=0.5)
  ax.set_xlabel("length (trained on 1..40)")
  ax.set_ylabel("accuracy (256 strings)")
  ax.set_title("zoo models far beyond 500")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(args.out + ".png", dpi=120)
  print("\n".join(lines))


if __name__ == "__main__":
  main()
