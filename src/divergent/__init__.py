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
* :mod:`divergent.analysis`, :mod:`divergent.objectives`, :mod:`divergent.train`;
* :mod:`divergent.testing` (the contract battery), :mod:`divergent.repro`,
  :mod:`divergent.papers`, :mod:`divergent.cli`.
"""

from divergent._version import __version__
from divergent.categorical import (
    Divergence,
    FGenerator,
    Parameter,
    get_divergence,
    list_divergences,
    make_f_divergence,
    register_divergence,
    resolve_divergence,
)
from divergent.distributions import (
    ClosedFormResult,
    closed_form,
    closed_form_support,
    exponential_family_kl,
)
from divergent.engine import (
    compile_mode,
    engine_mode,
    fused_linear_divergence,
    set_compile,
    set_engine,
    vocab_parallel_divergence,
)
from divergent.functional import (
    alpha,
    chunked_divergence,
    divergence,
    f_divergence,
    hellinger,
    jeffreys,
    js,
    kl,
    neyman_chi2,
    pearson_chi2,
    renyi,
    reverse_kl,
    skew_kl,
    skew_reverse_kl,
    soft_cross_entropy,
    tv,
)
from divergent.rl import kl_penalty_reward, policy_kl, reference_sample_kl
from divergent.samples import (
    IntervalEstimate,
    cauchy_schwarz,
    cauchy_schwarz_mutual_information,
    conditional_cauchy_schwarz,
    energy_distance,
    kde_bandwidth,
    kde_kl,
    kde_log_density,
    knn_entropy,
    knn_kl,
    knn_renyi,
    median_heuristic,
    mmd,
    subsampling_ci,
)
from divergent.teacher import (
    TeacherCacheError,
    TeacherCacheReader,
    TeacherCacheWriter,
    sparse_divergence,
    topk_logprobs,
)
from divergent.transport import (
    SinkhornResult,
    sinkhorn,
    sinkhorn_divergence,
    sinkhorn_solve,
    sinkhorn_unbalanced,
    uld_distance,
    wasserstein_1d,
)

__all__ = [
    "ClosedFormResult",
    "Divergence",
    "FGenerator",
    "IntervalEstimate",
    "Parameter",
    "SinkhornResult",
    "TeacherCacheError",
    "TeacherCacheReader",
    "TeacherCacheWriter",
    "__version__",
    "alpha",
    "cauchy_schwarz",
    "cauchy_schwarz_mutual_information",
    "chunked_divergence",
    "closed_form",
    "closed_form_support",
    "compile_mode",
    "conditional_cauchy_schwarz",
    "divergence",
    "energy_distance",
    "engine_mode",
    "exponential_family_kl",
    "f_divergence",
    "fused_linear_divergence",
    "get_divergence",
    "hellinger",
    "jeffreys",
    "js",
    "kde_bandwidth",
    "kde_kl",
    "kde_log_density",
    "kl",
    "kl_penalty_reward",
    "knn_entropy",
    "knn_kl",
    "knn_renyi",
    "list_divergences",
    "make_f_divergence",
    "median_heuristic",
    "mmd",
    "neyman_chi2",
    "pearson_chi2",
    "policy_kl",
    "reference_sample_kl",
    "register_divergence",
    "renyi",
    "resolve_divergence",
    "reverse_kl",
    "set_compile",
    "set_engine",
    "sinkhorn",
    "sinkhorn_divergence",
    "sinkhorn_solve",
    "sinkhorn_unbalanced",
    "skew_kl",
    "skew_reverse_kl",
    "soft_cross_entropy",
    "sparse_divergence",
    "subsampling_ci",
    "topk_logprobs",
    "tv",
    "uld_distance",
    "vocab_parallel_divergence",
    "wasserstein_1d",
]
