r"""TRL adapters: TRL's trainers with the divergence as a swappable knob.

* :class:`DivergenceDistillationTrainer` subclasses ``trl.DistillationTrainer`` (on-policy
  distillation, GKD: Agarwal et al. 2024, arXiv:2306.13649) and keeps its generation machinery
  (student completions, vLLM, tools, multimodal inputs, DDP / FSDP / DeepSpeed through
  Accelerate); its ``beta``-only generalised-JSD loss is replaced by any registered divergence
  through :func:`divergent.objectives.token.fused_token_distillation_loss` (hidden states and
  ``lm_head`` weights, never the (B, T, V) logits).

TRL's ``beta`` maps onto the library's divergences as: ``beta=0`` → ``"kl"`` (KL(teacher‖
student)), ``beta=1`` → ``"reverse_kl"``, ``0 < beta < 1`` → ``"js"`` with the same ``beta``
(mixture :math:`\beta P_\text{teacher} + (1-\beta) Q_\text{student}`).

``transformers`` and ``trl`` are optional extras (``divergent[trl]``); this module imports them
at the top, so importing it without them raises ``ImportError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from trl import DistillationTrainer

from divergent.categorical import DivergenceLike, resolve_divergence
from divergent.objectives.token import (
    fused_token_distillation_loss,
    logit_transform_from_config,
    token_distillation_loss,
)

__all__ = [
    "DivergenceDistillationTrainer",
    "divergence_for_trl_beta",
]

DivergenceArg = DivergenceLike | Callable[[Tensor], Tensor]

_MULTIMODAL_KEYS = (
    "pixel_values",
    "image_grid_thw",
    "pixel_attention_mask",
    "spatial_shapes",
    "image_sizes",
    "token_type_ids",
    "mm_token_type_ids",
    "image_position_ids",
)

ENTROPY_CHUNK_ELEMENTS = 1 << 22
"""Logits elements per chunk when the student's entropy is logged (no gradient)."""


def divergence_for_trl_beta(beta: float) -> tuple[str, dict[str, float]]:
    r"""The library divergence equal to TRL's generalised JSD with interpolation ``beta``.

    TRL (``generalized_jsd_loss``, ``DistillationTrainer``) computes, with
    :math:`M = \beta P + (1-\beta) Q` (P the teacher, Q the student),
    :math:`\beta\,\mathrm{KL}(P\|M) + (1-\beta)\,\mathrm{KL}(Q\|M)` for ``0 < beta < 1``, the
    forward KL(P‖Q) for ``beta=0`` and the reverse KL(Q‖P) for ``beta=1`` (Agarwal et al. 2024,
    GKD, arXiv:2306.13649, Eq. 1).

    Args:
        beta: TRL's ``beta`` in [0, 1].

    Returns:
        ``(name, params)``: ``("kl", {})``, ``("reverse_kl", {})`` or ``("js", {"beta": beta})``.

    Example:
        >>> divergence_for_trl_beta(0.5)
        ('js', {'beta': 0.5})
    """
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0.0 <= beta <= 1.0:
        raise ValueError(
            f"`beta` must be a number in [0, 1] (TRL's JSD interpolation), got {beta!r}"
        )
    if beta == 0.0:
        return "kl", {}
    if beta == 1.0:
        return "reverse_kl", {}
    return "js", {"beta": float(beta)}


def _transform(z: Tensor, scale: float | None, cap: float | None) -> Tensor:
    if scale is not None:
        z = z * scale
    if cap is not None:
        z = cap * torch.tanh(z / cap)
    return z


@torch.no_grad()
def _entropy_sum(
    hidden: Tensor, head: torch.nn.Module, config: Any, temperature: float, valid: Tensor
) -> Tensor:
    """Σ over valid positions of the student's entropy H(softmax(z/T)), in chunks (no grad)."""
    weight, bias = head.weight, getattr(head, "bias", None)
    scale, cap = logit_transform_from_config(config)
    rows = hidden.reshape(-1, hidden.shape[-1])[valid.reshape(-1)]
    step = max(1, ENTROPY_CHUNK_ELEMENTS // weight.shape[0])
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, rows.shape[0], step):
        z = rows[start : start + step].float() @ weight.float().T
        if bias is not None:
            z += bias.float()
        log_q = torch.log_softmax(_transform(z, scale, cap) / temperature, dim=-1)
        total -= (log_q.exp() * log_q).sum()
    return total


