"""ClassifierTrainer: determinism, teacher logits once, exact in-process resume, errors."""

from __future__ import annotations

import pytest
import torch
from _train_helpers import assert_same_weights, params, toy_data, toy_models
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from divergent.objectives import make_objective
from divergent.train import CheckpointError, ClassifierTrainer, NonFiniteLossError
from divergent.train.checkpoint import load_checkpoint, save_checkpoint
from divergent.train.classifier import CHECKPOINT_NAME, epoch_order

OPTS = {"epochs": 3, "batch_size": 20, "progress": False, "lr": 1e-2}


class CountingTeacher(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.rows = 0

    def forward(self, x):
        self.rows += x.shape[0]
        return self.inner(x)


class PairDataset(Dataset):
    """A generic map-style dataset (not a TensorDataset): exercises the DataLoader path."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class Stop(Exception):
    pass


class StopAfter(nn.Module):
    """Wraps an objective; raises after ``n`` calls (a crash in the middle of training)."""

    def __init__(self, inner, n):
        super().__init__()
        self.inner, self.n, self.calls = inner, n, 0

    def forward(self, s, t, y):
        self.calls += 1
        if self.calls > self.n:
            raise Stop
        return self.inner(s, t, y)


def _run(tmp=None, objective="kd", data=None, resume=False, student=None, **extra):
    x, y = toy_data()
    teacher, fresh_student = toy_models()
    student = student or fresh_student
    obj = make_objective(objective) if isinstance(objective, str) else objective
    trainer = ClassifierTrainer(
        student,
        teacher,
        obj,
        data if data is not None else (x, y),
        checkpoint_dir=tmp,
        **{**OPTS, **extra},
    )
    return trainer, trainer.fit(resume=resume)


def test_same_seed_same_weights_and_history():
    _, a = _run(seed=3)
    _, b = _run(seed=3)
    assert_same_weights(params(a.student), params(b.student))
    assert a.history == b.history
    _, c = _run(seed=4)
    assert not torch.equal(params(a.student)["0.weight"], params(c.student)["0.weight"])


def test_epoch_order_is_a_seeded_permutation():
    order = epoch_order(5, 2, 50)
    assert sorted(order.tolist()) == list(range(50))
    assert torch.equal(order, epoch_order(5, 2, 50))
    assert not torch.equal(order, epoch_order(5, 3, 50))


def test_teacher_runs_once_without_augmentation():
    x, y = toy_data()
    teacher, student = toy_models()
    counting = CountingTeacher(teacher)
    ClassifierTrainer(student, counting, make_objective("kd"), (x, y), **OPTS).fit()
    assert counting.rows == x.shape[0]  # one pass, reused for all 3 epochs


def test_teacher_sees_every_augmented_batch():
    x, y = toy_data()
    teacher, student = toy_models()
    counting = CountingTeacher(teacher)

    def jitter(batch):
        return batch + 0.01 * torch.randn_like(batch)

    ClassifierTrainer(student, counting, make_objective("kd"), (x, y), augment=jitter, **OPTS).fit()
    assert counting.rows == 3 * x.shape[0] + 2  # every row, every epoch (+ the class check)


def test_cached_teacher_logits_match_the_teacher(tmp_path):
    x, _ = toy_data()
    _run(tmp_path)
    teacher, _ = toy_models()
    cached = load_checkpoint(tmp_path / "teacher_logits.ckpt")["logits"]
    with torch.no_grad():
        assert torch.allclose(cached, teacher(x), atol=1e-6)


def test_dataset_and_dataloader_paths_match_the_tensor_path():
    x, y = toy_data()
    _, ref = _run()
    _, via_dataset = _run(data=PairDataset(x, y))
    _, via_loader = _run(data=DataLoader(TensorDataset(x, y), batch_size=20, shuffle=True))
    assert_same_weights(params(ref.student), params(via_dataset.student))
    assert_same_weights(params(ref.student), params(via_loader.student))


@pytest.mark.parametrize("stop_after", [7, 10, 14])
def test_resume_after_a_crash_is_bit_identical(tmp_path, stop_after):
    """Crash mid-epoch (7, 14: between step checkpoints) or right after an epoch end (10)."""
    _, ref = _run(checkpoint_every=3, scheduler=_cosine)
    crashing = StopAfter(make_objective("kd"), stop_after)
    with pytest.raises(Stop):
        _run(tmp_path, objective=crashing, checkpoint_every=3, scheduler=_cosine)
    _, resumed = _run(tmp_path, resume=True, checkpoint_every=3, scheduler=_cosine)
    assert resumed.resumed_from is not None and 0 < resumed.resumed_from <= stop_after
    assert_same_weights(params(ref.student), params(resumed.student))
    assert resumed.history == ref.history


def _cosine(optimizer, total_steps):
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)


def test_checkpoint_holds_the_whole_training_state(tmp_path):
    trainer, result = _run(tmp_path, checkpoint_every=4, scheduler=_cosine)
    state = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert state["finished"] and state["global_step"] == result.global_step == 15
    assert set(state) >= {"student", "optimizer", "scheduler", "rng", "order", "position"}
    assert set(state["rng"][0]) >= {"torch", "numpy", "python"}
    assert state["scheduler"]["last_epoch"] == 15
    assert_same_weights(state["student"], params(result.student))
    again = ClassifierTrainer(result.student, None, make_objective("ce"), toy_data(), **OPTS)
    assert again.steps_per_epoch == trainer.steps_per_epoch == 5


def test_finished_checkpoint_returns_at_once(tmp_path):
    _, first = _run(tmp_path)
    _, second = _run(tmp_path, resume=True)
    assert second.resumed_from == first.global_step
    assert_same_weights(params(first.student), params(second.student))


def test_corrupt_checkpoint_is_an_error_and_is_kept(tmp_path):
    _run(tmp_path)
    path = tmp_path / CHECKPOINT_NAME
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupted"):
        _run(tmp_path, resume=True)
    assert path.read_bytes() == bytes(raw)


def test_checkpoint_from_other_settings_is_refused(tmp_path):
    _run(tmp_path)
    with pytest.raises(CheckpointError, match=r"batch_size=20.*batch_size=16"):
        _run(tmp_path, resume=True, batch_size=16)
    state = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    state["format"] = "something-else"
    save_checkpoint(tmp_path / CHECKPOINT_NAME, state)
    with pytest.raises(CheckpointError, match="not a classifier-trainer checkpoint"):
        _run(tmp_path, resume=True)


def test_class_count_mismatch():
    x, y = toy_data()
    teacher, student = toy_models(student_classes=4)
    with pytest.raises(
        ValueError, match="class-count mismatch: the teacher outputs 3 classes but the student 4"
    ):
        ClassifierTrainer(student, teacher, make_objective("kd"), (x, y), **OPTS).fit()


@pytest.mark.parametrize("bad", [-1, 3])
@pytest.mark.parametrize("generic", [False, True])
def test_labels_out_of_range(bad, generic):
    x, y = toy_data()
    y = y.clone()
    y[5] = bad
    teacher, student = toy_models()
    data = PairDataset(x, y) if generic else (x, y)
    with pytest.raises(ValueError, match=f"labels out of range: found {bad}"):
        ClassifierTrainer(student, teacher, make_objective("kd"), data, **OPTS).fit()


def test_nan_loss_stops_without_saving_the_diverged_state(tmp_path):
    x, y = toy_data()
    teacher, student = toy_models()

    calls = {"n": 0}

    def poisoned(s, t, labels):
        calls["n"] += 1
        loss = nn.functional.cross_entropy(s, labels)
        return loss * float("nan") if calls["n"] > 6 else loss

    with pytest.raises(NonFiniteLossError, match="became nan"):
        ClassifierTrainer(student, teacher, poisoned, (x, y), checkpoint_dir=tmp_path, **OPTS).fit()
    state = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert state["global_step"] == 5  # the end of the first (healthy) epoch
    assert all(torch.isfinite(v).all() for v in state["student"].values())


def test_objective_parameters_are_trained_and_checkpointed(tmp_path):
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.log_scale = nn.Parameter(torch.zeros(()))

        def forward(self, s, t, labels):
            return nn.functional.cross_entropy(s * self.log_scale.exp(), labels)

    objective = Scaled()
    _run(tmp_path, objective=objective)
    assert float(objective.log_scale.detach()) != 0.0
    state = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert torch.equal(state["objective"]["log_scale"], objective.log_scale.detach())


def test_set_epoch_is_called_for_warmup_objectives():
    seen = []

    class WarmUp(nn.Module):
        def set_epoch(self, epoch):
            seen.append(epoch)

        def forward(self, s, t, labels):
            return nn.functional.cross_entropy(s, labels)

    _run(objective=WarmUp())
    assert seen == [0, 1, 2]


def test_eval_history_and_bad_arguments():
    x, y = toy_data()
    _, result = _run(eval_data=(x, y))
    assert [h["epoch"] for h in result.history] == [1.0, 2.0, 3.0]
    assert all(0 <= h["accuracy"] <= 1 and h["nll"] > 0 for h in result.history)
    teacher, student = toy_models()
    for bad in ({"epochs": 0}, {"batch_size": 0}, {"checkpoint_every": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ClassifierTrainer(student, teacher, make_objective("kd"), (x, y), **{**OPTS, **bad})
