r"""A text corpus that ships with Python and a byte-level BPE tokenizer trained on it locally.

The language-model distillation job (``divergent distill --task lm``) and the LM reproductions
need text without a network: :func:`load_pydoc_corpus` reads the standard library's
``pydoc_data.topics.topics`` (the help text of Python's keywords and topics, about 460 KB in
~80 documents), in sorted-key order, and splits it **by document** into a training part and a
held-out part (documents taken in the order of the SHA-256 of their names until the held-out
part holds its fraction of the characters: a fixed, pseudo-random choice of whole documents).
:func:`train_bpe_tokenizer` trains a byte-level BPE tokenizer (Sennrich et al. 2016,
arXiv:1508.07909; byte-level as in GPT-2, Radford et al. 2019) with ``tokenizers`` on the
training documents and returns a ``transformers.PreTrainedTokenizerFast``; ``save_pretrained``
writes a folder that ``AutoTokenizer.from_pretrained(path)`` reads back.
:func:`token_blocks` turns documents into fixed-length blocks of token ids for a causal LM.

Public names (reused by the reproductions): :func:`load_pydoc_corpus` → :class:`TextCorpus`,
:func:`train_bpe_tokenizer`, :func:`token_blocks`, :func:`tokenizer_fingerprint`,
:data:`END_OF_TEXT`.

The text depends on the Python version (each release edits some topics): the corpus carries a
``fingerprint`` (SHA-256 of its documents and split) so cached models can check they were
trained on the same text. ``tokenizers`` and ``transformers`` are imported only by the
functions that need them.

Example:
    >>> corpus = load_pydoc_corpus()
    >>> len(corpus.train) > 3 * len(corpus.heldout) > 0
    True
    >>> set(corpus.train_names).isdisjoint(corpus.heldout_names)
    True
    >>> tokenizer = train_bpe_tokenizer(corpus.train[:5], vocab_size=300)
    >>> len(tokenizer) <= 300 and tokenizer.eos_token == END_OF_TEXT
    True
    >>> tokenizer.decode(tokenizer("def f(x): return x")["input_ids"])
    'def f(x): return x'
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "END_OF_TEXT",
    "TextCorpus",
    "load_pydoc_corpus",
    "token_blocks",
    "tokenizer_fingerprint",
    "train_bpe_tokenizer",
]

END_OF_TEXT = "<|endoftext|>"
"""The one special token: separates documents; also the tokenizer's bos, eos and pad token."""


@dataclass(frozen=True)
class TextCorpus:
    """Documents split into training and held-out parts (whole documents, never cut).

    Attributes:
        name: where the text comes from (``"pydoc_data.topics"``).
        train_names, heldout_names: document names (topic keys), sorted.
        train, heldout: the documents' texts, in the order of their names.
        fingerprint: SHA-256 (hex, 16 characters) of the names, texts and split.
    """

    name: str
    train_names: tuple[str, ...]
    train: tuple[str, ...]
    heldout_names: tuple[str, ...]
    heldout: tuple[str, ...]
    fingerprint: str

    @property
    def num_chars(self) -> int:
        """Characters in all documents."""
        return sum(map(len, self.train)) + sum(map(len, self.heldout))


def _heldout_names(texts: dict[str, str], fraction: float) -> set[str]:
    by_hash = sorted(texts, key=lambda name: hashlib.sha256(name.encode()).hexdigest())
    budget = fraction * sum(map(len, texts.values()))
    chosen: set[str] = set()
    held = 0
    for name in by_hash:
        if held >= budget:
            break
        chosen.add(name)
        held += len(texts[name])
    return chosen


