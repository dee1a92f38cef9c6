"""divergent.objectives"""

# distillation objectives and their registry (ids for trainers and the CLI)
from divergent.objectives._common import Objective as Objective

# domain adaptation, robustness, attribution consistency and few-class distillation (issue 9)
from divergent.objectives.attribution import factor_consistency_loss as factor_consistency_loss
from divergent.objectives.attribution import gradient_x_input as gradient_x_input
from divergent.objectives.attribution import importance_distribution as importance_distribution
from divergent.objectives.dkd import DKDLoss as DKDLoss
from divergent.objectives.dkd import dkd_loss as dkd_loss
from divergent.objectives.dkd import dkd_terms as dkd_terms
from divergent.objectives.domain_adaptation import PriorKLEntropyLoss as PriorKLEntropyLoss
from divergent.objectives.domain_adaptation import PriorKLEntropyTerms as PriorKLEntropyTerms
from divergent.objectives.domain_adaptation import class_proportions as class_proportions
from divergent.objectives.domain_adaptation import prior_kl_entropy_loss as prior_kl_entropy_loss
from divergent.objectives.domain_adaptation import prior_kl_entropy_terms as prior_kl_entropy_terms
from divergent.objectives.kd import CrossEntropyLoss as CrossEntropyLoss
from divergent.objectives.kd import KDLoss as KDLoss
from divergent.objectives.kd import LSKDLoss as LSKDLoss
from divergent.objectives.kd import cross_entropy_loss as cross_entropy_loss
from divergent.objectives.kd import kd_loss as kd_loss
from divergent.objectives.kd import lskd_loss as lskd_loss
from divergent.objectives.kd import standardize_logits as standardize_logits
from divergent.objectives.lelp import LELPProjection as LELPProjection
from divergent.objectives.lelp import lelp_loss as lelp_loss
from divergent.objectives.lelp import lelp_targets as lelp_targets
from divergent.objectives.lelp import subclass_to_class_logits as subclass_to_class_logits
from divergent.objectives.ofa import OFALoss as OFALoss
from divergent.objectives.ofa import ofa_loss as ofa_loss
from divergent.objectives.online import BDKDLoss as BDKDLoss
from divergent.objectives.online import OnlineLosses as OnlineLosses
from divergent.objectives.online import bdkd_loss as bdkd_loss
from divergent.objectives.online import bdkd_online_losses as bdkd_online_losses
from divergent.objectives.online import bdkd_reverse_weights as bdkd_reverse_weights
from divergent.objectives.online import mutual_kd_losses as mutual_kd_losses
from divergent.objectives.ranking import PLDLoss as PLDLoss
from divergent.objectives.ranking import pld_loss as pld_loss
from divergent.objectives.registry import ObjectiveSpec as ObjectiveSpec
from divergent.objectives.registry import list_objectives as list_objectives
from divergent.objectives.registry import make_objective as make_objective
from divergent.objectives.registry import objective_spec as objective_spec
from divergent.objectives.registry import register_objective as register_objective
from divergent.objectives.relational import DISTLoss as DISTLoss
from divergent.objectives.relational import dist_loss as dist_loss
from divergent.objectives.relational import pearson_correlation as pearson_correlation
from divergent.objectives.robustness import KLDROLoss as KLDROLoss
from divergent.objectives.robustness import dro_cross_entropy as dro_cross_entropy
from divergent.objectives.robustness import kl_dro_loss as kl_dro_loss
from divergent.objectives.robustness import kl_dro_objective as kl_dro_objective
from divergent.objectives.robustness import kl_dro_weights as kl_dro_weights
from divergent.objectives.sinkhorn import SinKDLoss as SinKDLoss
from divergent.objectives.sinkhorn import batch_sinkhorn_distance as batch_sinkhorn_distance
from divergent.objectives.sinkhorn import sinkd_loss as sinkd_loss
