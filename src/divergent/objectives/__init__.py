"""divergent.objectives"""

# distillation objectives and their registry (ids for trainers and the CLI)
from divergent.objectives._common import Objective as Objective
from divergent.objectives.dkd import DKDLoss as DKDLoss
from divergent.objectives.dkd import dkd_loss as dkd_loss
from divergent.objectives.dkd import dkd_terms as dkd_terms
from divergent.objectives.kd import CrossEntropyLoss as CrossEntropyLoss
from divergent.objectives.kd import KDLoss as KDLoss
from divergent.objectives.kd import LSKDLoss as LSKDLoss
from divergent.objectives.kd import cross_entropy_loss as cross_entropy_loss
from divergent.objectives.kd import kd_loss as kd_loss
from divergent.objectives.kd import lskd_loss as lskd_loss
from divergent.objectives.kd import standardize_logits as standardize_logits
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
from divergent.objectives.sinkhorn import SinKDLoss as SinKDLoss
from divergent.objectives.sinkhorn import batch_sinkhorn_distance as batch_sinkhorn_distance
from divergent.objectives.sinkhorn import sinkd_loss as sinkd_loss