class DivergenceDistillationTrainer(DistillationTrainer):
    r"""``trl.DistillationTrainer`` whose loss is any registered divergence D(teacher‖student).

    The student generates the completions (TRL's on-policy machinery, unchanged); at each
    completion position the loss is

    .. math::
        \frac1N\sum_{(b,t)\in\text{completion}} D\big(\mathrm{softmax}(z^{(t)}_{b,t}/T)\,\big\|\,
            \mathrm{softmax}(z^{(s)}_{b,t}/T)\big),

    with :math:`z = \mathrm{cap}(\lambda(hW^\top + b))` read from each model's config as TRL
    does, T = ``args.temperature`` (no T² factor, as TRL) and N the global count of completion
    tokens TRL computes (``num_items_in_batch``). It is computed by
    :func:`divergent.objectives.token.fused_token_distillation_loss` from the two models' last
    hidden states and ``lm_head`` weights (only the completion positions are projected, a chunk
    at a time). When the two models use different soft-caps (which the fused path does not
    support) the valid positions' logits are formed and
    :func:`~divergent.objectives.token.token_distillation_loss` is used.

    Args:
        *args, **kwargs: as ``trl.DistillationTrainer`` (``model``, ``teacher_model``,
            ``args`` a ``trl.DistillationConfig``, ``train_dataset`` with a ``"prompt"``
            column, ``processing_class`` ...). The vocabularies must match (TRL checks it).
        divergence: a registered divergence name, a :class:`~divergent.Divergence` or a
            generator callable; None (default) uses TRL's ``args.beta`` through
            :func:`divergence_for_trl_beta`, which reproduces TRL's loss.
        divergence_params: the divergence's parameters (``{"beta": 0.3}`` for ``"js"``,
            ``{"alpha": 0.5}`` ...).
        chunk_size: rows per fused matmul chunk (default: the engine's).

    Raises:
        ValueError: an unknown divergence or invalid parameters (before the models are loaded).

    Example::

        trainer = DivergenceDistillationTrainer(
            model=student, teacher_model=teacher, args=DistillationConfig(...),
            train_dataset=prompts, processing_class=tokenizer,
            divergence="alpha", divergence_params={"alpha": 0.5},
        )
        trainer.train()

    References:
        Agarwal et al. 2024, On-Policy Distillation of Language Models: Learning from
        Self-Generated Mistakes (GKD), arXiv:2306.13649.
    """

    def __init__(
        self,
        *args: Any,
        divergence: DivergenceArg | None = None,
        divergence_params: dict[str, Any] | None = None,
        chunk_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        if divergence_params is not None and not isinstance(divergence_params, dict):
            raise ValueError(
                "`divergence_params` must be a dict of the divergence's parameters, got "
                f"{type(divergence_params).__name__}"
            )
        if divergence is None and divergence_params:
            raise ValueError(
                "`divergence_params` needs `divergence`; without it TRL's `args.beta` is used"
            )
        if divergence is not None:
            resolve_divergence(divergence).bind(dict(divergence_params or {}))
        super().__init__(*args, **kwargs)
        if divergence is None:
            divergence, divergence_params = divergence_for_trl_beta(self.beta)
        self.divergence = divergence
        self.divergence_params = dict(divergence_params or {})
        self.chunk_size = chunk_size

    def _compute_loss(
        self, unwrapped_student: Any, inputs: dict[str, Any], num_items_in_batch: Any
    ) -> tuple[Tensor, Tensor, Tensor]:
        """TRL's ``_compute_loss`` with the divergence swapped: (loss, entropy sum, n valid)."""
        input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        loss_mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            loss_mask = loss_mask * inputs["tool_mask"]
        logits_to_keep = inputs["completion_ids"].size(1)
        multimodal = {k: inputs[k] for k in _MULTIMODAL_KEYS if k in inputs}
        student_hidden = self._get_last_hidden_state(
            unwrapped_student, input_ids, attention_mask, logits_to_keep, **multimodal
        )
        self.teacher_model.eval()
        unwrapped_teacher = self.accelerator.unwrap_model(self.teacher_model)
        with torch.no_grad():
            teacher_hidden = self._forward_redirection(
                self.teacher_model,
                unwrapped_teacher,
                self._get_last_hidden_state,
                unwrapped_teacher,
                input_ids,
                attention_mask,
                logits_to_keep,
                **multimodal,
            )
        student_head = unwrapped_student.get_output_embeddings()
        teacher_head = unwrapped_teacher.get_output_embeddings()
        device = student_head.weight.device
        if teacher_head.weight.device != device:
            raise ValueError(
                f"the student `lm_head` is on {device} but the teacher's is on "
                f"{teacher_head.weight.device}; place both heads on one device"
            )
        student_hidden = student_hidden.to(device)
        teacher_hidden = teacher_hidden.to(device)
        valid = loss_mask.to(device) != 0
        labels = torch.where(valid, 0, -100)
        student_config = unwrapped_student.config.get_text_config()
        teacher_config = unwrapped_teacher.config.get_text_config()
        scale_s, cap_s = logit_transform_from_config(student_config)
        scale_t, cap_t = logit_transform_from_config(teacher_config)
        common = dict(
            divergence=self.divergence,
            temperature=self.temperature,
            num_items_in_batch=num_items_in_batch,
            **self.divergence_params,
        )
        if cap_s == cap_t:
            loss = fused_token_distillation_loss(
                student_hidden,
                student_head,
                teacher_hidden,
                teacher_head,
                labels,
                student_config=student_config,
                teacher_config=teacher_config,
                chunk_size=self.chunk_size,
                **common,
            )
        else:  # different soft-caps: form the logits of the valid positions only
            z_s = _transform(student_head(student_hidden[valid]), scale_s, cap_s)
            z_t = _transform(teacher_head(teacher_hidden[valid]), scale_t, cap_t)
            loss = token_distillation_loss(z_s, z_t, **common)
        entropy = _entropy_sum(
            student_hidden.detach(), student_head, student_config, self.temperature, valid
        )
        return loss, entropy, valid.sum()
