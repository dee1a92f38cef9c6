"""Messages and argument handling found by a new-user trial: each test failed before its fix."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import divergent
import divergent.objectives as objectives
from divergent._validation import check_chunk_size, check_int
from divergent.objectives import (
    KDLoss,
    f_dpo_loss,
    fused_token_distillation_loss,
    group_normalized_advantages,
    kd_loss,
    token_distillation_loss,
)
from divergent.objectives.kdrl import linear_kd_coef
from divergent.objectives.lelp import subclass_to_class_logits
from divergent.objectives.moe_distill import load_balancing_loss, sequence_log_probs
from divergent.objectives.ofa import OFALoss
from divergent.objectives.superhf import superhf_loss
from divergent.samples.knn import knn_entropy, knn_kl
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


# -- ignore_index is validated once, for every objective -----------------------------------
def _lm_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 3, 5, generator=g), torch.randn(2, 3, 5, generator=g)
    return student, teacher, torch.tensor([[1, 2, -100], [0, 4, 3]])


@pytest.mark.parametrize(
    "loss", ["kd_loss", "dkd_loss", "bdkd_loss", "pld_loss", "dist_loss", "ofa_loss"]
)
@pytest.mark.parametrize("bad", [True, 2.5, "1"])
def test_row_objectives_refuse_a_non_integer_ignore_index(loss: str, bad: object) -> None:
    student, teacher, labels = _lm_batch()
    message = re.escape(f"`ignore_index` must be an integer or None, got {bad!r}")
    with pytest.raises(ValueError, match=message):
        getattr(objectives, loss)(student, teacher, labels, ignore_index=bad)


def test_row_objectives_take_none_and_numpy_ignore_index() -> None:
    student, teacher, labels = _lm_batch()
    assert torch.equal(
        kd_loss(student, teacher, labels, ignore_index=np.int64(-100)),
        kd_loss(student, teacher, labels, ignore_index=-100),
    )
    kd_loss(student, teacher, labels.clamp(min=0), ignore_index=None)
    with pytest.raises(ValueError, match="`ignore_index` must be an integer or None, got True"):
        KDLoss(ignore_index=True)


@pytest.mark.parametrize("bad", [True, 2.5, "1", None])
def test_label_position_losses_refuse_a_non_integer_ignore_index(bad: object) -> None:
    student, teacher, labels = _lm_batch()
    message = re.escape(f"`ignore_index` must be an integer, got {bad!r}")
    with pytest.raises(ValueError, match=message):
        token_distillation_loss(student, teacher, labels, ignore_index=bad)
    with pytest.raises(ValueError, match=message):
        sequence_log_probs(student, labels, ignore_index=bad)
    with pytest.raises(ValueError, match=message):
        superhf_loss(student, teacher, labels, ignore_index=bad)


# -- the token losses name the keyword they build themselves -------------------------------
@pytest.mark.parametrize(
    ("keyword", "value", "instead"),
    [
        ("mask", torch.ones(2, 3, dtype=torch.bool), "labels == ignore_index"),
        ("normalizer", 3.0, "num_items_in_batch"),
    ],
)
def test_token_losses_refuse_mask_and_normalizer_naming_the_loss(
    keyword: str, value: object, instead: str
) -> None:
    student, teacher, labels = _lm_batch()
    message = f"token_distillation_loss\\(\\) got an unexpected keyword argument '{keyword}': .*"
    with pytest.raises(TypeError, match=message + re.escape(instead)):
        token_distillation_loss(student, teacher, labels, **{keyword: value})
    hs, ht = torch.randn(2, 3, 4), torch.randn(2, 3, 6)
    ws, wt = torch.nn.Linear(4, 5), torch.nn.Linear(6, 5)
    with pytest.raises(TypeError, match="fused_" + message + re.escape(instead)):
        fused_token_distillation_loss(hs, ws, ht, wt, labels, **{keyword: value})


# -- the kNN estimators say what `k` counts, then why it is bounded ------------------------
def test_knn_k_message_reads_name_meaning_bound_reason() -> None:
    x, y = torch.randn(200, 2, dtype=torch.float64), torch.randn(150, 2, dtype=torch.float64)
    message = (
        "`k` (number of neighbours) must be an integer in [1, 150] (`x` has n = 200 points, "
        "`y` has m = 150: at most n − 1 and m neighbours exist), got -1"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        knn_kl(x, y, k=-1)
    message = (
        "`k` (number of neighbours) must be an integer in [1, 199] (`x` has n = 200 points: "
        "at most n − 1 neighbours exist), got 0"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        knn_entropy(x, k=0)
    assert float(knn_entropy(x, k=np.int64(3))) == float(knn_entropy(x, k=3))


# -- f-DPO: one message for an unknown name, suggestions among what it takes ---------------
def test_f_dpo_unknown_divergence_is_one_message_over_the_f_divergences() -> None:
    logps = -torch.rand(4, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError) as caught:
        f_dpo_loss(logps, logps, logps, logps, divergence="klx")
    message = str(caught.value)
    assert message.startswith(
        "`divergence`='klx' is not a registered f-divergence. Did you mean `kl`? Allowed: kl, "
    )
    assert "Registered" not in message and "unknown" not in message
    assert "renyi" not in message and "soft_cross_entropy" not in message
    with pytest.raises(ValueError, match=r"got 3$"):
        f_dpo_loss(logps, logps, logps, logps, divergence=3)


# -- misspelt keywords: the function, a did-you-mean over all its keywords -----------------
def test_divergence_keyword_typo_suggests_row_keywords_and_says_no_parameters() -> None:
    p, q = torch.randn(2, 4), torch.randn(2, 4)
    message = (
        "divergence `kl` got unknown parameter(s) ['temprature'] (did you mean 'temperature'?); "
        "it takes no divergence parameters"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        divergent.kl(p, q, temprature=2.0)
    with pytest.raises(ValueError, match=re.escape("(did you mean 'alpha'?); its parameters")):
        divergent.divergence("alpha", p, q, alhpa=0.5)
    with pytest.raises(ValueError, match=re.escape("(did you mean 'check_nan'?)")):
        divergent.kl(p, q, check_nans=True)


def test_divergence_keyword_typo_names_the_function_called() -> None:
    p, q = torch.randn(2, 4), torch.randn(2, 4)
    with pytest.raises(ValueError, match=re.escape("kl(): divergence `kl` got unknown")):
        divergent.kl(p, q, temprature=2.0)
    with pytest.raises(ValueError, match=re.escape("divergence(): divergence `js` got unknown")):
        divergent.divergence("js", p, q, bta=0.3)
    with pytest.raises(ValueError, match=re.escape("chunked_divergence(): divergence `kl`")):
        divergent.chunked_divergence("kl", p, q, temprature=2.0)


def test_objective_keyword_typos_name_the_loss_and_suggest_among_all_its_keywords() -> None:
    student, teacher, labels = _lm_batch()
    with pytest.raises(
        TypeError,
        match=re.escape(
            "dkd_loss() got an unexpected keyword argument 'alhpa' (did you mean 'alpha'?)"
        ),
    ):
        objectives.dkd_loss(student, teacher, labels, alhpa=2.0)
    with pytest.raises(
        TypeError,
        match=re.escape(
            "bdkd_loss() got an unexpected keyword argument 'temprature' "
            "(did you mean 'temperature'?)"
        ),
    ):
        objectives.bdkd_loss(student, teacher, labels, temprature=2.0)
    with pytest.raises(TypeError, match=re.escape("(did you mean 'ignore_index'?)")):
        objectives.dkd_loss(student, teacher, labels, ignore_indx=-100)
    listed = "dkd_loss() got an unexpected keyword argument 'zzz' (its keywords: student_logits, "
    with pytest.raises(TypeError, match=re.escape(listed)):
        objectives.dkd_loss(student, teacher, labels, zzz=1)
    message = (
        "kd_loss(): divergence `kl` got unknown parameter(s) ['temprature'] "
        "(did you mean 'temperature'?)"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        kd_loss(student, teacher, labels, temprature=2.0)


def test_preference_losses_name_themselves_for_a_misspelt_keyword() -> None:
    logps = -torch.rand(4, generator=torch.Generator().manual_seed(2))
    message = (
        "f_dpo_loss(): divergence `reverse_kl` got unknown parameter(s) ['betta'] "
        "(did you mean 'beta'?)"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        f_dpo_loss(logps, logps, logps, logps, betta=0.3)
    with pytest.raises(ValueError, match=re.escape("(did you mean 'reduction'?)")):
        objectives.sft_f_divergence_loss(logps, logps, redution="sum")
