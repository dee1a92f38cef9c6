"""Losses built on the core: knowledge distillation (classifiers and language models),
KL-regularised RL and preference optimisation, decoding-time fusion, and the objectives of the
seed papers (pure functions plus thin ``nn.Module`` wrappers).

Every distillation loss takes ``(student_logits, teacher_logits, labels=None, *, mask,
reduction, normalizer)`` with the class axis last; the divergence term is D(teacher‖student)
computed by :func:`divergent.divergence` (any registered name or generator), so
``kd_loss(..., divergence="js")`` swaps the divergence. :func:`make_objective` builds one from
an id (``ce``, ``kd``, ``kd:<divergence>``, ``dkd``, ``dist``, ``lskd``, ``ofa``, ``pld``,
``sinkd``, ``bdkd``) as the trainer and ``divergent distill`` do.

Language models: :func:`token_distillation_loss` (labels / ``ignore_index`` /
``num_items_in_batch``, equal to TRL GKD's loss) and :func:`fused_token_distillation_loss`
(from hidden states and heads, never the B×T×V logits); DAC-KL, Math-PUMA view alignment,
LLaVA-MoD mimic and preference distillation.

Alignment (log-probabilities of sampled sequences, reference first in every divergence):
:func:`f_dpo_loss` (DPO under any f-divergence, equal to TRL's DPO), :func:`grpo_loss` (KL in
the loss or the reward, k1/k2/k3, equal to TRL's GRPO), :func:`f_dpg_loss`,
:func:`nash_mirror_prox`, :func:`rehearsal_loss` (DPH-RL), :func:`kdrl_loss`, SALSA, SuperHF,
APO, GTPO, RECAP; decoding: Dynamic Logit Fusion and USCD.
"""

