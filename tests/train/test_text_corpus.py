"""The pydoc corpus (deterministic, split by whole document) and the local byte-level BPE."""

from __future__ import annotations

from pydoc_data.topics import topics

import pytest
import torch

from divergent.train.text_corpus import (
    END_OF_TEXT,
    load_pydoc_corpus,
    token_blocks,
    tokenizer_fingerprint,
    train_bpe_tokenizer,
)

pytest.importorskip("tokenizers")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def corpus():
    return load_pydoc_corpus()


@pytest.fixture(scope="module")
def small_tokenizer(corpus):
    return train_bpe_tokenizer(corpus.train[:8], vocab_size=300)


def test_split_is_by_whole_document_and_covers_every_topic(corpus):
    assert set(corpus.train_names).isdisjoint(corpus.heldout_names)
    assert sorted(corpus.train_names + corpus.heldout_names) == sorted(topics)
    assert list(corpus.train_names) == sorted(corpus.train_names)
    assert corpus.train == tuple(topics[n] for n in corpus.train_names)
    assert corpus.heldout == tuple(topics[n] for n in corpus.heldout_names)
    total = sum(len(t) for t in topics.values())
    assert corpus.num_chars == total
    held = sum(map(len, corpus.heldout))
    largest = max(map(len, corpus.heldout))
    # the held-out part reaches 10 % of the characters and overshoots by at most one document
    assert 0.1 * total <= held < 0.1 * total + largest


def test_corpus_is_deterministic_and_fingerprinted(corpus):
    again = load_pydoc_corpus()
    assert again == corpus
    other = load_pydoc_corpus(heldout_fraction=0.3)
    assert other.fingerprint != corpus.fingerprint
    assert len(other.heldout) > len(corpus.heldout)
    small = load_pydoc_corpus(max_documents=6)
    assert sorted(small.train_names + small.heldout_names) == sorted(topics)[:6]
    assert small.train and small.heldout


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"heldout_fraction": 0.0}, "heldout_fraction must be in (0, 1), got 0.0"),
        ({"heldout_fraction": 1.5}, "heldout_fraction must be in (0, 1), got 1.5"),
        ({"max_documents": 1}, "max_documents must be an integer >= 2 or None, got 1"),
        ({"max_documents": 2, "heldout_fraction": 0.99}, "leaves no training document"),
    ],
)
def test_corpus_bad_arguments(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_pydoc_corpus(**kwargs)


def test_tokenizer_is_byte_level_lossless_and_small(corpus, small_tokenizer):
    tok = small_tokenizer
    assert 258 <= len(tok) <= 300
    assert tok.eos_token == tok.bos_token == tok.pad_token == END_OF_TEXT
    assert tok.convert_tokens_to_ids(END_OF_TEXT) == tok.eos_token_id
    for text in (corpus.heldout[0][:2000], "naïve — ünïcode ✓ 𝔘", "  two  spaces\n\ttab"):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text  # every byte encodable: no unknown token, lossless
    sample = corpus.train[0][:3000]
    # merges learned: fewer tokens than bytes
    assert len(tok(sample)["input_ids"]) < 0.8 * len(sample.encode())


def test_tokenizer_training_is_deterministic_and_round_trips_a_folder(
    corpus, small_tokenizer, tmp_path
):
    from transformers import AutoTokenizer

    again = train_bpe_tokenizer(corpus.train[:8], vocab_size=300)
    assert again.get_vocab() == small_tokenizer.get_vocab()
    assert tokenizer_fingerprint(again) == tokenizer_fingerprint(small_tokenizer)
    other = train_bpe_tokenizer(corpus.train[:8], vocab_size=320)
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(small_tokenizer)

    small_tokenizer.save_pretrained(tmp_path / "tok")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    text = corpus.heldout[1][:1500]
    assert loaded(text)["input_ids"] == small_tokenizer(text)["input_ids"]
    assert loaded.eos_token_id == small_tokenizer.eos_token_id
    assert tokenizer_fingerprint(loaded) == tokenizer_fingerprint(small_tokenizer)


def test_tokenizer_bad_arguments():
    with pytest.raises(ValueError, match=r"vocab_size must be an integer >= 258.*got 100"):
        train_bpe_tokenizer(["abc"], vocab_size=100)
    with pytest.raises(ValueError, match="min_frequency must be an integer >= 1, got 0"):
        train_bpe_tokenizer(["abc"], vocab_size=300, min_frequency=0)
    with pytest.raises(ValueError, match="texts must hold at least one non-empty document"):
        train_bpe_tokenizer(["", ""], vocab_size=300)


def test_token_blocks_cut_the_eos_separated_stream(small_tokenizer):
    texts = ["alpha beta gamma", "delta", "epsilon zeta eta theta"]
    stream = []
    for text in texts:
        stream += small_tokenizer(text, add_special_tokens=False)["input_ids"]
        stream.append(small_tokenizer.eos_token_id)
    blocks = token_blocks(small_tokenizer, texts, block_size=4)
    assert blocks.dtype == torch.long
    assert blocks.shape == (len(stream) // 4, 4)
    assert blocks.flatten().tolist() == stream[: blocks.numel()]
    with pytest.raises(ValueError, match="block_size must be an integer >= 2, got 1"):
        token_blocks(small_tokenizer, texts, block_size=1)
    with pytest.raises(ValueError, match="longer than the whole text"):
        token_blocks(small_tokenizer, ["a"], block_size=1000)
