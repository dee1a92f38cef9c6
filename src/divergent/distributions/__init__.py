"""Closed-form divergences between ``torch.distributions`` (a pair registry)."""

from divergent.distributions.closed_form import (
    ClosedFormResult,
    closed_form,
    closed_form_support,
    exponential_family_kl,
)

__all__ = ["ClosedFormResult", "closed_form", "closed_form_support", "exponential_family_kl"]
