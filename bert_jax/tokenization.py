"""WordPiece tokenization with Hugging Face `tokenizers`, configured exactly like BERT's.

BERT's BasicTokenizer (clean text, pad CJK characters, lowercase + strip accents, split on
whitespace and punctuation) is `BertNormalizer` + `BertPreTokenizer`; its WordpieceTokenizer
(greedy longest match, `##` continuations, words over 100 characters -> [UNK]) is the `WordPiece`
model. Token ids are always looked up in the vocab, never hard-coded: bert-base-uncased has
[PAD]=0, [UNK]=100, [CLS]=101, while vocabs trained here put the special tokens first.
"""

from __future__ import annotations

import collections
import os
import pathlib
from collections.abc import Iterable, Iterator, Sequence

from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
# Trained vocabs list these first, in this order, so [PAD] is id 0 (zero padding = [PAD]).
SPECIAL_TOKENS = [PAD, UNK, CLS, SEP, MASK]
MAX_INPUT_CHARS_PER_WORD = 100  # as in BERT's WordpieceTokenizer
_TRAIN_BATCH = 1000  # sentences per batch handed to the Rust trainer


def _configure(
    tokenizer: Tokenizer, lowercase: bool, strip_accents: bool | None, vocab: dict[str, int]
) -> Tokenizer:
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=True,
        # None follows `lowercase`, which is what BERT does (accents go with do_lower_case).
        strip_accents=lowercase if strip_accents is None else strip_accents,
        lowercase=lowercase,
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    if CLS in vocab and SEP in vocab:
        # Applied only by encode(..., add_special_tokens=True) -- HF's default, so pass False
        # when building pre-training instances, which add [CLS]/[SEP] themselves.
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{CLS} $A {SEP}",
            pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
            special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])],
        )
    return tokenizer


def read_vocab(vocab_file: str | os.PathLike) -> dict[str, int]:
    """Reads a BERT vocab.txt: one token per line, id = line number."""
    vocab: dict[str, int] = {}
    with open(vocab_file, encoding="utf-8") as f:
        for line in f:
            token = line.rstrip("\n").rstrip("\r")
            if token in vocab:
                raise ValueError(f"{vocab_file}: token {token!r} appears twice; ids would shift.")
            vocab[token] = len(vocab)
    return vocab


def load_tokenizer(
    vocab_file: str | os.PathLike, lowercase: bool = True, strip_accents: bool | None = None
) -> Tokenizer:
    """A BERT WordPiece tokenizer from a vocab.txt (use lowercase=False for cased vocabs)."""
    if not os.path.isfile(vocab_file):
        raise FileNotFoundError(
            f"Vocab file {os.fspath(vocab_file)!r} not found; train one with train_wordpiece() "
            "or `python -m bert_jax.data.prepare`."
        )
    vocab = read_vocab(vocab_file)
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise ValueError(
            f"Vocab {os.fspath(vocab_file)!r} lacks special tokens {missing}; a BERT vocab needs "
            f"all of {SPECIAL_TOKENS}."
        )
    model = models.WordPiece(
        vocab, unk_token=UNK, max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD
    )
    return _configure(Tokenizer(model), lowercase, strip_accents, vocab)


def vocab_special_ids(tokenizer: Tokenizer) -> dict[str, int]:
    """Ids of the special tokens, e.g. {"[PAD]": 0, "[UNK]": 100, ...} for bert-base-uncased."""
    ids = {t: tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}
    missing = [t for t, i in ids.items() if i is None]
    if missing:
        raise ValueError(f"Tokenizer vocab lacks special tokens {missing}.")
    return ids


def vocab_tokens(tokenizer: Tokenizer) -> list[str]:
    """All tokens in id order (index = id)."""
    vocab = tokenizer.get_vocab(with_added_tokens=False)
    tokens = [""] * len(vocab)
    for token, i in vocab.items():
        tokens[i] = token
    return tokens