def load_pydoc_corpus(
    *, heldout_fraction: float = 0.1, max_documents: int | None = None
) -> TextCorpus:
    r"""The standard library's ``pydoc_data.topics`` text, split by document.

    Documents are visited in the order of the SHA-256 of their names; each is held out while
    the held-out characters are fewer than :math:`f \cdot` (all characters), :math:`f` =
    ``heldout_fraction``. Whole documents only, so no text is shared between the parts; the
    held-out share of characters is :math:`f` rounded up to one document.

    Args:
        heldout_fraction: target fraction of the characters held out, in ``(0, 1)``.
        max_documents: keep only the first ``max_documents`` names (sorted) before splitting,
            for tests; ``None`` keeps all (~80).

    Returns:
        A :class:`TextCorpus`; both parts are non-empty.

    Raises:
        ValueError: ``heldout_fraction`` outside ``(0, 1)``, ``max_documents`` < 2, or a split
            that leaves one part empty.
    """
    if isinstance(heldout_fraction, bool) or not 0.0 < float(heldout_fraction) < 1.0:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction!r}")
    if max_documents is not None and (
        isinstance(max_documents, bool) or not isinstance(max_documents, int) or max_documents < 2
    ):
        raise ValueError(f"max_documents must be an integer >= 2 or None, got {max_documents!r}")
    from pydoc_data.topics import topics

    names = sorted(topics)
    if max_documents is not None:
        names = names[:max_documents]
    chosen = _heldout_names({n: topics[n] for n in names}, float(heldout_fraction))
    heldout_names = tuple(n for n in names if n in chosen)
    train_names = tuple(n for n in names if n not in chosen)
    if not heldout_names or not train_names:
        raise ValueError(
            f"heldout_fraction={heldout_fraction!r} with {len(names)} documents leaves "
            f"{'no held-out' if not heldout_names else 'no training'} document; use more "
            "documents or another fraction"
        )
    digest = hashlib.sha256()
    for part, part_names in (("train", train_names), ("heldout", heldout_names)):
        for name in part_names:
            for item in (part, name, topics[name]):
                data = item.encode()
                digest.update(len(data).to_bytes(8, "little") + data)
    return TextCorpus(
        name="pydoc_data.topics",
        train_names=train_names,
        train=tuple(topics[n] for n in train_names),
        heldout_names=heldout_names,
        heldout=tuple(topics[n] for n in heldout_names),
        fingerprint=digest.hexdigest()[:16],
    )


def train_bpe_tokenizer(
    texts: Sequence[str], vocab_size: int = 4096, *, min_frequency: int = 2
) -> Any:
    r"""Train a byte-level BPE tokenizer on ``texts`` (GPT-2's scheme, trained here, offline).

    Byte-level BPE starts from the 256 byte symbols (so every string is encodable, no unknown
    token) and greedily merges the most frequent adjacent pair until ``vocab_size`` symbols
    exist (Sennrich, Haddow & Birch 2016, arXiv:1508.07909; Radford et al. 2019, GPT-2).
    Training is deterministic for the same texts in the same order.

    Args:
        texts: training documents.
        vocab_size: the vocabulary size including the 256 bytes and :data:`END_OF_TEXT`;
            at least 258. The result may be smaller when the text has too few frequent pairs.
        min_frequency: a pair seen fewer times is never merged.

    Returns:
        A ``transformers.PreTrainedTokenizerFast`` with ``bos``, ``eos`` and ``pad`` token
        :data:`END_OF_TEXT`; ``save_pretrained(folder)`` writes a folder that
        ``AutoTokenizer.from_pretrained(folder)`` loads.

    Raises:
        ValueError: empty ``texts``, ``vocab_size`` < 258 or ``min_frequency`` < 1.
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 258:
        raise ValueError(
            f"vocab_size must be an integer >= 258 (256 bytes + {END_OF_TEXT} + one merge), "
            f"got {vocab_size!r}"
        )
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 1:
        raise ValueError(f"min_frequency must be an integer >= 1, got {min_frequency!r}")
    texts = list(texts)
    if not texts or not any(texts):
        raise ValueError("texts must hold at least one non-empty document, got none")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        clean_up_tokenization_spaces=False,
    )


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """SHA-256 (hex, 16 characters) of a tokenizer's vocabulary and special tokens.

    Two tokenizers with the same fingerprint map every text to the same ids (for BPE the
    vocabulary order fixes the merge ranks as well).
    """
    state = {
        "vocab": sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]),
        "special": {
            "bos": tokenizer.bos_token,
            "eos": tokenizer.eos_token,
            "pad": tokenizer.pad_token,
        },
    }
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        model = json.loads(backend.to_str()).get("model", {})
        state["merges"] = model.get("merges")
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]


def token_blocks(tokenizer: Any, texts: Sequence[str], block_size: int) -> Tensor:
    r"""Concatenate ``texts`` (each followed by the eos token) and cut into full blocks.

    The stream ``t_1 … t_N`` of all documents' ids is cut into
    :math:`\lfloor N / L \rfloor` rows of length :math:`L` = ``block_size``; the incomplete
    tail is dropped, so every position of every row is a real token (no padding: a causal
    LM's next-token loss counts :math:`L - 1` targets per row).

    Args:
        tokenizer: a Hugging Face tokenizer (``tokenizer(texts)["input_ids"]``).
        texts: documents.
        block_size: row length :math:`L` ≥ 2.

    Returns:
        ``(num_blocks, block_size)`` int64 tensor.

    Raises:
        ValueError: ``block_size`` < 2, or too little text for one block.
    """
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 2:
        raise ValueError(f"block_size must be an integer >= 2, got {block_size!r}")
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        if eos is not None:
            stream.append(eos)
    count = len(stream) // block_size
    if count == 0:
        raise ValueError(
            f"block_size={block_size} is longer than the whole text ({len(stream)} tokens)"
        )
    return torch.tensor(stream[: count * block_size], dtype=torch.long).view(count, block_size)
