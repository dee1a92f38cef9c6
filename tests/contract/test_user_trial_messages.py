"""Messages and argument handling found by a new-user trial: each test failed before its fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from divergent._validation import check_chunk_size, check_int
from divergent.objectives import group_normalized_advantages
from divergent.objectives.kdrl import linear_kd_coef
from divergent.objectives.lelp import subclass_to_class_logits
from divergent.objectives.moe_distill import load_balancing_loss
from divergent.objectives.ofa import OFALoss
from divergent.transport import sinkhorn


# -- numpy integers are integers ----------------------------------------------------------
def test_check_int_takes_numpy_integers_and_returns_a_python_int() -> None:
    value = check_int(np.int64(50), "max_iter", 1)
    assert value == 50 and type(value) is int
    assert check_chunk_size(np.int32(8)) == 8 and type(check_chunk_size(np.int32(8))) is int


@pytest.mark.parametrize("value", [True, 2.0, np.float64(3.0), "3"])
def test_check_int_still_refuses_bools_floats_and_strings(value: object) -> None:
    with pytest.raises(ValueError, match="`n` must be an integer >= 1"):
        check_int(value, "n", 1)


def test_sinkhorn_takes_a_numpy_max_iter() -> None:
    cost = torch.rand(4, 4, dtype=torch.float64)
    reference = sinkhorn(None, None, cost, 0.1, max_iter=50)
    result = sinkhorn(None, None, cost, 0.1, max_iter=np.int64(50))
    assert torch.equal(result, reference)


def test_objectives_take_numpy_integer_counts() -> None:
    rewards = torch.tensor([1.0, 0.0, 2.0, 1.0, 0.5, 0.5, 3.0, 0.0])
    assert torch.equal(
        group_normalized_advantages(rewards, np.int64(4)),
        group_normalized_advantages(rewards, 4),
    )
    assert torch.equal(
        subclass_to_class_logits(torch.zeros(1, 4), np.int64(2)),
        subclass_to_class_logits(torch.zeros(1, 4), 2),
    )
    router = torch.randn(6, 4)
    assert torch.equal(
        load_balancing_loss(router, top_k=np.int64(2)), load_balancing_loss(router, top_k=2)
    )
    assert linear_kd_coef(np.int64(5), np.int64(10)) == linear_kd_coef(5, 10)
    assert len(OFALoss(n_classes=np.int64(3), branch_dims=(np.int64(8),)).projectors) == 1
    with pytest.raises(ValueError, match="`group_size` must be an int >= 1, got True"):
        group_normalized_advantages(rewards, True)
