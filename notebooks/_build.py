"""Generates the tutorial notebooks from the cell lists below (nbformat).

  python notebooks/_build.py            # write the three .ipynb files, without outputs
  python notebooks/_build.py --execute  # ... then run each once in smoke mode and save it
                                        #     with its outputs (what is committed)

Edit the cells here, not in the .ipynb files: ``tests/test_notebooks.py`` checks that the
committed notebooks hold exactly these cells, and runs them (nbclient, smoke mode).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Dict, List, Tuple

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_URL = "https://github.com/sdssm-jax/sdssm_jax"
# The switch every notebook reads: "1" runs a small budget (CI, and the saved outputs).
SMOKE_ENV = "SDSSM_NOTEBOOK_SMOKE"
KERNEL = "python3"
CELL_TIMEOUT_S = 300

Cells = List[Tuple[str, str]]  # ("md" | "code", source)


def _badge(filename: str) -> str:
  url = f"https://colab.research.google.com/github/{REPO_URL.split('github.com/')[1]}/blob/main/notebooks/{filename}"
  return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


INSTALL = f'''\
# Install sdssm_jax: from GitHub on Colab; elsewhere from this checkout, unless it is
# already importable (e.g. after `pip install -e .`, as in CI).
import importlib
import sys
from pathlib import Path

if "google.colab" in sys.modules:
    !pip install -q "sdssm_jax @ git+{REPO_URL}"
else:
    try:
        import sdssm_jax
    except ImportError:
        root = next((p for p in [Path.cwd(), *Path.cwd().parents]
                     if (p / "pyproject.toml").is_file() and (p / "sdssm_jax").is_dir()), None)
        if root is None:
            raise RuntimeError("sdssm_jax is not installed and this is not a checkout: "
                               "run `pip install -e .` in the repository first.")
        %pip install -q -e "{{root}}"
        sys.path.insert(0, str(root))  # importable now, without restarting the kernel
importlib.invalidate_caches()
import sdssm_jax
print("sdssm_jax", sdssm_jax.__version__)'''

SETUP = f'''\
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

%matplotlib inline
plt.rcParams.update({{"figure.dpi": 70, "savefig.dpi": 70}})

# Small-budget switch: CI sets {SMOKE_ENV}=1 (and the saved outputs come from that mode).
SMOKE = os.environ.get("{SMOKE_ENV}", "0").strip().lower() not in ("", "0", "false", "no")
print("mode:", "SMOKE (small budget, as in CI)" if SMOKE else "FULL (real settings)")
print(f"JAX {{jax.__version__}} on {{jax.default_backend().upper()}}: {{jax.devices()}}")


def show(fig):
    """Shows a figure inline and frees it (robust to matplotlib backend switches)."""
    display(fig)
    plt.close(fig)'''


# ----------------------------------------------------------------------- 01 quickstart

QUICKSTART: Cells = [
    ("md", f"""\
# sdssm_jax quickstart: a trained SD-SSM tracks an automaton far past its training lengths

{_badge("01_quickstart.ipynb")}

