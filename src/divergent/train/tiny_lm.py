r"""Tiny causal language models on the embedded corpus, for the LM reproductions.

The LM reproductions (:mod:`divergent.papers.dackl`, ``mathpuma``, ``llavamod``) train many
small language models on one CPU core in seconds. This module holds what they share:

* :func:`char_corpus` — Python's ``pydoc_data.topics`` text (it ships with Python; about
  460 KB), split by document (:func:`divergent.train.text_corpus.load_pydoc_corpus`) and
  encoded by :class:`CharVocab` / :func:`char_vocab`, a character-level tokenisation (the
  most frequent characters, the rest mapped to one unknown symbol): a small vocabulary keeps
  the models fast on one core; :func:`sample_windows` — random training windows;
* :class:`TinyCausalLM` — a pre-LayerNorm causal transformer; with ``n_experts > 0`` its
  feed-forward blocks are a mixture of experts with top-k routing (the sparse student of
  LLaVA-MoD), and :meth:`TinyCausalLM.forward_with_router` also returns the router logits
  (for a load-balancing loss such as
  :func:`divergent.objectives.moe_distill.load_balancing_loss`);
* :func:`train_lm` — Adam on any ``loss_fn(model, inputs, targets)``;
* :func:`evaluate_lm` — held-out perplexity, next-token accuracy and the token KL to a teacher;
* :func:`generate` — ancestral sampling; :func:`correct_and_regenerate` — DAC-KL's sequence
  correction and re-generation (SCRG) step.

Everything is deterministic given the seeds on CPU.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from divergent.objectives.dackl import most_divergent_positions
from divergent.train.text_corpus import load_pydoc_corpus

__all__ = [
    "CharCorpus",
    "CharVocab",
    "LMEvaluation",
    "TinyCausalLM",
    "char_corpus",
    "char_vocab",
    "correct_and_regenerate",
    "evaluate_lm",
    "generate",
    "sample_windows",
    "train_lm",
]

LMLossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class CharVocab:
    """A character vocabulary: ids ``0 .. len(chars)-1`` for ``chars``, and ``unknown_id``
    (the last id) for every other character.

    Attributes:
        chars: the known characters, most frequent first.
    """

    chars: str

    @property
    def size(self) -> int:
        """Number of ids (known characters + the unknown symbol)."""
        return len(self.chars) + 1

    @property
    def unknown_id(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> Tensor:
        """``text`` as an int64 tensor of ids ``(len(text),)``."""
        index = {c: i for i, c in enumerate(self.chars)}
        unk = self.unknown_id
        return torch.tensor([index.get(c, unk) for c in text], dtype=torch.long)

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """The text of ``ids`` (the unknown id shows as ``"\\ufffd"``)."""
        values = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        return "".join(self.chars[i] if i < len(self.chars) else "\ufffd" for i in values)


def char_vocab(text: str, max_size: int = 96) -> CharVocab:
    """The ``max_size − 1`` most frequent characters of ``text`` (ties by code point).

    Example:
        >>> v = char_vocab("abracadabra", max_size=3)
        >>> v.chars, v.size, v.decode(v.encode("abc"))
        ('ab', 3, 'ab\ufffd')
    """
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 2:
        raise ValueError(f"`max_size` must be an int >= 2, got {max_size!r}")
    counts = Counter(text)
    ranked = sorted(counts, key=lambda c: (-counts[c], c))
    return CharVocab("".join(ranked[: max_size - 1]))


@dataclass(frozen=True)
class CharCorpus:
    """The embedded corpus, character-encoded.

    Attributes:
        vocab: the character vocabulary (built on the training documents).
        train, heldout: int64 ids of the training and held-out documents, each part's
            documents joined by a blank line.
        fingerprint: the corpus fingerprint
            (:func:`divergent.train.text_corpus.load_pydoc_corpus`).
    """

    vocab: CharVocab
    train: Tensor
    heldout: Tensor
    fingerprint: str


def char_corpus(*, vocab_size: int = 96, heldout_fraction: float = 0.1) -> CharCorpus:
    """Python's ``pydoc_data.topics`` text split by whole document
    (:func:`divergent.train.text_corpus.load_pydoc_corpus`) and encoded character by
    character with the ``vocab_size − 1`` most frequent training characters.

    Example:
        >>> c = char_corpus(vocab_size=64)
        >>> c.vocab.size, c.train.shape[0] > 5 * c.heldout.shape[0] > 0
        (64, True)
    """
    corpus = load_pydoc_corpus(heldout_fraction=heldout_fraction)
    train_text, heldout_text = "\n\n".join(corpus.train), "\n\n".join(corpus.heldout)
    vocab = char_vocab(train_text, max_size=vocab_size)
    return CharCorpus(
        vocab, vocab.encode(train_text), vocab.encode(heldout_text), corpus.fingerprint
    )


def sample_windows(ids: Tensor, batch_size: int, length: int, generator: torch.Generator) -> Tensor:
    """``batch_size`` random windows of ``length + 1`` consecutive ids, ``(B, length + 1)``.

    Inputs are ``w[:, :-1]``, next-token targets ``w[:, 1:]``.
    """
    if ids.shape[0] < length + 2:
        raise ValueError(
            f"`ids` has {ids.shape[0]} tokens, too few for windows of length {length} + 1"
        )
    starts = torch.randint(0, ids.shape[0] - length - 1, (batch_size,), generator=generator)
    return ids[starts[:, None] + torch.arange(length + 1)]


class _FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, d_ff)
        self.down = nn.Linear(d_ff, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.gelu(self.up(x)))


class _MixtureOfExperts(nn.Module):
    r"""Top-k routed experts: :math:`y = \sum_{e \in \mathrm{top}_k(r(x))} g_e(x)\,E_e(x)`,
    :math:`g = \mathrm{softmax}` of the router logits renormalised over the top k.

    The experts are evaluated densely (exact, and fast for a handful of tiny experts); the
    output only mixes the routed ones.
    """

    def __init__(self, d_model: int, d_ff: int, n_experts: int, top_k: int) -> None:
        super().__init__()
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.experts = nn.ModuleList(_FeedForward(d_model, d_ff) for _ in range(n_experts))
        self.top_k = top_k

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        router_logits = self.router(x)  # (B, T, E)
        probs = router_logits.softmax(-1)
        top_p, top_i = probs.topk(self.top_k, dim=-1)
        gates = torch.zeros_like(probs).scatter(-1, top_i, top_p / top_p.sum(-1, keepdim=True))
        outputs = torch.stack([expert(x) for expert in self.experts], dim=-2)  # (B, T, E, d)
        return (gates.unsqueeze(-1) * outputs).sum(-2), router_logits


class _Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, n_experts: int, top_k: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.n_heads = n_heads
        self.ff: nn.Module = (
            _MixtureOfExperts(d_model, d_ff, n_experts, top_k)
            if n_experts > 0
            else _FeedForward(d_model, d_ff)
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.n_heads, d // self.n_heads).unbind(2)
        att = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        h = self.norm2(x)
        if isinstance(self.ff, _MixtureOfExperts):
            y, router_logits = self.ff(h)
            return x + y, router_logits
        return x + self.ff(h), None


class TinyCausalLM(nn.Module):
    """A small pre-LayerNorm causal transformer language model.

    Args:
        vocab_size: number of token ids.
        d_model: width; ``n_heads`` must divide it.
        n_layers: number of blocks.
        n_heads: attention heads.
        context: largest sequence length (learned positional embeddings).
        d_ff: feed-forward width (default ``4·d_model``; per expert for a MoE).
        n_experts: 0 for dense feed-forward blocks; ``> 1`` for a mixture of experts.
        top_k: experts routed per token (``1 <= top_k <= n_experts``).
        seed: initialisation seed (PyTorch's default initialisers, drawn under a forked RNG).

    ``model(ids)`` with ids ``(B, T)``, ``T <= context``, returns logits ``(B, T, vocab)``.

    Example:
        >>> lm = TinyCausalLM(10, d_model=8, n_layers=1, n_heads=2, context=6, seed=0)
        >>> tuple(lm(torch.zeros(2, 5, dtype=torch.long)).shape)
        (2, 5, 10)
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 2,
        context: int = 64,
        d_ff: int | None = None,
        n_experts: int = 0,
        top_k: int = 2,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for name, value, low in [
            ("vocab_size", vocab_size, 2),
            ("d_model", d_model, 1),
            ("n_layers", n_layers, 1),
            ("n_heads", n_heads, 1),
            ("context", context, 1),
        ]:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"`{name}` must be an int >= {low}, got {value!r}")
        if d_model % n_heads:
            raise ValueError(f"`n_heads` ({n_heads}) must divide `d_model` ({d_model})")
        if n_experts == 1 or n_experts < 0:
            raise ValueError(f"`n_experts` must be 0 (dense) or >= 2, got {n_experts!r}")
        if n_experts and not 1 <= top_k <= n_experts:
            raise ValueError(f"`top_k` must lie in 1..n_experts={n_experts}, got {top_k!r}")
        self.context = context
        self.n_experts = n_experts
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.embed = nn.Embedding(vocab_size, d_model)
            self.position = nn.Embedding(context, d_model)
            nn.init.normal_(self.embed.weight, std=0.1)
            nn.init.normal_(self.position.weight, std=0.02)
            self.blocks = nn.ModuleList(
                _Block(d_model, n_heads, d_ff or 4 * d_model, n_experts, top_k)
                for _ in range(n_layers)
            )
            self.norm = nn.LayerNorm(d_model)
            self.head = nn.Linear(d_model, vocab_size)

    def forward_with_router(self, ids: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Logits ``(B, T, V)`` and the router logits ``(B, T, n_experts)`` of each MoE block
        (an empty list for a dense model)."""
        if ids.dim() != 2 or ids.shape[1] > self.context:
            raise ValueError(
                f"`ids` must have shape (B, T) with T <= context={self.context}, got "
                f"{tuple(ids.shape)}"
            )
        x = self.embed(ids) + self.position.weight[: ids.shape[1]]
        routers = []
        for block in self.blocks:
            x, router_logits = block(x)
            if router_logits is not None:
                routers.append(router_logits)
        return self.head(self.norm(x)), routers

    def forward(self, ids: Tensor) -> Tensor:
        return self.forward_with_router(ids)[0]


def train_lm(
    model: nn.Module,
    loss_fn: LMLossFn,
    ids: Tensor,
    *,
    steps: int,
    batch_size: int,
    length: int,
    generator: torch.Generator,
    lr: float = 3e-3,
    grad_clip: float = 1.0,
    warmup: int = 0,
) -> list[float]:
    """Adam on random windows of ``ids``: each step draws ``(B, length + 1)`` windows and
    minimises ``loss_fn(model, inputs, targets)`` (inputs ``w[:, :-1]``, targets ``w[:, 1:]``).

    The learning rate warms up linearly over ``warmup`` steps, then decays by a cosine to
    ``lr/10``. Returns the loss of every step.

    Example:
        >>> lm = TinyCausalLM(5, d_model=8, n_layers=1, n_heads=1, context=8, seed=0)
        >>> ce = lambda m, x, y: F.cross_entropy(m(x).flatten(0, 1), y.flatten())
        >>> ids = torch.arange(200) % 5
        >>> curve = train_lm(lm, ce, ids, steps=60, batch_size=8, length=8,
        ...                  generator=torch.Generator().manual_seed(0), lr=1e-2)
        >>> curve[-1] < 0.2 < curve[0]
        True
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"`steps` must be an int >= 0, got {steps!r}")
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, factor)
    curve = []
    model.train()
    for _ in range(steps):
        window = sample_windows(ids, batch_size, length, generator)
        loss = loss_fn(model, window[:, :-1], window[:, 1:])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimiser.step()
        schedule.step()
        curve.append(float(loss.detach()))
    model.eval()
    return curve


