"""Teachers served sparsely: top-k log-probabilities and an on-disk safetensors cache."""

from divergent.teacher.cache import TeacherCacheError, TeacherCacheReader, TeacherCacheWriter
from divergent.teacher.sparse import sparse_divergence, topk_logprobs

__all__ = [
    "TeacherCacheError",
    "TeacherCacheReader",
    "TeacherCacheWriter",
    "sparse_divergence",
    "topk_logprobs",
]
