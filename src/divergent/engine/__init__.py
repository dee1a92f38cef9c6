"""The engines behind the functional API: row-chunked, fused-linear and vocabulary-parallel.

Each computes a registered divergence's value and gradients chunk by chunk with the entry's
kernel (:mod:`divergent.categorical.kernels`), in O(chunk × V) memory.
"""

from divergent.engine.chunked import compile_mode, engine_mode, set_compile, set_engine
from divergent.engine.fused_linear import fused_linear_divergence
from divergent.engine.vocab_parallel import vocab_parallel_divergence

__all__ = [
    "compile_mode",
    "engine_mode",
    "fused_linear_divergence",
    "set_compile",
    "set_engine",
    "vocab_parallel_divergence",
]
