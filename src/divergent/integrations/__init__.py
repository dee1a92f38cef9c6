"""Integrations with the Hugging Face ecosystem (optional extras).

Modules in this package may import ``transformers`` and ``trl`` at module top: they are the
optional extras ``divergent[hf]`` and ``divergent[trl]``. Nothing in a lower-rank package imports
from here.

- :mod:`divergent.integrations.trl`: TRL adapters (a ``DistillationTrainer`` taking any
  registered divergence, an f-divergence ``DPOTrainer``, GRPO KL-estimator / placement options).
- :mod:`divergent.integrations.transformers`: a ``transformers.Trainer`` for LM distillation.
- :mod:`divergent.integrations.lm_job`: the ``divergent distill --task lm`` job.

This ``__init__`` imports nothing, so that importing one integration does not pull in the others.
"""
