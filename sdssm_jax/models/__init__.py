"""Sequence models over token ids. ``SDSSM`` is the paper's one-layer model."""

from sdssm_jax.models.sdssm import SDSSM, column_normalize, select_transitions

__all__ = ["SDSSM", "column_normalize", "select_transitions"]