def _sentence_batches(
    documents: Iterable[Sequence[str]] | None, files: Sequence[str] | None
) -> Iterator[list[str]]:
    """Sentences in batches, from documents or from text files (a line is a sentence)."""
    batch: list[str] = []
    sources = documents if files is None else ([line] for f in files for line in _lines(f))
    for doc in sources:
        batch.extend(doc)
        if len(batch) >= _TRAIN_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _lines(path: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        yield from (line for line in f if line.strip())


def _fixed_alphabet(
    batches: Iterable[list[str]], tokenizer: Tokenizer, limit: int
) -> tuple[list[str], list[str]]:
    """The trainer's alphabet and `##` continuation symbols, computed in a fixed order.

    HF's trainer numbers `##x` symbols in hash-map order, and ties between equally frequent
    merges are broken by those numbers, so two runs on the same text give different vocabs.
    Registering the symbols up front, sorted, makes training deterministic.
    """
    words: collections.Counter[str] = collections.Counter()
    for batch in batches:
        # One normalize + pre-tokenize call per batch: newlines are whitespace to both.
        text = tokenizer.normalizer.normalize_str("\n".join(batch))
        words.update(w for w, _ in tokenizer.pre_tokenizer.pre_tokenize_str(text))
    counts: collections.Counter[str] = collections.Counter()
    continuing: set[str] = set()
    for word, n in words.items():
        for ch in word:
            counts[ch] += n
        continuing.update(word[1:])
    # The `limit` most frequent characters (ties by code point), like limit_alphabet.
    alphabet = sorted(sorted(counts, key=lambda ch: (-counts[ch], ch))[:limit])
    return alphabet, ["##" + ch for ch in alphabet if ch in continuing]


def train_wordpiece(
    documents_or_files: Iterable[Sequence[str]] | Sequence[str | os.PathLike],
    vocab_size: int,
    output_path: str | os.PathLike,
    *,
    lowercase: bool = True,
    strip_accents: bool | None = None,
    min_frequency: int = 2,
    limit_alphabet: int = 1000,
) -> pathlib.Path:
    """Trains a WordPiece vocab and writes it as a BERT vocab.txt; returns its path.

    `documents_or_files` is either documents (lists of sentence strings) or paths of text files
    (one sentence per line). `output_path` is the vocab file, or a folder to hold `vocab.txt`.
    Special tokens come first, so [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4. The same text
    and arguments always give the same vocab.
    """
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size={vocab_size} leaves no room next to {SPECIAL_TOKENS}.")
    output_path = pathlib.Path(output_path)
    if output_path.is_dir():
        output_path = output_path / "vocab.txt"
    source = documents_or_files
    if isinstance(source, (str, os.PathLike)):
        source = [source]  # one file path
    documents, files = None, None
    if (
        isinstance(source, Sequence)
        and source
        and all(isinstance(x, (str, os.PathLike)) for x in source)
    ):
        files = [os.fspath(x) for x in source]
        absent = [f for f in files if not os.path.isfile(f)]
        if absent:
            raise FileNotFoundError(
                f"train_wordpiece: files {absent[:3]} do not exist. Pass documents as lists of "
                "sentence strings, or paths of existing text files."
            )
    else:
        documents = source if isinstance(source, Sequence) else list(source)  # read twice
    tokenizer = _configure(Tokenizer(models.WordPiece(unk_token=UNK)), lowercase, strip_accents, {})
    alphabet, continuing = _fixed_alphabet(
        _sentence_batches(documents, files), tokenizer, limit_alphabet
    )
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        show_progress=False,
        # The `##x` symbols ride along as "special tokens" only to fix their ids: the trainer
        # adds special tokens first, in order. vocab.txt carries no notion of special tokens.
        special_tokens=SPECIAL_TOKENS + continuing,
        # Given the alphabet explicitly and limited to exactly it, the trainer adds no other
        # characters (rare ones, e.g. a stray CJK glyph, are left out: they become [UNK]).
        initial_alphabet=alphabet,
        limit_alphabet=len(alphabet),
        continuing_subword_prefix="##",
    )
    tokenizer.train_from_iterator(_sentence_batches(documents, files), trainer)
    tokens = vocab_tokens(tokenizer)
    if tokens[: len(SPECIAL_TOKENS)] != SPECIAL_TOKENS:
        raise RuntimeError(f"Trained vocab starts with {tokens[:5]}, expected {SPECIAL_TOKENS}.")
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_path.with_name(output_path.name + ".tmp")
    tmp.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    os.replace(tmp, output_path)
    return output_path
