"""Core layer: divergences between categorical distributions, estimators, transport."""

from divergent.core import named as _named  # noqa: F401  (registers the named divergences)
from divergent.core._samples import IntervalEstimate, subsampling_ci
from divergent.core.chunked import (
    chunked_divergence,
    compile_mode,
    engine_mode,
    set_compile,
    set_engine,
)
from divergent.core.closed_form import (
    ClosedFormResult,
    closed_form,
    closed_form_support,
    exponential_family_kl,
)
from divergent.core.fdiv import f_divergence, make_f_divergence
from divergent.core.functional import (
    alpha,
    divergence,
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
from divergent.core.fused_linear import fused_linear_divergence
from divergent.core.kde import kde_bandwidth, kde_kl, kde_log_density
from divergent.core.kernel_divergences import (
    cauchy_schwarz,
    cauchy_schwarz_mutual_information,
    conditional_cauchy_schwarz,
    energy_distance,
    median_heuristic,
    mmd,
)
from divergent.core.knn import knn_entropy, knn_kl, knn_renyi
from divergent.core.ot import (
    SinkhornResult,
    sinkhorn,
    sinkhorn_divergence,
    sinkhorn_solve,
    sinkhorn_unbalanced,
    uld_distance,
    wasserstein_1d,
)
from divergent.core.policy_kl import kl_penalty_reward, policy_kl, reference_sample_kl
from divergent.core.registry import (
    Divergence,
    FGenerator,
    Parameter,
    get_divergence,
    list_divergences,
    register_divergence,
    resolve_divergence,
)
from divergent.core.sparse import sparse_divergence, topk_logprobs
from divergent.core.teacher_cache import (
    TeacherCacheError,
    TeacherCacheReader,
    TeacherCacheWriter,
)
from divergent.core.vocab_parallel import vocab_parallel_divergence

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