@dataclass(frozen=True)
class LMEvaluation:
    """Held-out scores of a language model (means over scored tokens).

    Attributes:
        perplexity: :math:`\\exp` of the mean next-token cross-entropy.
        accuracy: fraction of tokens whose argmax prediction is the next token.
        token_kl: mean KL(teacher ‖ model) per token (NaN without a teacher).
        agreement: fraction of tokens where the model's and the teacher's argmax agree (NaN
            without a teacher).
        n_tokens: number of scored tokens.
    """

    perplexity: float
    accuracy: float
    token_kl: float
    agreement: float
    n_tokens: int

    def as_dict(self) -> dict[str, float]:
        return {
            "perplexity": self.perplexity,
            "accuracy": self.accuracy,
            "token_kl": self.token_kl,
            "agreement": self.agreement,
            "n_tokens": self.n_tokens,
        }


def _windows(ids: Tensor, length: int, max_windows: int | None) -> Tensor:
    n = (ids.shape[0] - 1) // length
    if max_windows is not None:
        n = min(n, max_windows)
    if n < 1:
        raise ValueError(f"`ids` has {ids.shape[0]} tokens, too few for one window of {length}")
    starts = torch.arange(n) * length
    return ids[starts[:, None] + torch.arange(length + 1)]


@torch.no_grad()
def evaluate_lm(
    model: nn.Module,
    ids: Tensor,
    *,
    length: int,
    teacher: nn.Module | None = None,
    inputs: Tensor | None = None,
    max_windows: int | None = None,
    batch_size: int = 64,
) -> LMEvaluation:
    """Score ``model`` on consecutive non-overlapping windows of ``ids``.

    Args:
        model: maps ids ``(B, T)`` to logits ``(B, T, V)``.
        ids: the held-out token ids (targets; windows of ``length + 1``).
        length: window length.
        teacher: optional model scored against (token KL(teacher‖model) and argmax agreement);
            the teacher always reads ``ids`` (its own view).
        inputs: optional other *view* the model reads instead of ``ids`` (same length; the
            targets stay those of ``ids``), as in Math-PUMA's two renderings of one text.
        max_windows: score at most this many windows.
        batch_size: windows per forward pass.
    """
    model.eval()
    windows = _windows(ids, length, max_windows)
    views = windows if inputs is None else _windows(inputs, length, max_windows)
    nll = correct = kl = agree = 0.0
    count = 0
    for i in range(0, windows.shape[0], batch_size):
        w, v = windows[i : i + batch_size], views[i : i + batch_size]
        log_q = model(v[:, :-1]).double().log_softmax(-1)
        target = w[:, 1:]
        nll += float(-log_q.gather(-1, target[..., None]).sum())
        correct += float((log_q.argmax(-1) == target).sum())
        if teacher is not None:
            teacher.eval()
            log_p = teacher(w[:, :-1]).double().log_softmax(-1)
            kl += float((log_p.exp() * (log_p - log_q)).sum())
            agree += float((log_p.argmax(-1) == log_q.argmax(-1)).sum())
        count += target.numel()
    nan = float("nan")
    return LMEvaluation(
        perplexity=math.exp(nll / count),
        accuracy=correct / count,
        token_kl=kl / count if teacher is not None else nan,
        agreement=agree / count if teacher is not None else nan,
        n_tokens=count,
    )


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt: Tensor,
    n_new: int,
    *,
    generator: torch.Generator,
    temperature: float = 1.0,
) -> Tensor:
    """Sample ``n_new`` tokens after ``prompt`` ``(B, P)`` from ``softmax(logits/T)``
    (``temperature=0``: greedy). Returns ``(B, P + n_new)``; the model reads at most its
    last ``context`` tokens."""
    model.eval()
    context = getattr(model, "context", None)
    seq = prompt
    for _ in range(n_new):
        window = seq if context is None else seq[:, -context:]
        logits = model(window)[:, -1].double()
        if temperature == 0:
            nxt = logits.argmax(-1, keepdim=True)
        else:
            nxt = torch.multinomial((logits / temperature).softmax(-1), 1, generator=generator)
        seq = torch.cat([seq, nxt], dim=1)
    return seq


