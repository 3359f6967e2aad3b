"""``python -m sdssm_jax.zoo [list|verify [--short] [NAME ...]|long [--update_cards]|table|plot PATH]``:
list the zoo; re-evaluate every entry (or those named) against its card (``--short``: the
test protocol only, not the accuracy at 1,000, 2,000 and 10,000); measure the long lengths (and write
them into the cards); print the markdown results table; or plot every entry."""

import sys

from sdssm_jax import zoo


def main(argv) -> int:
  cmd = argv[1] if len(argv) > 1 else "list"
  if cmd == "list":
    for name in zoo.names():
      try:
        c = zoo.card(name)
        s = c["summary"]
      except (OSError, ValueError, KeyError) as e:
        print(f"{name:22s} unreadable card: {type(e).__name__}: {e}")
        continue
      print(f"{name:22s} task={c['task']:20s} OOD mean {s['ood_mean']:.5f} "
            f"OOD min {s['ood_min']:.4f} steps {c['train_steps']}")
    return 0
  if cmd == "verify":
    if not zoo.names():
      print("The zoo is empty.")
      return 1
    only = [a for a in argv[2:] if not a.startswith("--")] or None
    try:
      return 0 if zoo.verify(long="--short" not in argv, only=only) else 1
    except ValueError as e:
      print(e, file=sys.stderr)
      return 2
  if cmd == "long":
    import json
    for name in zoo.names():
      model, params, c = zoo.load(name)
      _, task, query = zoo.build_model(c)
      far = zoo.long_lengths(model, params, task, query)
      print(f"{name:22s} " + ", ".join(f"{int(L):,}: {100 * a:.1f}%"
                                       for L, a in far["accuracy"].items())
            + f"; first length below 99%: {far['first_below_99']}", flush=True)
      if "--update_cards" in argv:
        c["long_lengths"] = far
        with open(zoo.os.path.join(zoo.ROOT, name, zoo.CARD), "w") as f:
          json.dump(c, f, indent=1)
    return 0
  if cmd == "table":
    print(zoo.markdown_table())
    return 0
  if cmd == "plot" and len(argv) > 2:
    print(zoo.plot(argv[2]))
    return 0
  print(f"Unknown command {cmd!r}; valid choices: list, verify [--short] [NAME ...], long "
        f"[--update_cards], table, plot PATH.",
        file=sys.stderr)
  return 2


if __name__ == "__main__":
  sys.exit(main(sys.argv))
