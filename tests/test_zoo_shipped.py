"""The shipped zoo: every entry re-evaluated against its card, one test per entry (so
pytest-xdist spreads them over the workers: together they are the suite's longest part)."""

import pytest

from sdssm_jax import zoo
from sdssm_jax.zoo import __main__ as zoo_cli

# The headline: one-layer SD-SSMs trained on lengths 1..40 only.
HEADLINE = ("parity", "even_pairs", "cycle_navigation", "modular_arithmetic", "c2xc4", "d4",
            "a5")


def test_shipped_zoo_has_the_seven_headline_tasks():
  assert set(HEADLINE) <= set(zoo.names())


@pytest.mark.parametrize("name", zoo.names())
def test_shipped_entry_verifies_and_its_card_is_honest(name, capsys):
  """What `python -m sdssm_jax.zoo verify NAME` runs: lengths 41..500 (512 sequences per
  length) against the card's OOD mean, and the accuracy at 1,000, 2,000 and 10,000 (256
  strings of 10,000 symbols, every logit finite) against the card's."""
  card = zoo.card(name)
  assert card["train_length"] == 40  # trained on lengths 1..40 only
  assert card["summary"]["ood_mean"] >= card["summary"]["ood_min"]
  _, task, _ = zoo.build_model(card)
  assert card["long_length"]["length"] == task.effective_length(10_000)
  assert card["long_length"]["finite"]
  assert set(card["long_lengths"]["accuracy"]) == {str(L) for L in zoo.LONG_LENGTHS}
  assert zoo.verify(only=[name])
  out = capsys.readouterr().out
  assert out.startswith(f"ok   {name} ") and "10,000:" in out


def test_verify_cli_takes_names_and_rejects_unknown_ones(capsys):
  assert zoo_cli.main(["zoo", "verify", "--short", "parity"]) == 0
  out = capsys.readouterr().out
  assert out.startswith("ok   parity ") and len(out.splitlines()) == 1
  assert zoo_cli.main(["zoo", "verify", "parity", "nope"]) == 2
  err = capsys.readouterr().err
  assert "Unknown zoo model(s) 'nope'" in err and "valid choices: " + ", ".join(zoo.names()) in err