from divergent.objectives._common import (
    Objective,
)
from divergent.objectives.apo import (
    apo_loss,
    dads_kl_weights,
    prompt_difficulty,
    stcr_advantage_scale,
)
from divergent.objectives.attribution import (
    factor_consistency_loss,
    gradient_x_input,
    importance_distribution,
)
from divergent.objectives.contrastive_decoding import (
    ContrastiveDecoding,
    contrastive_log_probs,
    uncertainty_gate,
    uncertainty_score,
    uscd_log_probs,
)
from divergent.objectives.dackl import (
    DACKLLoss,
    clip_teacher_log_probs,
    dackl_loss,
    most_divergent_positions,
    span_loss,
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
from divergent.objectives.fdpg import (
    f_dpg_loss,
    f_dpg_pseudo_reward,
)
from divergent.objectives.gtpo import (
    ConflictTokens,
    conflict_token_weights,
    gtpo_entropy_shaping,
    gtpo_loss,
    token_entropy,
)
from divergent.objectives.information_bottleneck import (
    CSIBLoss,
    CSIBTerms,
    cs_ib_loss,
    cs_ib_terms,
)
from divergent.objectives.integral_kl import (
    integral_kl_loss,
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
from divergent.objectives.kdrl import (
    kdrl_loss,
    linear_kd_coef,
    reward_guided_kd_mask,
)
from divergent.objectives.knowledge_tracing import (
    KnowledgeTracingTerms,
    knowledge_tracing_elbo,
    learner_type_kl,
    ou_transition,
)
from divergent.objectives.lelp import (
    LELPProjection,
    lelp_loss,
    lelp_targets,
    subclass_to_class_logits,
)
from divergent.objectives.logit_fusion import (
    LogitFusion,
    dynamic_logit_fusion,
    dynamic_logit_fusion_weights,
    fused_logits,
    logit_fusion_objective,
)
from divergent.objectives.moe_distill import (
    MimicDistillationLoss,
    load_balancing_loss,
    mimic_distillation_loss,
    preference_distillation_loss,
    sequence_log_probs,
)
from divergent.objectives.nash import (
    NashStep,
    nash_exploitability,
    nash_md_step,
    nash_mirror_prox,
    preference_against,
    regularized_nash_equilibrium,
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
from divergent.objectives.policy_gradient import (
    AdaptiveKLController,
    aggregate_token_loss,
    group_normalized_advantages,
    grpo_loss,
    policy_gradient_loss,
)
from divergent.objectives.preference import (
    PREFERENCE_LOSS_TYPES,
    f_divergences_for_preferences,
    f_dpo_loss,
    f_dpo_score,
    sft_f_divergence_loss,
)
from divergent.objectives.ranking import (
    PLDLoss,
    pld_loss,
)
from divergent.objectives.recap import (
    RecapSignals,
    RecapWeighter,
    recap_loss,
    recap_signals,
    recap_weights,
)
from divergent.objectives.registry import (
    ObjectiveSpec,
    list_objectives,
    make_objective,
    objective_spec,
    register_objective,
)
from divergent.objectives.rehearsal import (
    near_perfect_mask,
    rehearsal_estimate,
    rehearsal_loss,
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
from divergent.objectives.salsa import (
    model_soup,
    salsa_loss,
    weight_soup,
)
from divergent.objectives.score_distillation import (
    SOFTENED_REVERSE_KL,
    TimeBinnedRatioNormalizer,
    discriminator_density_ratio,
    f_distill_loss,
    f_distill_weights,
    f_divergence_weight,
    gan_generator_loss,
    normalize_batch_weights,
    ratio_discriminator_loss,
    score_distillation_loss,
)
from divergent.objectives.sinkhorn import (
    SinKDLoss,
    batch_sinkhorn_distance,
    sinkd_loss,
)
from divergent.objectives.sparse_autoencoder import (
    VariationalSAETerms,
    dead_latent_fraction,
    gaussian_prior_kl,
    max_cosine_similarity,
    mean_pairwise_cosine,
    reparameterize,
    sae_reconstruction_loss,
    topk_activation,
    variational_sae_loss,
    variational_sae_terms,
)
from divergent.objectives.superhf import (
    superhf_loss,
    superhf_select,
)
from divergent.objectives.token import (
    fused_token_distillation_loss,
    logit_transform_from_config,
    token_distillation_loss,
)
from divergent.objectives.view_alignment import (
    ViewAlignmentLoss,
    math_puma_loss,
    view_alignment_loss,
    z_normalize_logits,
)

__all__ = [
    "PREFERENCE_LOSS_TYPES",
    "SOFTENED_REVERSE_KL",
    "AdaptiveKLController",
    "BDKDLoss",
    "CSIBLoss",
    "CSIBTerms",
    "ConflictTokens",
    "ContrastiveDecoding",
    "CrossEntropyLoss",
    "DACKLLoss",
    "DISTLoss",
    "DKDLoss",
    "KDLoss",
    "KLDROLoss",
    "KnowledgeTracingTerms",
    "LELPProjection",
    "LSKDLoss",
    "LogitFusion",
    "MimicDistillationLoss",
    "NashStep",
    "OFALoss",
    "Objective",
    "ObjectiveSpec",
    "OnlineLosses",
    "PLDLoss",
    "PriorKLEntropyLoss",
    "PriorKLEntropyTerms",
    "RecapSignals",
    "RecapWeighter",
    "SinKDLoss",
    "TimeBinnedRatioNormalizer",
    "VariationalSAETerms",
    "ViewAlignmentLoss",
    "aggregate_token_loss",
    "apo_loss",
    "batch_sinkhorn_distance",
    "bdkd_loss",
    "bdkd_online_losses",
    "bdkd_reverse_weights",
    "class_proportions",
    "clip_teacher_log_probs",
    "conflict_token_weights",
    "contrastive_log_probs",
    "cross_entropy_loss",
    "cs_ib_loss",
    "cs_ib_terms",
    "dackl_loss",
    "dads_kl_weights",
    "dead_latent_fraction",
    "discriminator_density_ratio",
    "dist_loss",
    "dkd_loss",
    "dkd_terms",
    "dro_cross_entropy",
    "dynamic_logit_fusion",
    "dynamic_logit_fusion_weights",
    "f_distill_loss",
    "f_distill_weights",
    "f_divergence_weight",
    "f_divergences_for_preferences",
    "f_dpg_loss",
    "f_dpg_pseudo_reward",
    "f_dpo_loss",
    "f_dpo_score",
    "factor_consistency_loss",
    "fused_logits",
    "fused_token_distillation_loss",
    "gan_generator_loss",
    "gaussian_prior_kl",
    "gradient_x_input",
    "group_normalized_advantages",
    "grpo_loss",
    "gtpo_entropy_shaping",
    "gtpo_loss",
    "importance_distribution",
    "integral_kl_loss",
    "kd_loss",
    "kdrl_loss",
    "kl_dro_loss",
    "kl_dro_objective",
    "kl_dro_weights",
    "knowledge_tracing_elbo",
    "learner_type_kl",
    "lelp_loss",
    "lelp_targets",
    "linear_kd_coef",
    "list_objectives",
    "load_balancing_loss",
    "logit_fusion_objective",
    "logit_transform_from_config",
    "lskd_loss",
    "make_objective",
    "math_puma_loss",
    "max_cosine_similarity",
    "mean_pairwise_cosine",
    "mimic_distillation_loss",
    "model_soup",
    "most_divergent_positions",
    "mutual_kd_losses",
    "nash_exploitability",
    "nash_md_step",
    "nash_mirror_prox",
    "near_perfect_mask",
    "normalize_batch_weights",
    "objective_spec",
    "ofa_loss",
    "ou_transition",
    "pearson_correlation",
    "pld_loss",
    "policy_gradient_loss",
    "preference_against",
    "preference_distillation_loss",
    "prior_kl_entropy_loss",
    "prior_kl_entropy_terms",
    "prompt_difficulty",
    "ratio_discriminator_loss",
    "recap_loss",
    "recap_signals",
    "recap_weights",
    "register_objective",
    "regularized_nash_equilibrium",
    "rehearsal_estimate",
    "rehearsal_loss",
    "reparameterize",
    "reward_guided_kd_mask",
    "sae_reconstruction_loss",
    "salsa_loss",
    "score_distillation_loss",
    "sequence_log_probs",
    "sft_f_divergence_loss",
    "sinkd_loss",
    "span_loss",
    "standardize_logits",
    "stcr_advantage_scale",
    "subclass_to_class_logits",
    "superhf_loss",
    "superhf_select",
    "token_distillation_loss",
    "token_entropy",
    "topk_activation",
    "uncertainty_gate",
    "uncertainty_score",
    "uscd_log_probs",
    "variational_sae_loss",
    "variational_sae_terms",
    "view_alignment_loss",
    "weight_soup",
    "z_normalize_logits",
]
