r"""TRL adapters: TRL's trainers with the divergence as a swappable knob.

* :class:`DivergenceDistillationTrainer` subclasses ``trl.DistillationTrainer`` (on-policy
  distillation, GKD: Agarwal et al. 2024, arXiv:2306.13649) and keeps its generation machinery
  (student completions, vLLM, tools, multimodal inputs, DDP / FSDP / DeepSpeed through
  Accelerate); its ``beta``-only generalised-JSD loss is replaced by any registered divergence
  through :func:`divergent.objectives.token.fused_token_distillation_loss` (hidden states and
  ``lm_head`` weights, never the (B, T, V) logits).

* :class:`FDivergenceDPOTrainer` subclasses ``trl.DPOTrainer`` (its data pipeline, reference
  model, precomputed reference log-probabilities, PEFT) with the loss of
  :func:`divergent.objectives.preference.f_dpo_loss`: DPO under any registered f-divergence
  D(π_ref‖π) (Wang et al. 2024, f-DPO, arXiv:2309.16240), where TRL offers four.
* :class:`KLConfigurableGRPOTrainer` subclasses ``trl.GRPOTrainer`` with the KL options of
  :func:`divergent.objectives.policy_gradient.grpo_loss`: the estimator (k1 / k2 / k3, and a
  straight-through gradient) and its placement (in the loss or in the reward).

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
from trl import DistillationTrainer, DPOTrainer, GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import use_adapter

from divergent.categorical import DivergenceLike, resolve_divergence
from divergent.objectives.policy_gradient import _importance_ratio, grpo_loss
from divergent.objectives.preference import f_dpo_loss
from divergent.objectives.token import (
    fused_token_distillation_loss,
    logit_transform_from_config,
    token_distillation_loss,
)

__all__ = [
    "DPO_LOSS_TYPES",
    "GRPO_LOSS_TYPES",
    "DivergenceDistillationTrainer",
    "FDivergenceDPOTrainer",
    "KLConfigurableGRPOTrainer",
    "divergence_for_trl_beta",
    "divergence_for_trl_f_divergence",
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


def _check_divergence_params(
    divergence: DivergenceArg | None, divergence_params: Any, trl_setting: str
) -> None:
    """``divergence_params``: a dict, and only together with ``divergence`` (without it the
    trainer uses TRL's own ``trl_setting``); a one-line ValueError otherwise."""
    if divergence_params is not None and not isinstance(divergence_params, dict):
        raise ValueError(
            "`divergence_params` must be a dict of the divergence's parameters, got "
            f"{type(divergence_params).__name__}"
        )
    if divergence is None and divergence_params:
        raise ValueError(
            f"`divergence_params` needs `divergence`; without it TRL's `{trl_setting}` is used"
        )


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
        _check_divergence_params(divergence, divergence_params, "args.beta")
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


# ------------------------------------------------------------------------------------ DPO
DPO_LOSS_TYPES = ("sigmoid", "sigmoid_norm", "hinge", "ipo")
"""TRL ``loss_type`` values :class:`FDivergenceDPOTrainer` supports (f-DPO's pairwise forms)."""


def divergence_for_trl_f_divergence(
    f_divergence_type: str, f_alpha_divergence_coef: float = 0.5
) -> tuple[str, dict[str, float], float]:
    r"""The library divergence D(π_ref‖π) and β factor equal to TRL's DPO ``f_divergence_type``.

    TRL 1.16's scores ψ(u), :math:`u = \pi/\pi_{ref}`, against
    :func:`divergent.objectives.preference.f_dpo_score`: ``reverse_kl`` → ``"reverse_kl"``
    (log u), ``forward_kl`` → ``"kl"`` (1 − 1/u), ``alpha_divergence`` with coefficient
    :math:`\alpha_T` → ``"alpha"`` with ``alpha = 1 − α_T``, all at the same β;
    ``js_divergence`` → ``"js"`` (β_js = ½) at **twice** TRL's β (TRL's score is that of
    2·JSD; with ``loss_type="ipo"`` TRL's loss is then 4 × ours).

    Args:
        f_divergence_type: TRL's ``DPOConfig.f_divergence_type``.
        f_alpha_divergence_coef: TRL's ``DPOConfig.f_alpha_divergence_coef``.

    Returns:
        ``(name, params, beta_factor)``: use ``beta = beta_factor · args.beta``.

    Example:
        >>> divergence_for_trl_f_divergence("js_divergence")
        ('js', {'beta': 0.5}, 2.0)
    """
    if f_divergence_type == "reverse_kl":
        return "reverse_kl", {}, 1.0
    if f_divergence_type == "forward_kl":
        return "kl", {}, 1.0
    if f_divergence_type == "js_divergence":
        return "js", {"beta": 0.5}, 2.0
    if f_divergence_type == "alpha_divergence":
        if abs(f_alpha_divergence_coef - 1.0) < 1e-6:  # TRL's limit case: reverse KL
            return "reverse_kl", {}, 1.0
        alpha = 1.0 - float(f_alpha_divergence_coef)
        if alpha == 0.0:
            return "kl", {}, 1.0
        return "alpha", {"alpha": alpha}, 1.0
    allowed = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")
    raise ValueError(f"`f_divergence_type` must be one of {allowed}, got {f_divergence_type!r}")


class FDivergenceDPOTrainer(DPOTrainer):
    r"""``trl.DPOTrainer`` whose loss is f-DPO under any registered f-divergence D(π_ref‖π).

    With :math:`u = \pi_\theta(y|x)/\pi_{ref}(y|x)` (sequence log-probabilities summed over the
    completion, as TRL computes them) and the f-DPO score ψ of the divergence
    (:func:`divergent.objectives.preference.f_dpo_score`),

    .. math::
        \Delta = \psi(u_w) - \psi(u_l),\qquad
        \text{sigmoid: } -\log\sigma(\beta\Delta),\quad
        \text{hinge: } \max(0, 1 - \beta\Delta),\quad
        \text{ipo: } \big(\Delta_{/n} - \tfrac1{2\beta}\big)^2,

    where ``ipo`` and ``sigmoid_norm`` divide each score by its completion length (as TRL).
    ``args.loss_type`` may list several of :data:`DPO_LOSS_TYPES` with ``args.loss_weights``;
    ``args.ld_alpha`` (LD-DPO) is honoured; the reference model, precomputed reference
    log-probabilities and PEFT adapters work as in TRL.

    Args:
        *args, **kwargs: as ``trl.DPOTrainer`` (``model``, ``ref_model``, ``args`` a
            ``trl.DPOConfig``, ``train_dataset`` with ``prompt`` / ``chosen`` / ``rejected`` ...).
        divergence: a registered f-divergence name (P = π_ref first: ``"reverse_kl"`` is DPO,
            ``"kl"`` TRL's ``forward_kl``, ``"js"``, ``"alpha"``, ``"hellinger"``,
            ``"jeffreys"`` ...), a :class:`~divergent.Divergence` or a generator; None (default)
            maps TRL's ``args.f_divergence_type`` through
            :func:`divergence_for_trl_f_divergence` (TRL's loss).
        divergence_params: its parameters (``{"alpha": 0.3}``; ``{"beta": 0.3}`` is js's skew,
            not DPO's β, which is ``args.beta``).

    Raises:
        ValueError: a divergence that is not an f-divergence (``"renyi"``) or bad parameters;
            a ``loss_type`` outside :data:`DPO_LOSS_TYPES`; ``use_weighting`` (WPO), which
            this loss does not implement.

    References:
        Wang et al. 2024, Beyond Reverse KL: Generalizing Direct Preference Optimization with
        Diverse Divergence Constraints (f-DPO), arXiv:2309.16240; Rafailov et al. 2023, DPO,
        arXiv:2305.18290.
    """

    def __init__(
        self,
        *args: Any,
        divergence: DivergenceArg | None = None,
        divergence_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        _check_divergence_params(divergence, divergence_params, "f_divergence_type")
        if divergence is not None:  # fail before loading models: not an f-divergence, bad params
            zero = torch.zeros(1)
            f_dpo_loss(
                zero, zero, zero, zero, divergence=divergence, divergence_params=divergence_params
            )
        args_ = kwargs.get("args", args[2] if len(args) > 2 else None)
        if args_ is not None:
            bad = [t for t in args_.loss_type if t not in DPO_LOSS_TYPES]
            if bad:
                raise ValueError(
                    f"`loss_type` {bad} is not supported by FDivergenceDPOTrainer; use "
                    f"{DPO_LOSS_TYPES} (the f-DPO pairwise forms)"
                )
            if args_.use_weighting:
                raise ValueError("`use_weighting` (WPO) is not supported by FDivergenceDPOTrainer")
        super().__init__(*args, **kwargs)
        beta_factor = 1.0
        if divergence is None:
            divergence, divergence_params, beta_factor = divergence_for_trl_f_divergence(
                self.f_divergence_type, self.f_alpha_divergence_coef
            )
        self.divergence = divergence
        self.divergence_params = dict(divergence_params or {})
        self.divergence_beta = beta_factor * self.beta

    def _sequence_logps(self, per_token_logps: Tensor, completion_mask: Tensor) -> Tensor:
        """Σ over the completion of the token log-probabilities (LD-DPO weighting if set)."""
        if self.ld_alpha is None:
            return per_token_logps.sum(dim=1)
        position = completion_mask.cumsum(dim=1)
        lengths = completion_mask.sum(dim=1).long()
        chosen, rejected = lengths.chunk(2, dim=0)
        shared = torch.minimum(chosen, rejected)
        shared = torch.cat([shared, shared], dim=0).unsqueeze(1)
        in_shared = (position > 0) & (position <= shared)
        tail = position > shared
        return (per_token_logps * in_shared).sum(1) + self.ld_alpha * (per_token_logps * tail).sum(
            1
        )

    def _compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
        """TRL's DPO forward passes, then the f-DPO loss; logs TRL's reward metrics."""
        mode = "train" if self.model.training else "eval"
        non_model = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps"}
        model_kwargs = {k: v for k, v in inputs.items() if k not in non_model}
        model_kwargs["use_cache"] = False
        if self.aux_loss_enabled:
            model_kwargs["output_router_logits"] = True
        completion_mask = inputs["completion_mask"]
        shift_mask = completion_mask[..., 1:]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        seq_len = shift_mask.size(1)
        per_token_logps = outputs.log_probs[:, -seq_len:]
        chosen_logps, rejected_logps = self._sequence_logps(per_token_logps, shift_mask).chunk(2)
        if self.precompute_ref_logps:
            ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            ref_kwargs = {k: v for k, v in model_kwargs.items() if k != "output_router_logits"}
            grad_ckpt = self.args.gradient_checkpointing_kwargs
            with torch.no_grad(), disable_gradient_checkpointing(self.model, grad_ckpt):
                if self.ref_model is None:  # a PEFT model: the base (or "ref" adapter)
                    unwrapped = self.accelerator.unwrap_model(self.model)
                    adapter = "ref" if "ref" in getattr(unwrapped, "peft_config", {}) else None
                    with use_adapter(unwrapped, adapter_name=adapter):
                        ref_out = self.model(**ref_kwargs, labels=labels, fused_lm_head=True)
                else:
                    ref_out = self.ref_model(**ref_kwargs, labels=labels, fused_lm_head=True)
            ref_logps = self._sequence_logps(ref_out.log_probs[:, -seq_len:], shift_mask)
            ref_chosen, ref_rejected = ref_logps.chunk(2)
        chosen_mask, rejected_mask = completion_mask.chunk(2, dim=0)
        lengths = {
            "chosen_lengths": chosen_mask.sum(dim=1).clamp(min=1.0),
            "rejected_lengths": rejected_mask.sum(dim=1).clamp(min=1.0),
        }
        loss = 0.0
        for loss_type, weight in zip(self.loss_types, self.loss_weights, strict=True):
            per_length = loss_type in ("ipo", "sigmoid_norm")
            loss = loss + weight * f_dpo_loss(
                chosen_logps,
                rejected_logps,
                ref_chosen,
                ref_rejected,
                divergence=self.divergence,
                divergence_params=self.divergence_params,
                beta=self.divergence_beta,
                loss_type="sigmoid" if loss_type == "sigmoid_norm" else loss_type,
                **(lengths if per_length else {}),
            )
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss
        chosen_rewards = self.beta * (chosen_logps - ref_chosen).detach()
        rejected_rewards = self.beta * (rejected_logps - ref_rejected).detach()
        gather = self.accelerator.gather
        metrics = self._metrics[mode]
        metrics["rewards/chosen"].append(gather(chosen_rewards).mean().item())
        metrics["rewards/rejected"].append(gather(rejected_rewards).mean().item())
        accuracy = (chosen_rewards > rejected_rewards).float()
        metrics["rewards/accuracies"].append(gather(accuracy).mean().item())
        metrics["rewards/margins"].append(gather(chosen_rewards - rejected_rewards).mean().item())
        metrics["logps/chosen"].append(gather(chosen_logps.detach()).mean().item())
        metrics["logps/rejected"].append(gather(rejected_logps.detach()).mean().item())
        if return_outputs:
            with torch.no_grad():
                outputs = model(**model_kwargs)
            return loss, outputs
        return loss


# ----------------------------------------------------------------------------------- GRPO
GRPO_LOSS_TYPES = {
    "grpo": "sequence",
    "bnpo": "token",
    "dr_grpo": "max_length",
    "dapo": "token",
    "luspo": "max_length",
}
"""TRL ``loss_type`` → :func:`~divergent.objectives.policy_gradient.grpo_loss` ``normalization``
(``max_length`` = ``max_completion_length`` for ``dr_grpo``, 1 for ``luspo``: each sequence's
token sum, then the mean over sequences)."""

_KL_ESTIMATORS = ("k1", "k2", "k3")
_KL_PLACEMENTS = ("loss", "reward")


class KLConfigurableGRPOTrainer(GRPOTrainer):
    r"""``trl.GRPOTrainer`` with a choice of KL estimator and of where the KL term goes.

    TRL's GRPO adds :math:`\beta k_3` (Schulman's k3 estimator of KL(π_θ‖π_ref)) to each token's
    loss. Here the loss is :func:`divergent.objectives.policy_gradient.grpo_loss`:

    .. math::
        \ell_{i,t} = -\min\big(\rho_{i,t} A'_{i,t},\ \mathrm{clip}(\rho_{i,t}, 1-\epsilon,
        1+\epsilon_{high}) A'_{i,t}\big) + [\texttt{kl\_in}=\text{loss}]\,\beta\,w_{i,t}k_{i,t},
        \qquad A'_{i,t} = A_{i,t} - [\texttt{kl\_in}=\text{reward}]\,\beta\,\mathrm{sg}[k_{i,t}],

    with β = ``args.beta``, ε = ``args.epsilon`` / ``args.epsilon_high``, :math:`w_{i,t}` the
    ratio :math:`\rho_{i,t}` when ``args.use_bias_correction_kl`` (TRL's default; ``grpo_loss``'s
    ``kl_importance_weight``) and 1 otherwise, and the token losses
    normalised as TRL's ``loss_type`` (``grpo``: per sequence then over sequences, ``bnpo``: over
    tokens, ``dr_grpo``: by B·``max_completion_length``, ``dapo``: by the window's token count,
    ``luspo``: summed per sequence, then the mean over sequences),
    scaled for gradient accumulation as TRL. Expected gradients on on-policy samples:
    k3 in the loss weighted by ρ → β∇KL(π_θ‖π_ref) (TRL's default, off-policy too), unweighted
    → β∇KL(π_ref‖π_θ) (a *forward*-KL gradient), k2 in the loss → β∇KL(π_θ‖π_ref), k1 in the
    reward → β∇KL(π_θ‖π_ref) (see ``grpo_loss`` for the table). With the defaults (``"k3"``,
    ``"loss"``) the loss equals TRL's, with or without ``use_bias_correction_kl``.

    Generation, rewards, group-normalised advantages, the reference model and logging are
    TRL's. Not supported here (a ``ValueError`` at construction): ``loss_type`` outside
    :data:`GRPO_LOSS_TYPES`, ``top_entropy_quantile < 1``, ``off_policy_mask_threshold``,
    ``delta`` (two-sided clipping), an entropy bonus, vLLM importance-sampling correction, and
    ``use_bias_correction_kl`` with ``beta != 0`` together with ``kl_in="reward"`` or
    ``kl_gradient`` (set it False there).

    Args:
        *args, **kwargs: as ``trl.GRPOTrainer`` (``model``, ``reward_funcs``, ``args`` a
            ``trl.GRPOConfig``, ``train_dataset`` ...).
        kl_estimator: ``"k1"`` | ``"k2"`` | ``"k3"`` (the KL value per token).
        kl_in: ``"loss"`` (TRL's placement) or ``"reward"`` (subtracted, detached, from each
            token's advantage).
        kl_gradient: with ``kl_in="loss"``, another estimator whose gradient is used
            (straight-through; e.g. k3's value with k2's reverse-KL gradient), or None.

    References:
        Shao et al. 2024, DeepSeekMath (GRPO), arXiv:2402.03300; Schulman 2020, Approximating
        KL Divergence (k1/k2/k3), http://joschu.net/blog/kl-approx.html.
    """

    def __init__(
        self,
        *args: Any,
        kl_estimator: str = "k3",
        kl_in: str = "loss",
        kl_gradient: str | None = None,
        **kwargs: Any,
    ) -> None:
        if kl_estimator not in _KL_ESTIMATORS:
            raise ValueError(
                f"`kl_estimator` must be one of {_KL_ESTIMATORS}, got {kl_estimator!r}"
            )
        if kl_in not in _KL_PLACEMENTS:
            raise ValueError(f"`kl_in` must be one of {_KL_PLACEMENTS}, got {kl_in!r}")
        if kl_gradient is not None and kl_gradient not in _KL_ESTIMATORS:
            raise ValueError(
                f"`kl_gradient` must be None or one of {_KL_ESTIMATORS}, got {kl_gradient!r}"
            )
        if kl_gradient is not None and kl_in != "loss":
            raise ValueError("`kl_gradient` applies to kl_in='loss' only")
        config = kwargs.get("args", args[2] if len(args) > 2 else None)
        if config is not None:
            _check_grpo_config(config, kl_in, kl_gradient)
        super().__init__(*args, **kwargs)
        self.kl_importance_weight = _check_grpo_config(self.args, kl_in, kl_gradient)
        self.kl_estimator = kl_estimator
        self.kl_in = kl_in
        self.kl_gradient = kl_gradient

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> Tensor:
        """TRL's log-probabilities, then :func:`grpo_loss` with the chosen KL options."""
        completion_ids = inputs["completion_ids"]
        input_ids = torch.cat([inputs["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        multimodal = {k: inputs.get(k) for k in (*_MULTIMODAL_KEYS, "num_images", "num_tiles")}
        logps, entropies, _ = self._get_per_token_logps_and_entropies(
            model,
            input_ids,
            attention_mask,
            completion_ids.size(1),
            compute_entropy=True,
            **multimodal,
        )
        old_logps = inputs.get("old_per_token_logps")
        ref_logps = inputs.get("ref_per_token_logps") if self.beta != 0.0 else None
        mode = "train" if self.model.training else "eval"
        normalization = GRPO_LOSS_TYPES[self.loss_type]
        max_length = None
        if normalization == "max_length":  # luspo: Σ over each sequence, mean over sequences
            max_length = 1 if self.loss_type == "luspo" else self.max_completion_length
        normalizer = None
        accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        if self.loss_type == "dapo":
            normalizer = (
                inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
            )
            if mode == "train":
                normalizer = normalizer * accumulation / self.args.steps_per_generation
            accumulation = 1.0
        loss = grpo_loss(
            logps,
            old_logps,
            ref_logps,
            inputs["advantages"],
            mask,
            clip_eps=self.epsilon_low,
            clip_eps_high=self.epsilon_high,
            kl_coef=self.beta,
            kl_estimator=self.kl_estimator,
            kl_gradient=self.kl_gradient,
            kl_in=self.kl_in,
            kl_importance_weight=self.kl_importance_weight,
            importance_sampling_level=self.importance_sampling_level,
            normalization=normalization,
            max_length=max_length,
            normalizer=normalizer,
        )
        keep = mask.bool()
        count = keep.sum().clamp(min=1)
        if ref_logps is not None:
            with torch.no_grad():
                log_ratio = ref_logps - logps
                per_token_kl = torch.exp(log_ratio) - log_ratio - 1
                if self.kl_importance_weight:  # TRL logs the weighted k3
                    old = logps if old_logps is None else old_logps
                    level = self.importance_sampling_level
                    per_token_kl = per_token_kl * _importance_ratio(logps, old, keep, level)
                kl = per_token_kl[keep].sum() / count
            self._metrics[mode]["kl"].append(self.accelerator.gather(kl).mean().item())
        entropy = (entropies.detach()[keep].sum() / count).reshape(())
        self._metrics[mode]["entropy"].append(self.accelerator.gather(entropy).mean().item())
        return loss / accumulation


def _check_grpo_config(config: Any, kl_in: str, kl_gradient: str | None) -> bool:
    """The GRPO options :class:`KLConfigurableGRPOTrainer` does not implement: a ValueError.

    Returns ``grpo_loss``'s ``kl_importance_weight``: TRL's ``use_bias_correction_kl`` where a
    KL term is computed (``beta != 0``)."""
    if config.loss_type not in GRPO_LOSS_TYPES:
        raise ValueError(
            f"`loss_type` {config.loss_type!r} is not supported by KLConfigurableGRPOTrainer; use "
            f"one of {tuple(GRPO_LOSS_TYPES)}"
        )
    unsupported = {
        "top_entropy_quantile": config.top_entropy_quantile < 1.0,
        "off_policy_mask_threshold": config.off_policy_mask_threshold is not None,
        "delta": config.delta is not None,
        "entropy_coef": bool(getattr(config, "entropy_coef", 0.0))
        or bool(getattr(config, "use_adaptive_entropy", False)),
        "vllm_importance_sampling_correction": bool(config.use_vllm)
        and bool(config.vllm_importance_sampling_correction),
    }
    bad = [name for name, is_set in unsupported.items() if is_set]
    if bad:
        raise ValueError(
            f"KLConfigurableGRPOTrainer does not implement {bad}; unset them or use trl.GRPOTrainer"
        )
    weighted = bool(config.use_bias_correction_kl) and config.beta != 0.0
    if weighted and (kl_in != "loss" or kl_gradient is not None):
        raise ValueError(
            "`use_bias_correction_kl` (TRL's default True) weights the KL term in the loss by the "
            "ratio; with kl_in='reward' or `kl_gradient` set it to False in the GRPOConfig"
        )
    return weighted
