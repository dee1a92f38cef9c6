"""Losses built on the core: knowledge distillation, alignment regularisers, and the
objectives of the seed papers (pure functions plus thin ``nn.Module`` wrappers).

Every distillation loss takes ``(student_logits, teacher_logits, labels=None, *, mask,
reduction, normalizer)`` with the class axis last; the divergence term is D(teacher‖student)
computed by :func:`divergent.divergence` (any registered name or generator), so
``kd_loss(..., divergence="js")`` swaps the divergence. :func:`make_objective` builds one from
an id (``ce``, ``kd``, ``kd:<divergence>``, ``dkd``, ``dist``, ``lskd``, ``ofa``, ``pld``,
``sinkd``, ``bdkd``) as the trainer and ``divergent distill`` do.
"""

from divergent.objectives._common import (
    Objective,
)
from divergent.objectives.attribution import (
    factor_consistency_loss,
    gradient_x_input,
    importance_distribution,
)
from divergent.objectives.dkd import (
    DKDLoss,
    dkd_loss,
    dkd_terms,
)
from divergent.objectives.domain_adaptation import (
    PriorKLEntropyLoss,
    PriorKLEntropyTerms,
    class_proportions,
    prior_kl_entropy_loss,
    prior_kl_entropy_terms,
)
from divergent.objectives.information_bottleneck import (
    CSIBLoss,
    CSIBTerms,
    cs_ib_loss,
    cs_ib_terms,
)
from divergent.objectives.kd import (
    CrossEntropyLoss,
    KDLoss,
    LSKDLoss,
    cross_entropy_loss,
    kd_loss,
    lskd_loss,
    standardize_logits,
)
from divergent.objectives.lelp import (
    LELPProjection,
    lelp_loss,
    lelp_targets,
    subclass_to_class_logits,
)
from divergent.objectives.ofa import (
    OFALoss,
    ofa_loss,
)
from divergent.objectives.online import (
    BDKDLoss,
    OnlineLosses,
    bdkd_loss,
    bdkd_online_losses,
    bdkd_reverse_weights,
    mutual_kd_losses,
)
from divergent.objectives.ranking import (
    PLDLoss,
    pld_loss,
)
from divergent.objectives.registry import (
    ObjectiveSpec,
    list_objectives,
    make_objective,
    objective_spec,
    register_objective,
)
from divergent.objectives.relational import (
    DISTLoss,
    dist_loss,
    pearson_correlation,
)
from divergent.objectives.robustness import (
    KLDROLoss,
    dro_cross_entropy,
    kl_dro_loss,
    kl_dro_objective,
    kl_dro_weights,
)
from divergent.objectives.sinkhorn import (
    SinKDLoss,
    batch_sinkhorn_distance,
    sinkd_loss,
)

__all__ = [
    "BDKDLoss",
    "CSIBLoss",
    "CSIBTerms",
    "CrossEntropyLoss",
    "DISTLoss",
    "DKDLoss",
    "KDLoss",
    "KLDROLoss",
    "LELPProjection",
    "LSKDLoss",
    "OFALoss",
    "Objective",
    "ObjectiveSpec",
    "OnlineLosses",
    "PLDLoss",
    "PriorKLEntropyLoss",
    "PriorKLEntropyTerms",
    "SinKDLoss",
    "batch_sinkhorn_distance",
    "bdkd_loss",
    "bdkd_online_losses",
    "bdkd_reverse_weights",
    "class_proportions",
    "cross_entropy_loss",
    "cs_ib_loss",
    "cs_ib_terms",
    "dist_loss",
    "dkd_loss",
    "dkd_terms",
    "dro_cross_entropy",
    "factor_consistency_loss",
    "gradient_x_input",
    "importance_distribution",
    "kd_loss",
    "kl_dro_loss",
    "kl_dro_objective",
    "kl_dro_weights",
    "lelp_loss",
    "lelp_targets",
    "list_objectives",
    "lskd_loss",
    "make_objective",
    "mutual_kd_losses",
    "objective_spec",
    "ofa_loss",
    "pearson_correlation",
    "pld_loss",
    "prior_kl_entropy_loss",
    "prior_kl_entropy_terms",
    "register_objective",
    "sinkd_loss",
    "standardize_logits",
    "subclass_to_class_logits",
]
