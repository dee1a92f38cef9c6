"""divergent: probability divergences as a first-class, fast and correct knob.

``D(P‖Q)``: the first argument is the target / teacher / reference P, the second the model /
student Q. ``divergent.kl(p_logits, q_logits)`` is KL(P‖Q). See ``divergent list`` for every
registered divergence and ``DESIGN.md`` for the conventions.
"""

from divergent.core import *  # noqa: F403
from divergent.core import __all__ as _core_all

__version__ = "0.1.0"

__all__ = [*_core_all, "__version__"]
