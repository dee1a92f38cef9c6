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
from divergent.objectives.registry import ObjectiveSpec as ObjectiveSpec
from divergent.objectives.registry import list_objectives as list_objectives
from divergent.objectives.registry import make_objective as make_objective
from divergent.objectives.registry import objective_spec as objective_spec
from divergent.objectives.registry import register_objective as register_objective