@torch.no_grad()
def correct_and_regenerate(
    student: nn.Module,
    teacher: nn.Module,
    sequences: Tensor,
    prompt_length: int,
    *,
    generator: torch.Generator,
    temperature: float = 1.0,
) -> Tensor:
    """DAC-KL's sequence correction and re-generation (SCRG) on student generations.

    For each sequence, the generated position where the student's next-token distribution
    diverges most from the teacher's (largest KL(teacher‖student), by
    :func:`divergent.objectives.dackl.most_divergent_positions`) gets the teacher's argmax
    token; the tokens after it are sampled again from the student. Sequences ``(B, L)``; the
    first ``prompt_length`` tokens are kept; the models score all ``L − 1`` inputs at once, so
    ``L − 1`` must fit their context. Returns the corrected sequences ``(B, L)``.
    """
    b, total = sequences.shape
    if not 0 < prompt_length < total:
        raise ValueError(
            f"`prompt_length` must lie in 1..{total - 1} for sequences of length {total}, got "
            f"{prompt_length!r}"
        )
    context = getattr(student, "context", None)
    if context is not None and total - 1 > context:
        raise ValueError(
            f"`sequences` of length {total} need a student context of at least {total - 1} "
            f"(the whole sequence is scored at once), got context={context}"
        )
    inputs = sequences[:, :-1]
    s_logits, t_logits = student(inputs), teacher(inputs)
    # logits at index i predict token i + 1; generated tokens are prompt_length .. total-1
    generated = torch.zeros(b, total - 1, dtype=torch.bool)
    generated[:, prompt_length - 1 :] = True
    where = most_divergent_positions(s_logits, t_logits, mask=generated)  # (B,) logit index
    rows = torch.arange(b)
    out = sequences.clone()
    out[rows, where + 1] = t_logits[rows, where].argmax(-1)  # the teacher's token
    # re-generate every position after each row's corrected one (rows in one batch; a row's
    # tokens up to its correction are kept)
    for pos in range(int(where.min()) + 2, total):
        window = out[:, :pos] if context is None else out[:, max(0, pos - context) : pos]
        logits = student(window)[:, -1].double()
        if temperature == 0:
            nxt = logits.argmax(-1)
        else:
            nxt = torch.multinomial((logits / temperature).softmax(-1), 1, generator=generator)[
                :, 0
            ]
        redo = pos > where + 1
        out[redo, pos] = nxt[redo]
    return out
