"""``sdssm-zoo [list|verify [--short] [NAME ...]|long [--update_cards]|table|plot PATH]``: the same as ``python -m sdssm_jax.zoo``."""

import sys

from sdssm_jax.zoo.__main__ import main


def run() -> None:
  sys.exit(main(sys.argv))


if __name__ == "__main__":
  run()