The package ships a **model zoo**: one-layer SD-SSMs (selective dense state-space models,
[arXiv 2412.19350](https://arxiv.org/abs/2412.19350)) trained on strings of length 1..40 of a
regular language. In this notebook we

1. install the package and load a zoo model,
2. run it on a few hand-written strings, next to the automaton's true answer,
3. measure its accuracy on every length 1..500 and plot it.

Runs on CPU, GPU or TPU (any Colab runtime). Set `{SMOKE_ENV}=1` for a quick run with
fewer test sequences per length (that is what CI runs, and what the saved outputs show)."""),
    ("code", INSTALL),
    ("code", SETUP),
    ("md", """\
## The zoo

Every entry is a folder with the weights (`params.msgpack`) and a model card (`card.json`:
task, model config, training steps and time, and the test accuracy per length). Nothing is
downloaded: the weights are package data."""),
    ("code", """\
from sdssm_jax import evaluation, zoo

print("zoo models:", zoo.names())
display(Markdown(zoo.markdown_table()))"""),
    ("code", """\
model, params, card = zoo.load("parity")   # checks the weights' sha256 against the card
_, task, query = zoo.build_model(card)      # the task, and the query symbol (or None)
n_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
print(f"{card['name']}: {card['model']} with {n_params:,} parameters, "
      f"state size {card['model_config']['state_size']}, trained on lengths 1..{card['train_length']}")
print(f"task {task.name!r}: {task.vocab_size} input symbols, {task.num_classes} classes, "
      f"{task.num_states} automaton states")
print(f"query token: {card['query_token']} (query symbol {query}): the model reads its answer "
      f"{'after an extra query symbol appended to the string' if query is not None else 'at the last symbol'}")"""),
    ("md", """\
## Hand-written strings

`model.apply({"params": params}, tokens)` returns logits after every prefix of `tokens`.
The prediction for a whole string is read at its last position; models trained with a
query token (`card["query_token"]`) read it after one more symbol, `card["query_symbol"]`,
appended to the string.

The true answer comes from a plain loop over the automaton's transition table
(`task.transitions`, `task.initial_state`, `task.state_labels`)."""),
    ("code", """\
import itertools

# How each task's symbols are written by hand (index = token id).
ALPHABETS = {
    "parity": "01",            # label: number of 1s mod 2
    "even_pairs": "ab",        # label: first symbol != last symbol
    "cycle_navigation": "-0+", # move -1, 0, +1 on a cycle of 5; label: position
    "c2xc4": "TM",             # T: toggle a bit, M: move pos -> pos+1 mod 4
    "d4": "FM",                # F: flip; M: move pos -> pos+1 (pos-1 when flipped) mod 4
    "a5": "RS",                # R: 5-cycle, S: double transposition of an arrangement of 0..4
    "modular_arithmetic": "01234+-*",  # label: the value mod 5
}
A5_ARRANGEMENTS = sorted(p for p in itertools.permutations(range(5))  # the a5 labels
                         if sum(a > b for a, b in itertools.combinations(p, 2)) % 2 == 0)


def describe(task_name, label):
    \"\"\"A label in words.\"\"\"
    if task_name == "parity":
        return f"{label} ({'odd' if label else 'even'})"
    if task_name in ("d4", "c2xc4"):
        bit, pos = divmod(label, 4)
        return f"{label} (bit {bit}, pos {pos})"
    if task_name == "a5":
        return f"{label} ({''.join(map(str, A5_ARRANGEMENTS[label]))})"
    return str(label)


def run_automaton(task, tokens):
    \"\"\"The automaton's answer for one string, by a plain loop over its table.\"\"\"
    state = task.initial_state
    for t in tokens:
        state = task.transitions[state, t]
    return int(task.state_labels[state])


def predict(name, strings):
    \"\"\"A zoo model's predictions for hand-written strings, in one batched forward pass.\"\"\"
    model, params, card = zoo.load(name)
    _, task, query = zoo.build_model(card)
    alphabet = ALPHABETS.get(name, "0123456789"[: task.vocab_size])
    seqs = [[alphabet.index(ch) for ch in s] for s in strings]
    # Append the query symbol if the model was trained with one; read the last position.
    inputs = [s + ([query] if query is not None else []) for s in seqs]
    batch = np.zeros((len(inputs), max(map(len, inputs))), np.int32)
    for i, s in enumerate(inputs):  # right-padded: the model is causal, padding comes later
        batch[i, : len(s)] = s
    logits = jax.jit(model.apply)({"params": params}, batch)
    last = np.array([len(s) - 1 for s in inputs])
    predicted = np.asarray(jnp.argmax(logits, -1))[np.arange(len(inputs)), last]
    # Cross-check the plain loop against the task's own (jitted) labelling.
    for s in seqs:
        assert run_automaton(task, s) == int(task.labels_at_every_prefix(np.array([s]))[0, -1])
    print(f"{name} (symbols {' '.join(f'{c}={i}' for i, c in enumerate(alphabet))})")
    print(f"  {'string':<42} {'length':>6}  {'true answer':<22} {'model':<22}")
    hits = 0
    for s, seq, p in zip(strings, seqs, predicted):
        truth = run_automaton(task, seq)
        hits += truth == p
        shown = s if len(s) <= 40 else f"{s[:18]}...{s[-19:]}"
        print(f"  {shown:<42} {len(s):>6}  {describe(name, truth):<22} "
              f"{describe(name, int(p)):<22} {'ok' if truth == p else 'WRONG'}")
    print(f"  {hits}/{len(strings)} correct\\n")


rng = np.random.default_rng(0)
random_string = lambda alphabet, n: "".join(rng.choice(list(alphabet), n))"""),
    ("code", """\
predict("parity", ["1", "0", "11", "0110", "10011", "1" * 40,
                   "1" * 41,                          # longer than any training string
                   "1101" * 25,
                   "0" * 250 + "1" + "0" * 249,       # one 1 hidden in 500 symbols
                   random_string("01", 500)])"""),
    ("code", """\
if "d4" in zoo.names():
    predict("d4", ["M", "MM", "MMMM",                 # four moves: back to the start
                   "F", "FF", "FM", "MF",             # flip then move != move then flip
                   "FMFM",                            # = identity in D4
                   "M" * 499, random_string("FM", 300)])
if "a5" in zoo.names():
    predict("a5", ["R", "RRRRR", "SS", "RS", "SR",     # R^5 = S^2 = identity
                   "RS" * 5, random_string("RS", 100), random_string("RS", 500)])"""),
    ("md", """\
## Accuracy on every length 1..500

`evaluation.evaluate_range` scores every length with one forward pass: for these tasks the
prefixes of a random string of length 500 are random strings of every shorter length, so
one pass over `num_per_length` strings of length 500 scores all 500 lengths (with a query
token, the query symbol is applied to every prefix's state). The zoo cards use 512 strings
per length; smoke mode uses 32."""),
    ("code", """\
NUM_PER_LENGTH = 32 if SMOKE else 512
MAX_LENGTH = 500
curves = {}
for name in zoo.names():
    t0 = time.time()
    model, params, card = zoo.load(name)
    _, task, query = zoo.build_model(card)
    curves[name] = evaluation.evaluate_range(
        model, params, task, min_length=1, max_length=MAX_LENGTH,
        num_per_length=NUM_PER_LENGTH, seed=card["evaluation"]["seed"], query_symbol=query,
        mode="prefix" if task.prefix_closed else "per_length", train_length=card["train_length"])
    s = curves[name]["summary"]
    print(f"{name:18s} lengths 1..{card['train_length']}: {s['id_mean']:.4f}   "
          f"{card['train_length'] + 1}..{MAX_LENGTH}: mean {s['ood_mean']:.4f}, "
          f"min {s['ood_min']:.4f}   (card, 512/length: {card['summary']['ood_mean']:.4f})"
          f"   [{time.time() - t0:.1f} s]")"""),
    ("code", """\
train_length = max(zoo.card(n)["train_length"] for n in curves)
fig, ax = plt.subplots(figsize=(9, 3.6))
ax.axvspan(0.5, train_length + 0.5, color="0.9", label=f"training lengths 1..{train_length}")
for name, r in curves.items():
    ax.plot(r["lengths"], r["accuracy"], lw=1.2, label=name)
ax.set(xlabel="string length", ylabel="accuracy", ylim=(-0.02, 1.02), xlim=(0, MAX_LENGTH + 1),
       title=f"zoo models: accuracy vs length ({NUM_PER_LENGTH} strings per length)")
ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
fig.tight_layout()
show(fig)"""),
    ("md", """\
Next: `02_train.ipynb` trains a model from a config, and `03_inside_the_automaton.ipynb`
looks at what the learned transition matrices and states are."""),
]


# --------------------------------------------------------------------------- 02 train

TRAIN: Cells = [
    ("md", f"""\
# Train an SD-SSM from a config

{_badge("02_train.ipynb")}

1. detect the backend (TPU / GPU / CPU) and pick the scan method for it,
2. train a task from its config (`sdssm_jax.configs`) with a progress bar,
3. plot the loss and the accuracy vs length,
4. save and reload the checkpoint,
5. compare the scan methods' speed on this backend.

Full mode trains parity with Adam at lr 1e-3 for 5,000 steps of 128 strings of length
1..40 (a minute or two on a 2-core CPU) and tests 512 strings per length. With
`{SMOKE_ENV}=1` (CI, and the saved outputs) it trains a small model (state size 16)
on lengths 1..10 for 200 steps and tests 32 strings per length: enough for parity to get
(close to) every length up to 500 right."""),
    ("code", INSTALL),
    ("code", SETUP),
    ("md", """\
## Backend and scan method

The model's recurrence `x_t = Â(u_t) x_{t-1} + B u_t` runs through one of three scans
(`sdssm_jax.SCAN_METHODS`): `sequential` (`lax.scan`, least work: fastest on CPUs),
`associative` (`lax.associative_scan`, log-depth: for GPUs and TPUs) and `chunked`
(associative within chunks, memory bounded by the chunk). `default_method()` picks the
measured fastest for the platform."""),
    ("code", """\
from sdssm_jax import configs, evaluation, train, zoo

backend = jax.default_backend()   # "cpu", "gpu" or "tpu"
devices = jax.devices()
print(f"backend: {backend.upper()}, {len(devices)} x {devices[0].device_kind}")
SCAN = sdssm_jax.default_method(backend)
print(f"scan methods: {sdssm_jax.SCAN_METHODS}; using {SCAN!r} on {backend}")"""),
    ("md", """\
## The config

`configs.get_config("task=parity")` holds the paper's settings for the task (lr, number
of dictionary matrices K, the norm's p, seed, query token) and every training and
evaluation field; any field can be changed before training. `train.batch_size` is
global: on a multi-device runtime (a TPU with 8 cores) each device gets a slice."""),
    ("code", """\
TASK = "parity"
config = configs.get_config(f"task={TASK}")
config.model_config.scan = SCAN
config.train.progress_bar = True   # tqdm: a widget in Jupyter/Colab (with ipywidgets), text in a terminal
config.eval.max_length = 500
config.eval.batch_size = 64        # strings per evaluation pass: bounds memory on accelerators
if SMOKE:
    config.model_config.state_size = 16
    config.optimizer.lr = 1e-2
    config.train.steps = 200
    config.train.batch_size = 32
    config.train.train_length = 10
    config.train.log_every = 10
    config.train.eval_every = 100
    config.train.checkpoint_every = 100
    config.eval.num_per_length = 32
    config.eval.id_num_per_length = 32
else:
    config.optimizer.lr = 1e-3
    config.train.steps = 5000
    config.train.log_every = 50
    config.train.eval_every = 500
    config.train.checkpoint_every = 1000
configs.validate(config)
print(f"task {config.task}, model {config.model}: {config.model_config.to_dict()}")
print(f"Adam lr {config.optimizer.lr}, {config.train.steps} steps of {config.train.batch_size} "
      f"strings of length {config.train.min_length}..{config.train.train_length}; test on lengths "
      f"1..{config.eval.max_length}, {config.eval.num_per_length} strings per length")"""),
    ("md", """\
## Train

`train.train_and_evaluate(config, workdir)` trains (or resumes: run it again on the same
workdir and it continues from the last checkpoint), keeps the best checkpoint by
in-distribution accuracy, then evaluates every length 1..`eval.max_length`. The workdir
holds `config.json`, `metrics.jsonl`, `checkpoints/`, `best/`, `results.json` and a plot."""),
    ("code", """\
import tempfile

import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # no ipywidgets: text bar
WORKDIR = tempfile.mkdtemp(prefix=f"sdssm_{TASK}_")   # a fresh run; reuse a path to resume
t0 = time.time()
results = train.train_and_evaluate(config, WORKDIR)
print(f"trained {results['train_steps']} steps in {results['train_wall_time_s']:.1f} s "
      f"(+ compilation and evaluation: {time.time() - t0:.1f} s in all) on {results['hardware']}")
s = results["summary"]
print(f"checkpoint of step {results['checkpoint_step']}: accuracy on lengths 1..{s['train_length']} "
      f"{s['id_mean']:.4f}; on {s['train_length'] + 1}..{config.eval.max_length}: mean "
      f"{s['ood_mean']:.4f}, min {s['ood_min']:.4f} (length {s['ood_min_length']})")
print("workdir:", WORKDIR, sorted(os.listdir(WORKDIR)))"""),
    ("code", """\
import json

with open(os.path.join(WORKDIR, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
logged = [r for r in rows if "loss" in r]      # training batches, every log_every steps
evals = [r for r in rows if "id_acc" in r]     # in-distribution evaluations, every eval_every

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.4))
ax0.semilogy([r["step"] for r in logged], [r["loss"] for r in logged], label="training loss")
ax0.semilogy([r["step"] for r in evals], [r["id_loss"] for r in evals], "o-",
             label=f"held-out loss, lengths 1..{config.train.train_length}")
ax0.set(xlabel="step", title="loss")
ax0.legend(fontsize=8)
lengths = np.array([int(n) for n in results["per_length"]])
accuracy = np.array(list(results["per_length"].values()))
ax1.axvspan(0.5, config.train.train_length + 0.5, color="0.9", label="training lengths")
ax1.plot(lengths, accuracy, lw=1.2, label=f"step {results['checkpoint_step']}")
ax1.set(xlabel="string length", ylabel="accuracy", ylim=(-0.02, 1.02),
        title=f"{TASK}: accuracy vs length ({config.eval.num_per_length} strings per length)")
ax1.legend(fontsize=8, loc="lower left")
fig.tight_layout()
show(fig)"""),
    ("md", """\
## Save and reload

The run's checkpoints are orbax checkpoints in the workdir: `train.load_params(workdir,
"best")` returns the best checkpoint's parameters (a plain pytree), and `train.make_model(config)`
rebuilds the model. Re-evaluating the reloaded best checkpoint reproduces the run's
numbers. `zoo.export` turns the run into a portable zoo entry (msgpack weights + a model
card), which `zoo.load` reads back like the shipped models."""),
    ("code", """\
params, step = train.load_params(WORKDIR, "best")
print(f"reloaded the best checkpoint (step {step}) from {WORKDIR}/best")
model, task, query = train.make_model(config)
again = evaluation.evaluate_range(
    model, params, task, max_length=config.eval.max_length,
    num_per_length=config.eval.num_per_length, seed=config.eval.seed, query_symbol=query,
    batch_size=config.eval.batch_size, train_length=config.train.train_length)
gap = np.abs(np.array(again["accuracy"]) - accuracy).max()
print(f"re-evaluated: OOD mean {again['summary']['ood_mean']:.4f} "
      f"(run: {results['summary']['ood_mean']:.4f}); largest per-length difference {gap:.4f}")
assert gap <= 2 / config.eval.num_per_length  # identical up to a rare float tie on accelerators

zoo_root = os.path.join(WORKDIR, "my_zoo")
exported = zoo.export(WORKDIR, f"my_{TASK}", root=zoo_root, long_length=1000)
model2, params2, card2 = zoo.load(f"my_{TASK}", root=zoo_root)
print(f"exported to {zoo_root}: {sorted(os.listdir(os.path.join(zoo_root, f'my_{TASK}')))}; "
      f"card: OOD mean {card2['summary']['ood_mean']:.4f}, accuracy at length "
      f"{card2['long_length']['length']}: {card2['long_length']['accuracy']:.3f}")"""),
    ("md", """\
## Scan methods: speed on this backend

One jitted forward pass (logits at every position) and, in full mode, one gradient of an
SD-SSM over a batch of random strings, for each scan method. On a CPU the sequential scan wins (it does
Θ(L N²) work; the associative scan does Θ(L N³) in exchange for Θ(log L) depth); on GPUs
and TPUs the associative scan usually does. Numbers are the best of a few calls after
compilation."""),
    ("code", """\
import optax
from sdssm_jax import SDSSM

# Smoke mode: forward passes at one length only (compiling the gradients of every method
# takes most of a minute on a small CPU). The associative scan materialises B x L x N x N
# prefix products: the longest length only on accelerators.
if SMOKE:
    B, N, LENGTHS, GRADIENT = 8, 16, (256,), False
elif backend == "cpu":
    B, N, LENGTHS, GRADIENT = 32, 64, (64, 512), True
else:
    B, N, LENGTHS, GRADIENT = 64, 64, (64, 512, 2048), True


def best_time(fn, *args, repeats=10, budget_s=2.0):
    \"\"\"Best wall time of a call after compilation (2..repeats calls, within budget_s).\"\"\"
    jax.block_until_ready(fn(*args))   # compile
    times, start = [], time.perf_counter()
    while len(times) < 2 or (len(times) < repeats and time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return min(times)


key = jax.random.PRNGKey(0)
timings = {}
for length in LENGTHS:
    tokens = jax.random.randint(key, (B, length), 0, 3)
    labels = jax.random.randint(key, (B, length), 0, 2)
    for method in sdssm_jax.SCAN_METHODS:
        m = SDSSM(vocab_size=3, num_classes=2, state_size=N, scan=method, rescale=False)
        p = m.init(key, tokens[:, :2])["params"]
        forward = jax.jit(lambda p, t: m.apply({"params": p}, t))
        loss = lambda p, t, y: optax.softmax_cross_entropy_with_integer_labels(
            m.apply({"params": p}, t), y).mean()
        timings[length, method, "forward"] = best_time(forward, p, tokens)
        if GRADIENT:
            timings[length, method, "gradient"] = best_time(jax.jit(jax.grad(loss)), p, tokens, labels)

kinds = ("forward", "gradient") if GRADIENT else ("forward",)
print(f"{backend.upper()}, batch {B}, state size {N}: milliseconds per call ({' / '.join(kinds)})")
print(f"{'length':>8}" + "".join(f"{m:>22}" for m in sdssm_jax.SCAN_METHODS) + "   fastest")
for length in LENGTHS:
    cells = [" / ".join(f"{1e3 * timings[length, m, k]:.2f}" for k in kinds)
             for m in sdssm_jax.SCAN_METHODS]
    fastest = min(sdssm_jax.SCAN_METHODS, key=lambda m: timings[length, m, kinds[-1]])
    print(f"{length:>8}" + "".join(f"{c:>22}" for c in cells) + f"   {fastest}")
print(f"default_method({backend!r}) = {SCAN!r}")"""),
    ("code", """\
import shutil

if SMOKE:  # CI: leave nothing behind; in full mode the run stays in WORKDIR
    shutil.rmtree(WORKDIR)
print("run directory:", WORKDIR if os.path.isdir(WORKDIR) else "(removed)")"""),
]


# ------------------------------------------------------------- 03 inside the automaton

INSIDE: Cells = [
    ("md", f"""\
# Inside the automaton: what a trained SD-SSM has learned

{_badge("03_inside_the_automaton.ipynb")}

A one-layer SD-SSM updates its state with one dense matrix per input symbol,
`x_t = Â(u_t) x_(t-1) + B u_t`, and predicts from the *direction* of `x_t` (the readout
sits after a LayerNorm, which removes the state's mean and scale). If the model has really
learned the automaton, then

* the per-symbol matrices `Â(v)` act like the automaton's transitions on a few dominant
  directions (for a group task: a representation of the group), and
* the normalised states of all prefixes collapse onto **one point per automaton state**,
  at every length, far beyond the training lengths.

We check both on a zoo model: D4 (the symmetry group of a square, 8 states) when the zoo
has it, else parity. Set `{SMOKE_ENV}=1` for a quicker run on fewer strings."""),
    ("code", INSTALL),
    ("code", SETUP),
    ("code", """\
from sdssm_jax import zoo

NAME = next(n for n in ("d4", "parity", *zoo.names()) if n in zoo.names())
model, params, card = zoo.load(NAME)
_, task, query = zoo.build_model(card)
variables = {"params": params}
print(f"zoo model {NAME!r}: task {task.name}, {task.vocab_size} symbols, "
      f"{task.num_states} automaton states, state size N = {card['model_config']['state_size']}, "
      f"OOD accuracy (lengths {card['train_length'] + 1}..500) {card['summary']['ood_mean']:.4f}")
print("automaton transition table (row: state, column: symbol):\\n", task.transitions.T)"""),
    ("md", """\
## The learned per-symbol transition matrices

`model.apply(variables, method="symbol_transitions")` gives the normalised matrices
`Â(v)`, one `N x N` matrix per input symbol (with a query token, the query symbol is one
more). The heat maps show the entries; below them, each matrix's eigenvalues in the
complex plane, divided by the largest modulus. The few eigenvalues on the unit circle
span the directions the state lives in after a few symbols; all others shrink away."""),
    ("code", """\
A = np.asarray(model.apply(variables, method="symbol_transitions"))   # [V, N, N]
symbol_names = [f"symbol {v}" for v in range(task.vocab_size)] + (["query"] if query is not None else [])
V = len(A)
fig, axes = plt.subplots(1, V, figsize=(2.6 * V + 0.6, 2.6), squeeze=False)
lim = np.abs(A).max()
for v, ax in enumerate(axes[0]):
    im = ax.imshow(A[v], cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    ax.set(title=f"Â({symbol_names[v]})", xticks=[], yticks=[])
fig.colorbar(im, ax=axes[0].tolist(), shrink=0.9)
show(fig)

fig, axes = plt.subplots(1, V, figsize=(2.8 * V, 2.9), squeeze=False)
for v, ax in enumerate(axes[0]):
    eig = np.linalg.eigvals(A[v])
    rho = np.abs(eig).max()
    ax.add_patch(plt.Circle((0, 0), 1, fill=False, color="0.6", lw=0.8))
    ax.scatter(eig.real / rho, eig.imag / rho, s=10)
    ax.set(xlim=(-1.2, 1.2), ylim=(-1.2, 1.2), aspect="equal", xlabel="Re", ylabel="Im",
           title=f"{symbol_names[v]}: eigenvalues / {rho:.3f}")
    dominant = eig[np.abs(eig) > 0.8 * rho]
    print(f"Â({symbol_names[v]}): spectral radius {rho:.3f}; eigenvalues within 80% of it: "
          + ", ".join(f"{z.real:+.2f}{z.imag:+.2f}i" for z in sorted(dominant, key=np.angle)))
fig.tight_layout()
show(fig)"""),
    ("md", """\
For D4 (if that is the model loaded) the dominant eigenvalues of "move" are close to
`-1, +i, -i` and those of "flip" to `+1, -1, -1`, all times a common factor: on those
three directions the matrices act like a rotation by 90° and a reflection, a
three-dimensional representation of D4 (the square's two-dimensional rotation/reflection
representation plus a sign). The common factor is slightly above 1, so the state grows
geometrically; the shipped models carry it as `mantissa * 2**exponent` (`rescale`), and the
LayerNorm readout ignores the scale.

## The states of many prefixes

We feed random strings of length 500 and take the state after every prefix. With a query
token the readout sees the state after the query symbol, so we apply it (`method="step"`).
With `rescale` the model returns `(mantissa, exponent)`; only the mantissa's direction
matters. We normalise like the LayerNorm: subtract the mean over the N coordinates and
divide by the norm."""),
    ("code", """\
NUM_STRINGS = 16 if SMOKE else 64
LENGTH = 500
tokens = task.sample(jax.random.PRNGKey(1), NUM_STRINGS, LENGTH)["tokens"]


@jax.jit
def readout_states(params, tokens):
    \"\"\"The state the readout sees after every prefix, [B, L, N] (mantissa if rescaled).\"\"\"
    v = {"params": params}
    states = model.apply(v, tokens, method="states")
    if query is not None:
        states = model.apply(v, states, query, method="step")
    return states[0] if isinstance(states, tuple) else states


x = np.asarray(readout_states(params, tokens), np.float64)
x = x - x.mean(-1, keepdims=True)                     # LayerNorm: centre ...
x = x / np.linalg.norm(x, axis=-1, keepdims=True)     # ... and keep the direction
true_state = np.asarray(task.states_at_every_prefix(tokens))   # [B, L] automaton states
prefix_length = np.broadcast_to(np.arange(1, LENGTH + 1), true_state.shape)
visited = np.unique(true_state)
print(f"{NUM_STRINGS} strings x {LENGTH} prefixes: states {x.shape}; the prefixes visit "
      f"{len(visited)} of the automaton's {task.num_states} states")"""),
    ("md", """\
### PCA, coloured by the true automaton state

Principal components from numpy's SVD of the centred (normalised) states. For D4 three
components carry almost all the variance (the three dominant directions of the
matrices), and the 8 states sit near the corners of a cube: any two components alone
would show the clusters overlapping in pairs, hence the 3-D view."""),
    ("code", """\
rng = np.random.default_rng(0)
flat_x, flat_q = x.reshape(-1, x.shape[-1]), true_state.reshape(-1)
flat_len = prefix_length.reshape(-1)
pick = rng.choice(len(flat_x), size=min(2000, len(flat_x)), replace=False)
mean = flat_x.mean(0)
_, sing, vt = np.linalg.svd(flat_x[pick] - mean, full_matrices=False)
explained = sing**2 / np.sum(sing**2)
pcs = (flat_x[pick] - mean) @ vt[:3].T
print("variance explained by the first 6 components:", np.round(explained[:6], 3))

# One colour per automaton state (qualitative palettes up to 20 states, a colour wheel beyond).
rank = np.searchsorted(visited, flat_q[pick])
if len(visited) <= 20:
    cmap = plt.get_cmap("tab10" if len(visited) <= 10 else "tab20")
    colors = cmap(rank)
else:
    cmap = plt.get_cmap("hsv")
    colors = cmap(rank / len(visited))
fig = plt.figure(figsize=(7.5, 5))
ax = fig.add_subplot(projection="3d")
ax.scatter(pcs[:, 0], pcs[:, 1], pcs[:, 2], c=colors, s=4, depthshade=False)
ax.set(xlabel="PC1", ylabel="PC2", zlabel="PC3")
ax.view_init(elev=20, azim=35)
if len(visited) <= 20:
    for k, q in enumerate(visited):
        ax.scatter([], [], [], color=cmap(k), label=f"state {q}")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.05, 0.5))
ax.set_title(f"{NAME}: normalised states of {len(pick)} prefixes (lengths 1..{LENGTH}),\\n"
             "first three principal components, coloured by the automaton's state", fontsize=10)
show(fig)"""),
    ("md", """\
### How tight are the clusters, at every length?

The centre of each automaton state's cluster is the mean of its normalised states (over
prefixes of length ≥ 10). The distance of each prefix's state to the centre of *its*
automaton state shows a short transient (the state starts at `x_0 = 0`, and the input term
`B u_t` matters until the state has grown), then stays small at every length up to 500,
far from the closest other centre."""),
    ("code", """\
MIN_LENGTH = 10   # past the transient of the first few symbols
settled = prefix_length >= MIN_LENGTH
centres = np.stack([x[settled & (true_state == q)].mean(0) for q in visited])
own = np.linalg.norm(x - centres[np.searchsorted(visited, true_state)], axis=-1)   # [B, L]
between = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
closest_other = between[~np.eye(len(visited), dtype=bool)].min()
within = own[settled].max()
print(f"prefixes of length >= {MIN_LENGTH}: largest distance to its own state's centre "
      f"{within:.3f}; smallest distance between two centres {closest_other:.3f} "
      f"(ratio {closest_other / within:.1f})")

fig, ax = plt.subplots(figsize=(8, 3.2))
ax.semilogy(np.arange(1, LENGTH + 1), own.max(0), label="max over strings")
ax.semilogy(np.arange(1, LENGTH + 1), np.median(own, 0), label="median over strings")
ax.axhline(closest_other, color="k", ls="--", lw=1, label="closest other centre")
ax.axvline(card["train_length"], color="0.6", ls=":", label="longest training length")
ax.set_ylim(top=4 * closest_other)
ax.set(xlabel="prefix length", ylabel="distance to own centre",
       title=f"{NAME}: distance of each state to its automaton state's centre")
ax.legend(fontsize=7, loc="upper right", ncol=2)
show(fig)"""),
    ("md", """\
### Without the labels: how many clusters are there?

Single-linkage (agglomerative) clustering, in numpy: the minimum spanning tree of the
normalised states (Prim's algorithm); cutting its edges longer than a threshold leaves the
clusters. The number of clusters is read off the **largest relative gap** between
consecutive edge lengths, with no use of the labels. Then we check that it equals the
number of automaton states visited, and that every cluster holds exactly one automaton
state."""),
    ("code", """\
def minimum_spanning_tree(points):
    \"\"\"Prim's algorithm on Euclidean distances: the n-1 edges as (i, j, length).\"\"\"
    sq = np.sum(points**2, axis=1)
    dist_to = lambda j: np.sqrt(np.maximum(sq + sq[j] - 2 * points @ points[j], 0.0))
    in_tree = np.zeros(len(points), bool)
    in_tree[0] = True
    best, parent = dist_to(0), np.zeros(len(points), int)
    edges = []
    for _ in range(len(points) - 1):
        best[in_tree] = np.inf
        j = int(np.argmin(best))
        edges.append((parent[j], j, best[j]))
        in_tree[j] = True
        d = dist_to(j)
        closer = d < best
        best[closer], parent[closer] = d[closer], j
    return edges


def cut(n, edges, threshold):
    \"\"\"Cluster ids after keeping the tree edges shorter than threshold (union-find).\"\"\"
    root = np.arange(n)
    def find(i):
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i
    for i, j, w in edges:
        if w < threshold:
            root[find(i)] = find(j)
    return np.unique([find(i) for i in range(n)], return_inverse=True)[1]


def count_clusters(points, max_clusters=200):
    \"\"\"Label-free: (number of clusters, threshold, gap ratio, cluster ids, sorted edge lengths).\"\"\"
    edges = minimum_spanning_tree(points)
    w = np.sort([e[2] for e in edges])[::-1]              # longest first
    top = w[: max_clusters + 1]
    ratios = top[:-1] / np.maximum(top[1:], 1e-12)
    k = int(np.argmax(ratios)) + 1                         # cut the k longest edges ...
    threshold = np.sqrt(w[k - 1] * w[k])                   # ... anywhere inside the gap
    return k + 1, threshold, ratios[k - 1], cut(len(points), edges, threshold), w


sample = np.flatnonzero(flat_len >= MIN_LENGTH)
sample = rng.choice(sample, size=min(1500 if SMOKE else 4000, len(sample)), replace=False)
t0 = time.time()
found, threshold, ratio, cluster, edge_lengths = count_clusters(flat_x[sample])
visited_here = np.unique(flat_q[sample])
table = np.zeros((found, task.num_states), int)
np.add.at(table, (cluster, flat_q[sample]), 1)
pure = (table > 0).sum(1).max() == 1 and (table[:, visited_here] > 0).sum(0).max() == 1
print(f"{len(sample)} states (prefix lengths {MIN_LENGTH}..{LENGTH}), {time.time() - t0:.1f} s: "
      f"{found} clusters (edges longer than {threshold:.3f}; gap ratio {ratio:.1f}); "
      f"automaton states visited: {len(visited_here)}; one state per cluster and one cluster "
      f"per state: {pure}")

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.3))
show_n = min(len(edge_lengths), 3 * found + 10)
ax0.semilogy(np.arange(1, show_n + 1), edge_lengths[:show_n], ".-")
ax0.axvline(found - 0.5, color="r", ls="--", lw=1, label=f"gap: {found - 1} long edges")
ax0.set(xlabel="rank", ylabel="edge length", title="longest minimum-spanning-tree edges")
ax0.legend(fontsize=8)
thresholds = np.geomspace(edge_lengths[show_n - 1] / 2, edge_lengths[0] * 1.5, 200)
ax1.semilogx(thresholds, [1 + np.sum(edge_lengths > t) for t in thresholds])
ax1.axhline(len(visited_here), color="k", ls="--", lw=1, label=f"{len(visited_here)} automaton states")
ax1.set(xlabel="distance threshold", ylabel="clusters", title="single-linkage clusters vs threshold")
ax1.legend(fontsize=8)
fig.tight_layout()
show(fig)
assert found == len(visited_here) and pure, "the states do not cluster by automaton state"
print(f"=> the normalised states of {NAME} form exactly {found} clusters, one per automaton state.")"""),
    ("md", """\
## The same check on every zoo model

A model can be accurate without its states collapsing onto exactly one point per automaton
state: a linear readout only needs the classes to be separable. The table runs the
label-free count on every zoo entry (fewer strings)."""),
    ("code", """\
print(f"{'model':18s} {'states':>6} {'clusters':>8} {'gap ratio':>9} {'pure':>5}   OOD accuracy (card)")
for name in zoo.names():
    m, p, c = zoo.load(name)
    _, t, q = zoo.build_model(c)
    toks = t.sample(jax.random.PRNGKey(2), 8 if SMOKE else 32, LENGTH)["tokens"]
    st = m.apply({"params": p}, toks, method="states")
    if q is not None:
        st = m.apply({"params": p}, st, q, method="step")
    s = np.asarray(st[0] if isinstance(st, tuple) else st, np.float64)[:, MIN_LENGTH - 1:]
    s = s - s.mean(-1, keepdims=True)
    s = (s / np.linalg.norm(s, axis=-1, keepdims=True)).reshape(-1, s.shape[-1])
    lab = np.asarray(t.states_at_every_prefix(toks))[:, MIN_LENGTH - 1:].reshape(-1)
    idx = rng.choice(len(s), size=min(1000 if SMOKE else 3000, len(s)), replace=False)
    k, _, r, cl, _ = count_clusters(s[idx])
    tab = np.zeros((k, t.num_states), int)
    np.add.at(tab, (cl, lab[idx]), 1)
    n_vis = len(np.unique(lab[idx]))
    ok = k == n_vis and (tab > 0).sum(1).max() == 1
    print(f"{name:18s} {n_vis:>6} {k:>8} {r:>9.1f} {str(ok):>5}   {c['summary']['ood_mean']:.4f}")"""),
]


NOTEBOOKS: Dict[str, Cells] = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_train.ipynb": TRAIN,
    "03_inside_the_automaton.ipynb": INSIDE,
}


def build(cells: Cells) -> nbformat.NotebookNode:
  """A notebook (no outputs) from a cell list; cell ids are stable (c00, c01, ...)."""
  nb = new_notebook()
  for i, (kind, source) in enumerate(cells):
    cell = new_markdown_cell(source) if kind == "md" else new_code_cell(source)
    cell["id"] = f"c{i:02d}"
    nb.cells.append(cell)
  nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
  nb.metadata["language_info"] = {"name": "python"}
  nb.metadata["colab"] = {"provenance": []}
  return nb


def execute(nb: nbformat.NotebookNode, cwd: str = HERE, smoke: bool = True,
            timeout: int = CELL_TIMEOUT_S) -> nbformat.NotebookNode:
  """Runs ``nb`` in a fresh python3 kernel (nbclient), in ``cwd``, with the small-budget
  switch set when ``smoke``; returns it with its outputs (raises on the first error)."""
  from nbclient import NotebookClient
  env = dict(os.environ)
  env[SMOKE_ENV] = "1" if smoke else "0"
  env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"  # CI exports Agg
  client = NotebookClient(nb, timeout=timeout, kernel_name=KERNEL, record_timing=False,
                          resources={"metadata": {"path": cwd}})
  client.execute(env=env, cwd=cwd)
  return nb


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--execute", action="store_true",
                      help="run each notebook in smoke mode and save it with its outputs")
  parser.add_argument("--full", action="store_true", help="with --execute: full mode")
  parser.add_argument("names", nargs="*", help="notebooks to build (default: all)")
  args = parser.parse_args(argv)
  for name in args.names or NOTEBOOKS:
    nb = build(NOTEBOOKS[name])
    if args.execute:
      t0 = time.time()
      execute(nb, smoke=not args.full)
      print(f"{name}: executed in {time.time() - t0:.1f} s", file=sys.stderr)
    path = os.path.join(HERE, name)
    nbformat.validate(nb)
    nbformat.write(nb, path)
    print(f"{path}: {os.path.getsize(path) / 1024:.0f} KB", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
