"""divergent: probability divergences as a first-class, fast and correct knob.

``D(P‖Q)``: the first argument is the target / teacher / reference P, the second the model /
student Q. ``divergent.kl(p_logits, q_logits)`` is KL(P‖Q). See ``divergent list`` for every
registered divergence and the README for the conventions.

The packages, bottom up (each imports only from those below it; ``tests/test_layering.py``
checks it):

* :mod:`divergent.categorical` — the registry (a leaf), the named divergences and their
  kernels, user generators;
* :mod:`divergent.engine` — row-chunked, fused-linear and vocab-parallel engines;
  :mod:`divergent.samples` (kNN, KDE, MMD, Cauchy–Schwarz), :mod:`divergent.transport`
  (Sinkhorn, W1, ULD);
* :mod:`divergent.functional` — ``divergence()``, ``f_divergence()`` and the shortcuts;
* :mod:`divergent.teacher` (top-k teachers, cache), :mod:`divergent.rl` (policy KL,
  best-of-N), :mod:`divergent.distributions` (closed forms);
* :mod:`divergent.analysis`, :mod:`divergent.metrics`, :mod:`divergent.toy` (exact
  enumerable language models), :mod:`divergent.objectives`, :mod:`divergent.train`;
* :mod:`divergent.integrations` (Hugging Face ``Trainer`` and TRL adapters; optional extras);
* :mod:`divergent.testing` (the contract battery), :mod:`divergent.repro`,
  :mod:`divergent.papers`, :mod:`divergent.cli`.

The public names below are loaded on first use (PEP 562), so ``import divergent`` and the
command line's ``--help`` do not import torch until a function is needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from divergent._version import __version__ as __version__

_EXPORTS: dict[str, tuple[str, ...]] = {
    "divergent.categorical": (
        "Divergence",
        "FGenerator",
        "get_divergence",
        "list_divergences",
        "make_f_divergence",
        "Parameter",
        "register_divergence",
        "resolve_divergence",
    ),
    "divergent.distributions": (
        "closed_form",
        "closed_form_support",
        "ClosedFormResult",
        "exponential_family_kl",
        "integral_kl",
    ),
    "divergent.engine": (
        "compile_mode",
        "engine_mode",
        "fused_linear_divergence",
        "set_compile",
        "set_engine",
        "vocab_parallel_divergence",
    ),
    "divergent.functional": (
        "alpha",
        "chunked_divergence",
        "divergence",
        "f_divergence",
        "hellinger",
        "jeffreys",
        "js",
        "kl",
        "neyman_chi2",
        "pearson_chi2",
        "renyi",
        "reverse_kl",
        "skew_kl",
        "skew_reverse_kl",
        "soft_cross_entropy",
        "tv",
    ),
    "divergent.objectives": (
        "f_distill_loss",
        "f_dpo_loss",
        "fused_token_distillation_loss",
        "grpo_loss",
        "kd_loss",
        "make_objective",
        "token_distillation_loss",
    ),
    "divergent.rl": (
        "kl_penalty_reward",
        "policy_kl",
        "reference_sample_kl",
    ),
    "divergent.samples": (
        "cauchy_schwarz",
        "cauchy_schwarz_mutual_information",
        "conditional_cauchy_schwarz",
        "energy_distance",
        "IntervalEstimate",
        "kde_bandwidth",
        "kde_kl",
        "kde_log_density",
        "knn_entropy",
        "knn_kl",
        "knn_renyi",
        "median_heuristic",
        "mmd",
        "subsampling_ci",
    ),
    "divergent.teacher": (
        "sparse_divergence",
        "TeacherCacheError",
        "TeacherCacheReader",
        "TeacherCacheWriter",
        "topk_logprobs",
    ),
    "divergent.transport": (
        "sinkhorn",
        "sinkhorn_divergence",
        "sinkhorn_solve",
        "sinkhorn_unbalanced",
        "SinkhornResult",
        "uld_distance",
        "wasserstein_1d",
    ),
}

_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted([*_MODULE_OF, "__version__"])


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access (module-level ``__getattr__``)."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'divergent' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # the same names, visible to type checkers and IDEs
    from divergent.categorical import (
        Divergence as Divergence,
    )
    from divergent.categorical import (
        FGenerator as FGenerator,
    )
    from divergent.categorical import (
        Parameter as Parameter,
    )
    from divergent.categorical import (
        get_divergence as get_divergence,
    )
    from divergent.categorical import (
        list_divergences as list_divergences,
    )
    from divergent.categorical import (
        make_f_divergence as make_f_divergence,
    )
    from divergent.categorical import (
        register_divergence as register_divergence,
    )
    from divergent.categorical import (
        resolve_divergence as resolve_divergence,
    )
    from divergent.distributions import (
        ClosedFormResult as ClosedFormResult,
    )
    from divergent.distributions import (
        closed_form as closed_form,
    )
    from divergent.distributions import (
        closed_form_support as closed_form_support,
    )
    from divergent.distributions import (
        exponential_family_kl as exponential_family_kl,
    )
    from divergent.distributions import (
        integral_kl as integral_kl,
    )
    from divergent.engine import (
        compile_mode as compile_mode,
    )
    from divergent.engine import (
        engine_mode as engine_mode,
    )
    from divergent.engine import (
        fused_linear_divergence as fused_linear_divergence,
    )
    from divergent.engine import (
        set_compile as set_compile,
    )
    from divergent.engine import (
        set_engine as set_engine,
    )
    from divergent.engine import (
        vocab_parallel_divergence as vocab_parallel_divergence,
    )
    from divergent.functional import (
        alpha as alpha,
    )
    from divergent.functional import (
        chunked_divergence as chunked_divergence,
    )
    from divergent.functional import (
        divergence as divergence,
    )
    from divergent.functional import (
        f_divergence as f_divergence,
    )
    from divergent.functional import (
        hellinger as hellinger,
    )
    from divergent.functional import (
        jeffreys as jeffreys,
    )
    from divergent.functional import (
        js as js,
    )
    from divergent.functional import (
        kl as kl,
    )
    from divergent.functional import (
        neyman_chi2 as neyman_chi2,
    )
    from divergent.functional import (
        pearson_chi2 as pearson_chi2,
    )
    from divergent.functional import (
        renyi as renyi,
    )
    from divergent.functional import (
        reverse_kl as reverse_kl,
    )
    from divergent.functional import (
        skew_kl as skew_kl,
    )
    from divergent.functional import (
        skew_reverse_kl as skew_reverse_kl,
    )
    from divergent.functional import (
        soft_cross_entropy as soft_cross_entropy,
    )
    from divergent.functional import (
        tv as tv,
    )
    from divergent.objectives import (
        f_distill_loss as f_distill_loss,
    )
    from divergent.objectives import (
        f_dpo_loss as f_dpo_loss,
    )
    from divergent.objectives import (
        fused_token_distillation_loss as fused_token_distillation_loss,
    )
    from divergent.objectives import (
        grpo_loss as grpo_loss,
    )
    from divergent.objectives import (
        kd_loss as kd_loss,
    )
    from divergent.objectives import (
        make_objective as make_objective,
    )
    from divergent.objectives import (
        token_distillation_loss as token_distillation_loss,
    )
    from divergent.rl import (
        kl_penalty_reward as kl_penalty_reward,
    )
    from divergent.rl import (
        policy_kl as policy_kl,
    )
    from divergent.rl import (
        reference_sample_kl as reference_sample_kl,
    )
    from divergent.samples import (
        IntervalEstimate as IntervalEstimate,
    )
    from divergent.samples import (
        cauchy_schwarz as cauchy_schwarz,
    )
    from divergent.samples import (
        cauchy_schwarz_mutual_information as cauchy_schwarz_mutual_information,
    )
    from divergent.samples import (
        conditional_cauchy_schwarz as conditional_cauchy_schwarz,
    )
    from divergent.samples import (
        energy_distance as energy_distance,
    )
    from divergent.samples import (
        kde_bandwidth as kde_bandwidth,
    )
    from divergent.samples import (
        kde_kl as kde_kl,
    )
    from divergent.samples import (
        kde_log_density as kde_log_density,
    )
    from divergent.samples import (
        knn_entropy as knn_entropy,
    )
    from divergent.samples import (
        knn_kl as knn_kl,
    )
    from divergent.samples import (
        knn_renyi as knn_renyi,
    )
    from divergent.samples import (
        median_heuristic as median_heuristic,
    )
    from divergent.samples import (
        mmd as mmd,
    )
    from divergent.samples import (
        subsampling_ci as subsampling_ci,
    )
    from divergent.teacher import (
        TeacherCacheError as TeacherCacheError,
    )
    from divergent.teacher import (
        TeacherCacheReader as TeacherCacheReader,
    )
    from divergent.teacher import (
        TeacherCacheWriter as TeacherCacheWriter,
    )
    from divergent.teacher import (
        sparse_divergence as sparse_divergence,
    )
    from divergent.teacher import (
        topk_logprobs as topk_logprobs,
    )
    from divergent.transport import (
        SinkhornResult as SinkhornResult,
    )
    from divergent.transport import (
        sinkhorn as sinkhorn,
    )
    from divergent.transport import (
        sinkhorn_divergence as sinkhorn_divergence,
    )
    from divergent.transport import (
        sinkhorn_solve as sinkhorn_solve,
    )
    from divergent.transport import (
        sinkhorn_unbalanced as sinkhorn_unbalanced,
    )
    from divergent.transport import (
        uld_distance as uld_distance,
    )
    from divergent.transport import (
        wasserstein_1d as wasserstein_1d,
    )
