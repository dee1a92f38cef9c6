r"""Token-level distillation losses for language models, with ``labels`` / ``ignore_index``.

For a student with logits :math:`s_{b,t}` and a teacher with logits :math:`u_{b,t}` over a
shared vocabulary, at the positions whose label is not ``ignore_index``,

.. math::
    \mathcal L = \frac{1}{N}\sum_{(b,t):\,y_{b,t}\ne\mathrm{ignore}}
        D\big(\mathrm{softmax}(u_{b,t}/T)\,\big\|\,\mathrm{softmax}(s_{b,t}/T)\big),

with :math:`D` any registered divergence (the teacher is P, the first argument: ``"kl"`` is
the forward KL of supervised KD, ``"reverse_kl"`` the mode-seeking KL(student‖teacher), ``"js"``
the generalised JSD of GKD with its ``beta``), and :math:`N` the number of valid tokens or the
``num_items_in_batch`` the caller passes (the token count over all gradient-accumulation
micro-batches, as ``transformers.Trainer`` passes it, so that accumulated gradients equal the
full-batch gradient).

Conventions shared with TRL (Agarwal et al. 2024, GKD, arXiv:2306.13649, as implemented by
``trl.experimental.gkd.GKDTrainer.generalized_jsd_loss`` and ``trl.DistillationTrainer``):

* **Alignment.** ``labels[b, t]`` belongs to the logits at ``[b, t]``: the labels are already
  shifted to the positions of the logits that predict them (TRL's GKD passes
  ``labels[:, 1:]`` with ``logits[:, :-1]``). Nothing is shifted here; the labels are used only
  to select positions (their values are never read as classes).
* **Temperature.** Both sides' logits are divided by ``T`` and no :math:`T^2` factor is
  applied, as in TRL's ``generalized_jsd_loss`` and ``DistillationTrainer`` (Hinton's
  :math:`T^2` scaling is in :func:`divergent.objectives.kd.kd_loss`).
* **GKD's beta.** TRL's ``beta`` in (0, 1) is ``divergence="js"`` with the same ``beta``
  (mixture :math:`M = \beta P + (1-\beta) Q`, P the teacher); its ``beta=0`` is ``"kl"`` and
  ``beta=1`` is ``"reverse_kl"``.

:func:`fused_token_distillation_loss` computes the same loss from hidden states and the two
output heads through :func:`divergent.engine.fused_linear.fused_linear_divergence`, never
forming the ``(B, T, V)`` logits: only the valid positions are projected, a chunk of rows at a
time.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from divergent._validation import (
    check_choice,
    check_float_tensor,
    check_ignore_index,
    check_reduction,
)
from divergent.categorical import DivergenceLike, resolve_divergence
from divergent.engine.fused_linear import VOCAB_POLICIES, fused_linear_divergence
from divergent.functional import divergence as _divergence

__all__ = [
    "FUSED_CHUNK_ELEMENTS",
    "VOCAB_POLICIES",
    "fused_token_distillation_loss",
    "logit_transform_from_config",
    "token_distillation_loss",
]

FUSED_CHUNK_ELEMENTS = {"cpu": 1 << 23}
"""Default logits elements per fused chunk by device type (rows = elements // V); a device not
listed uses the engine's default. 2**23 on CPU (256 rows at V = 32k) keeps the fused loss's extra
memory near 130 MiB (``benchmarks/bench_token_fused.py``: 8 % of the materialised loss's) and
is faster on 2 threads than 2**22 (128-row matmuls)."""

DivergenceArg = DivergenceLike | Callable[[Tensor], Tensor]


def _vocab_mismatch(v_student: int, v_teacher: int, student: str, teacher: str) -> ValueError:
    return ValueError(
        f"vocabulary sizes differ: `{student}` has {v_student} entries, `{teacher}` has "
        f"{v_teacher}. If both models share a tokenizer and one head is padded with extra rows, "
        "pass vocab='truncate' (uses the first min(V_s, V_t) tokens); for different tokenizers "
        "use the cross-tokenizer ULD loss divergent.transport.uld.uld_distance"
    )


def _valid_positions(labels: Any, leading: torch.Size, ignore_index: Any, device: Any) -> Tensor:
    """``labels != ignore_index`` as a bool mask of the leading shape (labels checked)."""
    ignore_index = check_ignore_index(ignore_index, allow_none=False)
    if not isinstance(labels, Tensor):
        raise ValueError(f"`labels` must be an integer torch.Tensor, got {type(labels).__name__}")
    if labels.dtype == torch.bool or torch.is_floating_point(labels) or torch.is_complex(labels):
        raise ValueError(f"`labels` must hold integer token ids, got dtype {labels.dtype}")
    if labels.shape != leading:
        raise ValueError(
            f"`labels` has shape {tuple(labels.shape)} but the logits / hidden states have "
            f"{tuple(leading)} positions; pass labels aligned (already shifted) to those positions"
        )
    return labels.to(device) != ignore_index


#: the row keywords of :func:`divergent.divergence` that the token losses replace, and by what
_REPLACED_KEYWORDS = {
    "mask": "the positions to skip are those with `labels == ignore_index` (set the labels "
    "there to ignore_index, e.g. `labels.masked_fill(~mask, -100)`)",
    "normalizer": "the mean's denominator is `num_items_in_batch`",
}


def _refuse_replaced_keywords(params: dict[str, Any], function: str) -> None:
    """A ``TypeError`` for ``mask=`` / ``normalizer=`` among a token loss's ``**params``: the
    loss builds both from ``labels`` and ``num_items_in_batch`` (a second mask would
    make the local token count and ``num_items_in_batch`` count different positions)."""
    for name, instead in _REPLACED_KEYWORDS.items():
        if name in params:
            raise TypeError(f"{function}() got an unexpected keyword argument {name!r}: {instead}")


def _check_num_items(num_items_in_batch: Any, reduction: str) -> float | Tensor | None:
    """The mean's denominator from ``num_items_in_batch`` (an int or a 0-d tensor), clamped ≥ 1.

    A count of 0 (no valid token in the whole accumulated batch) divides the sum, which is 0,
    by 1: the loss is 0 with zero gradient rather than NaN.
    """
    if num_items_in_batch is None:
        return None
    if reduction != "mean":
        raise ValueError(
            "`num_items_in_batch` replaces the denominator of reduction='mean'; got reduction="
            f"{reduction!r}. Use reduction='mean' or drop `num_items_in_batch`"
        )
    if isinstance(num_items_in_batch, Tensor):
        if num_items_in_batch.numel() != 1 or num_items_in_batch.dtype == torch.bool:
            raise ValueError(
                "`num_items_in_batch` must be a count (an int or a one-element tensor), got a "
                f"{num_items_in_batch.dtype} tensor of shape {tuple(num_items_in_batch.shape)}"
            )
        if num_items_in_batch.device.type == "cpu" and not (float(num_items_in_batch) >= 0):
            raise ValueError(
                f"`num_items_in_batch` must be >= 0, got {float(num_items_in_batch)!r}"
            )
        return num_items_in_batch.reshape(()).clamp(min=1)
    if isinstance(num_items_in_batch, bool) or not isinstance(num_items_in_batch, numbers.Real):
        raise ValueError(
            f"`num_items_in_batch` must be a count (an int or a 0-d tensor), got "
            f"{num_items_in_batch!r}"
        )
    value = float(num_items_in_batch)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"`num_items_in_batch` must be a finite count >= 0, got {value!r}")
    return max(value, 1.0)


def token_distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None = None,
    *,
    divergence: DivergenceArg = "kl",
    ignore_index: int = -100,
    temperature: float = 1.0,
    reduction: str = "mean",
    num_items_in_batch: int | Tensor | None = None,
    vocab: str = "strict",
    **params: Any,
) -> Tensor:
    r"""Per-token distillation loss D(teacher‖student) over the positions with a valid label.

    .. math::
        \mathcal L = \frac{1}{N}\sum_{(b,t):\,y_{b,t}\ne\mathrm{ignore\_index}}
            D\big(\mathrm{softmax}(u_{b,t}/T)\,\big\|\,\mathrm{softmax}(s_{b,t}/T)\big),
        \qquad N = \texttt{num\_items\_in\_batch}\ \text{or the number of valid tokens}.

    The divergence is evaluated by :func:`divergent.functional.divergence` (the row-chunked
    engine for large inputs, O(chunk × V) extra memory, gradients in the same pass). Equal to
    TRL's GKD ``generalized_jsd_loss(student_logits, teacher_logits, labels, beta, temperature)``
    for ``divergence="js", beta=beta`` (``beta`` in (0, 1)), ``"kl"`` (its ``beta=0``) and
    ``"reverse_kl"`` (its ``beta=1``), with labels (without labels TRL's ``"batchmean"`` divides
    by the batch size B, this function by the number of tokens B·T).

    Args:
        student_logits: ``(B, T, V)`` student logits (any leading shape ``(..., V)``).
        teacher_logits: ``(B, T, V_t)`` teacher logits of the same positions; ``V_t`` must equal
            ``V`` unless ``vocab="truncate"``.
        labels: ``(B, T)`` integer labels **aligned with the logits** (already shifted: the
            label at ``[b, t]`` is the token the logits at ``[b, t]`` predict), or None for every
            position. Only ``labels != ignore_index`` is read.
        divergence: a registered divergence name, a :class:`~divergent.Divergence` or a
            generator callable f(t) (D_f(P‖Q) = Σ q f(p/q)); the teacher is P.
        ignore_index: label value of the positions to skip (padding, prompt tokens).
        temperature: T > 0 dividing both sides' logits; no T² factor (as TRL).
        reduction: ``"mean"`` (over valid tokens, or ``/ num_items_in_batch``), ``"sum"``, or
            ``"none"``: the ``(B, T)`` per-token values, 0 at ignored positions.
        num_items_in_batch: the mean's denominator instead of the local count of valid tokens
            (an int or a 0-d tensor, e.g. the count across gradient-accumulation steps that
            ``transformers.Trainer`` passes to ``compute_loss``); treated as a constant; 0 is
            read as 1 (the sum is then 0). Only with ``reduction="mean"``.
        vocab: ``"strict"`` (vocabularies must match) or ``"truncate"`` (both sides cut to the
            first min(V, V_t) entries, for a head padded with extra rows; same tokenizer).
        **params: the divergence's parameters (``beta`` for ``"js"``, ``alpha`` ...), and
            ``engine=`` / ``check_nan=`` as in :func:`divergent.divergence`. Not ``mask=`` (the
            positions kept are ``labels != ignore_index``: set the labels of the positions to
            skip to ``ignore_index``) nor ``normalizer=`` (``num_items_in_batch`` is the
            mean's denominator), so that the local count and ``num_items_in_batch`` count the
            same positions.

    Returns:
        A scalar for ``"mean"`` / ``"sum"``, ``(B, T)`` for ``"none"``; float32 (float64 if an
        input is float64). A fully ignored batch gives 0 with zero gradient.

    Raises:
        ValueError: naming the argument, for different vocabularies without
            ``vocab="truncate"`` (the message says how to fix it), labels whose shape is not the
            logits' leading shape, an unknown divergence or bad parameter, a bad ``reduction``,
            ``temperature``, ``ignore_index``, ``vocab`` or ``num_items_in_batch``, and the input
            contract of :func:`divergent.divergence` (infinite logits, a valid row without mass).
        TypeError: ``mask=`` or ``normalizer=`` (see ``**params``), naming what replaces it.

    Example:
        >>> import torch
        >>> s = torch.tensor([[[0.0, 1.0, 2.0], [1.0, 0.0, 0.0]]])
        >>> t = torch.tensor([[[2.0, 1.0, 0.0], [5.0, 5.0, 5.0]]])
        >>> token_distillation_loss(s, t, torch.tensor([[7, -100]]))   # 2nd position skipped
        tensor(1.1504)

    References:
        Agarwal et al. 2024, On-Policy Distillation of Language Models: Learning from
        Self-Generated Mistakes (GKD), arXiv:2306.13649; Hinton, Vinyals & Dean 2015,
        Distilling the Knowledge in a Neural Network, arXiv:1503.02531.
    """
    _refuse_replaced_keywords(params, "token_distillation_loss")
    check_reduction(reduction)
    check_choice(vocab, "vocab", VOCAB_POLICIES)
    student = check_float_tensor(student_logits, "student_logits", min_dim=1)
    teacher = check_float_tensor(teacher_logits, "teacher_logits", min_dim=1)
    if student.shape[:-1] != teacher.shape[:-1]:
        raise ValueError(
            f"`student_logits` {tuple(student.shape)} and `teacher_logits` "
            f"{tuple(teacher.shape)} must have the same positions (all but the vocabulary axis)"
        )
    v_s, v_t = student.shape[-1], teacher.shape[-1]
    if v_s != v_t:
        if vocab == "strict":
            raise _vocab_mismatch(v_s, v_t, "student_logits", "teacher_logits")
        shared = min(v_s, v_t)
        student, teacher = student[..., :shared], teacher[..., :shared]
    normalizer = _check_num_items(num_items_in_batch, reduction)
    mask = None
    if labels is not None:
        mask = _valid_positions(labels, student.shape[:-1], ignore_index, student.device)
    return _divergence(
        divergence,
        teacher,
        student,
        temperature=temperature,
        mask=mask,
        reduction=reduction,
        normalizer=normalizer,
        **params,
    )


def logit_transform_from_config(config: Any) -> tuple[float | None, float | None]:
    r"""``(logit_scale, softcap)`` of a Hugging Face model config: how its logits are changed.

    The logits a causal LM returns are :math:`\mathrm{cap}(\lambda\,(hW^\top + b))` with
    :math:`\mathrm{cap}(x) = c\tanh(x/c)`. ``softcap`` is ``final_logit_softcapping`` (Gemma 2);
    ``logit_scale`` λ is ``logit_scale`` (Cohere), else ``output_multiplier``, else
    ``lm_head_multiplier`` (Falcon-H1), else ``1 / logits_scaling`` (Granite, MiniCPM3;
    ``logits_scaling`` itself for ``model_type == "hyperclovax"``): the same reading as TRL's
    ``DistillationTrainer``. A multimodal config is read through ``get_text_config()``.

    Args:
        config: a ``transformers.PretrainedConfig`` (or any object with those attributes), or
            None.

    Returns:
        ``(logit_scale, softcap)``, each None when the model does not apply it (a scale of 1).

    Example:
        >>> from types import SimpleNamespace
        >>> logit_transform_from_config(SimpleNamespace(final_logit_softcapping=30.0))
        (None, 30.0)
    """
    if config is None:
        return None, None
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    scale = getattr(config, "logit_scale", None)
    if scale is None:
        scale = getattr(config, "output_multiplier", None)
    if scale is None:
        scale = getattr(config, "lm_head_multiplier", None)
    if scale is None and getattr(config, "logits_scaling", None) is not None:
        scaling = float(config.logits_scaling)
        is_hyperclovax = getattr(config, "model_type", None) == "hyperclovax"
        scale = scaling if is_hyperclovax else 1.0 / scaling
    softcap = getattr(config, "final_logit_softcapping", None)
    scale = None if scale is None or float(scale) == 1.0 else float(scale)
    return scale, None if softcap is None else float(softcap)


def _head(head: Any, bias: Tensor | None, name: str) -> tuple[Tensor, Tensor | None]:
    """(weight, bias) of an ``nn.Linear`` head or a ``(V, H)`` weight tensor."""
    if isinstance(head, nn.Linear):
        if bias is not None and head.bias is not None:
            raise ValueError(
                f"`{name}` is an nn.Linear with its own bias; do not also pass `{name}_bias`"
            )
        return head.weight, head.bias if bias is None else bias
    if isinstance(head, Tensor):
        return head, bias
    raise ValueError(
        f"`{name}` must be an nn.Linear (e.g. model.get_output_embeddings()) or its (V, H) "
        f"weight tensor, got {type(head).__name__}"
    )


def _same(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and a == b)


def fused_token_distillation_loss(
    student_hidden: Tensor,
    student_head: nn.Linear | Tensor,
    teacher_hidden: Tensor,
    teacher_head: nn.Linear | Tensor,
    labels: Tensor | None = None,
    *,
    divergence: DivergenceArg = "kl",
    ignore_index: int = -100,
    temperature: float = 1.0,
    reduction: str = "mean",
    num_items_in_batch: int | Tensor | None = None,
    student_bias: Tensor | None = None,
    teacher_bias: Tensor | None = None,
    student_config: Any = None,
    teacher_config: Any = None,
    softcap: float | None = None,
    logit_scale: float | None = None,
    vocab: str = "strict",
    chunk_size: int | None = None,
    **params: Any,
) -> Tensor:
    r""":func:`token_distillation_loss` from hidden states and heads, without (B, T, V) logits.

    .. math::
        z = \mathrm{cap}\big(\lambda\,(h W^\top + b)\big),\quad \mathrm{cap}(x) = c\tanh(x/c),
        \qquad \mathcal L = \frac1N \sum_{y_{b,t}\ne\mathrm{ignore}}
            D\big(\mathrm{softmax}(z^{(t)}_{b,t}/T)\,\big\|\,\mathrm{softmax}(z^{(s)}_{b,t}/T)\big).

    Only the positions with a valid label are projected (the engine gathers those rows, a chunk
    at a time, before the matmul), and each chunk's logits gradient is pushed through the head
    at once (:func:`divergent.engine.fused_linear.fused_linear_divergence`), so the extra memory
    is O(chunk × V) instead of O(B·T·V). Gradients reach the student's hidden states and head
    (weight and bias), and the teacher's when they require grad. First-order only: a
    ``create_graph=True`` backward raises.

    The logit transform λ, c of each side is read from ``student_config`` / ``teacher_config``
    (:func:`logit_transform_from_config`: ``final_logit_softcapping``, ``logit_scale`` ...), or
    given for both sides by ``softcap`` / ``logit_scale``. Different scales on the two sides are
    folded into the heads (λW, λb); different soft-caps are not supported on this path.

    Args:
        student_hidden: ``(B, T, H_s)`` last hidden states of the student (before its head),
            aligned with ``labels`` (the states at ``[b, t]`` predict ``labels[b, t]``).
        student_head: the student's output layer, an ``nn.Linear`` (``model.lm_head``,
            ``model.get_output_embeddings()``) or its ``(V, H_s)`` weight.
        teacher_hidden: ``(B, T, H_t)``; hidden sizes may differ.
        teacher_head: ``nn.Linear`` or ``(V_t, H_t)`` weight.
        labels, divergence, ignore_index, temperature, reduction, num_items_in_batch, vocab,
            **params: as in :func:`token_distillation_loss`.
        student_bias, teacher_bias: ``(V,)`` biases when the heads are given as weights.
        student_config, teacher_config: Hugging Face model configs (or None).
        softcap: c > 0 applied to both sides (only without configs).
        logit_scale: λ > 0 applied to both sides (only without configs).
        chunk_size: rows per matmul chunk (default: :data:`FUSED_CHUNK_ELEMENTS` // V rows on
            CPU, the engine's default elsewhere).

    Returns:
        As :func:`token_distillation_loss`: a scalar, or ``(B, T)`` for ``"none"`` (0 at
        ignored positions).

    Raises:
        ValueError: as :func:`token_distillation_loss`, and for heads that are neither
            ``nn.Linear`` nor tensors, a bias given twice, hidden sizes that do not match the
            heads, configs together with ``softcap`` / ``logit_scale``, and different soft-caps
            on the two sides.
        TypeError: as :func:`token_distillation_loss` (``mask=``, ``normalizer=``).
        RuntimeError: a second-order backward (``create_graph=True``).

    Example:
        >>> import torch
        >>> hs, ht = torch.randn(2, 3, 8), torch.randn(2, 3, 6)
        >>> ws, wt = torch.nn.Linear(8, 11), torch.nn.Linear(6, 11)
        >>> labels = torch.tensor([[1, 2, -100], [3, -100, -100]])
        >>> fused = fused_token_distillation_loss(hs, ws, ht, wt, labels, divergence="js")
        >>> dense = token_distillation_loss(ws(hs), wt(ht), labels, divergence="js")
        >>> bool(torch.isclose(fused, dense, atol=1e-6))
        True

    References:
        Agarwal et al. 2024, GKD, arXiv:2306.13649; Hsu et al. 2024, Liger-Kernel: Efficient
        Triton Kernels for LLM Training, arXiv:2410.10989 (fused linear losses); Gemma Team
        2024, Gemma 2, arXiv:2408.00118 (logit soft-capping).
    """
    _refuse_replaced_keywords(params, "fused_token_distillation_loss")
    check_reduction(reduction)
    check_choice(vocab, "vocab", VOCAB_POLICIES)
    resolve_divergence(divergence)
    w_s, b_s = _head(student_head, student_bias, "student_head")
    w_t, b_t = _head(teacher_head, teacher_bias, "teacher_head")
    hs = check_float_tensor(student_hidden, "student_hidden", min_dim=1)
    ht = check_float_tensor(teacher_hidden, "teacher_hidden", min_dim=1)
    w_s = check_float_tensor(w_s, "student_head", dims=2)
    w_t = check_float_tensor(w_t, "teacher_head", dims=2)
    if w_s.shape[0] != w_t.shape[0] and vocab == "strict":
        raise _vocab_mismatch(w_s.shape[0], w_t.shape[0], "student_head", "teacher_head")
    if (student_config is not None or teacher_config is not None) and (
        softcap is not None or logit_scale is not None
    ):
        raise ValueError(
            "pass either `student_config` / `teacher_config` (the transform is read from them) "
            "or `softcap` / `logit_scale` (applied to both sides), not both"
        )
    if student_config is not None or teacher_config is not None:
        scale_s, cap_s = logit_transform_from_config(student_config)
        scale_t, cap_t = logit_transform_from_config(teacher_config)
    else:
        scale_s = scale_t = logit_scale
        cap_s = cap_t = softcap
    if not _same(cap_s, cap_t):
        raise ValueError(
            f"the student's soft-cap ({cap_s}) and the teacher's ({cap_t}) differ; the fused path "
            "applies one `final_logit_softcapping` to both sides. Use token_distillation_loss on "
            "the two models' logits instead"
        )
    if not _same(scale_s, scale_t):  # fold each side's scale into its head: λ(hWᵀ + b)
        if scale_s is not None:
            w_s, b_s = w_s * scale_s, None if b_s is None else b_s * scale_s
        if scale_t is not None:
            w_t, b_t = w_t * scale_t, None if b_t is None else b_t * scale_t
        scale_s = None
    normalizer = _check_num_items(num_items_in_batch, reduction)
    mask = None
    if labels is not None:
        mask = _valid_positions(labels, hs.shape[:-1], ignore_index, hs.device)
    elements = FUSED_CHUNK_ELEMENTS.get(hs.device.type)
    if chunk_size is None and elements is not None:
        chunk_size = max(1, elements // min(w_s.shape[0], w_t.shape[0]))
    return fused_linear_divergence(
        divergence,
        student_hidden=hs,
        student_weight=w_s,
        teacher_hidden=ht,
        teacher_weight=w_t,
        student_bias=b_s,
        teacher_bias=b_t,
        temperature=temperature,
        softcap=cap_s,
        logit_scale=scale_s,
        mask=mask,
        reduction=reduction,
        normalizer=normalizer,
        chunk_size=chunk_size,
        vocab=vocab,
        **params,
    )
