"""WordPiece tokenization with Hugging Face `tokenizers`, configured exactly like BERT's.

BERT's BasicTokenizer (clean text, pad CJK characters, lowercase + strip accents, split on
whitespace and punctuation) is `BertNormalizer` + `BertPreTokenizer`; its WordpieceTokenizer
(greedy longest match, `##` continuations, words over 100 characters -> [UNK] as in Hugging
Face's; the original's limit is 200) is the `WordPiece` model. Token ids are always looked up
in the vocab, never hard-coded: bert-base-uncased has [PAD]=0, [UNK]=100, [CLS]=101, while
vocabs trained here put the special tokens first.
"""

from __future__ import annotations

import array
import collections
import itertools
import os
import pathlib
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
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
# Longer words -> [UNK]: Hugging Face's value (the parity target); the original Python
# WordpieceTokenizer's is 200, so a word of 101-200 characters is [UNK] here and split there.
MAX_INPUT_CHARS_PER_WORD = 100
# A trained vocab's alphabet covers at least this fraction of the corpus's characters.
ALPHABET_COVERAGE = 0.9995
_TRAIN_BATCH = 1000  # sentences per batch handed to the Rust trainer
_WORD_CACHE_LIMIT = 500_000  # distinct words SentenceEncoder keeps (~60 MB) before it starts afresh
_WORDS_PER_CALL = 64  # words joined into one tokenizer input by SentenceEncoder


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
    batches: Iterable[list[str]], tokenizer: Tokenizer, limit: int, room: int
) -> tuple[list[str], list[str]]:
    """The trainer's alphabet and `##` continuation symbols, computed in a fixed order.

    The alphabet is the `limit` most frequent characters, and more while it covers less than
    ALPHABET_COVERAGE of the corpus's characters (a Chinese corpus needs its thousands of common
    characters: each is a word of its own and enters the vocab only through the alphabet); those
    extra characters and their `##` symbols stay within `room` vocab entries. HF's trainer
    numbers `##x` symbols in hash-map order, and ties between equally frequent merges are
    broken by those numbers, so two runs on the same text give different vocabs. Registering the
    symbols up front, sorted, makes training deterministic.
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
    ranked = sorted(counts, key=lambda ch: (-counts[ch], ch))  # ties by code point
    total, covered, size, taken = sum(counts.values()), 0, 0, 0
    for ch in ranked:
        cost = 1 + (ch in continuing)  # the character and its `##` symbol
        if taken >= limit and (covered >= ALPHABET_COVERAGE * total or size + cost > room):
            break
        covered, size, taken = covered + counts[ch], size + cost, taken + 1
    alphabet = sorted(ranked[:taken])
    return alphabet, ["##" + ch for ch in alphabet if ch in continuing]


def train_wordpiece(
    documents_or_files: Iterable[Sequence[str]]
    | Callable[[], Iterable[Sequence[str]]]
    | Sequence[str | os.PathLike],
    vocab_size: int,
    output_path: str | os.PathLike,
    *,
    lowercase: bool = True,
    strip_accents: bool | None = None,
    min_frequency: int = 2,
    limit_alphabet: int = 1000,
) -> pathlib.Path:
    """Trains a WordPiece vocab and writes it as a BERT vocab.txt; returns its path.

    `documents_or_files` is either documents (lists of sentence strings), a function returning a
    fresh iterator over documents (a streamed corpus too big for memory), or paths of text files
    (one sentence per line). `output_path` is the vocab file, or a folder to hold `vocab.txt`.
    Special tokens come first, so [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4. The same text
    and arguments always give the same vocab. The alphabet holds the `limit_alphabet` most
    frequent characters and more, up to 99.95% of the text's characters (see `_fixed_alphabet`);
    rarer characters become [UNK]. The vocab comes out smaller than `vocab_size` when the text
    offers no more pieces seen `min_frequency` times.
    """
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size={vocab_size} leaves no room next to {SPECIAL_TOKENS}.")
    output_path = pathlib.Path(output_path)
    if output_path.is_dir():
        output_path = output_path / "vocab.txt"
    source = documents_or_files
    if callable(source):  # a corpus streamed afresh on each of the two passes
        source = _Restartable(source)
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
        # Read twice (alphabet, then training), so a one-shot iterator is listed first.
        documents = source if isinstance(source, (Sequence, _Restartable)) else list(source)
    tokenizer = _configure(Tokenizer(models.WordPiece(unk_token=UNK)), lowercase, strip_accents, {})
    alphabet, continuing = _fixed_alphabet(
        _sentence_batches(documents, files),
        tokenizer,
        limit_alphabet,
        room=vocab_size - len(SPECIAL_TOKENS),
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


class SentenceEncoder:
    """Encodes batches of sentences into one flat id array, tokenizing each distinct word once.

    BERT tokenization never crosses a plain space: the normalizer works character by character
    and the pre-tokenizer splits on whitespace first. So tokens(" ".join(words)) is the
    concatenation of tokens(word), and a corpus with a Zipfian vocabulary needs the Rust
    tokenizer only for its distinct space-separated words (~5x fewer calls on Wikipedia text);
    the rest is dictionary lookups and NumPy gathers. Tests check equality with `encode`.

    `word_starts` marks the first token of each word, for whole-word masking: "wordpiece" uses
    BERT's rule (a `##` token continues the previous word), "segmented" the space-separated words
    of the input (a pre-segmented Chinese corpus), "none" marks every token.
    """

    def __init__(self, tokenizer: Tokenizer, word_starts: str = "none", cache_limit: int = 0):
        if word_starts not in ("none", "wordpiece", "segmented"):
            raise ValueError(
                f"word_starts={word_starts!r} must be 'none', 'wordpiece' or 'segmented'."
            )
        self.tokenizer = tokenizer
        self.word_starts = word_starts
        self.cache_limit = cache_limit or _WORD_CACHE_LIMIT
        self.tokens = vocab_tokens(tokenizer)  # in id order
        self._continuation = np.array([t.startswith("##") for t in self.tokens], bool)
        # Printable-ASCII words skip the Rust normalizer (about half of its cost): for them
        # BertNormalizer only lowercases (no accents, controls, whitespace or CJK to handle).
        self._plain, self._lowercase = None, False
        normalizer = tokenizer.normalizer
        if isinstance(normalizer, normalizers.BertNormalizer):
            self._plain = Tokenizer(tokenizer.model)  # the same WordPiece model, shared
            self._plain.pre_tokenizer = tokenizer.pre_tokenizer
            self._lowercase = bool(normalizer.lowercase)
        self._reset()

    def _reset(self) -> None:
        self._index: dict[str, int] = {}
        self._ids = array.array("i")
        self._offsets = array.array("q", [0])

    def _add_words(self, words: list[str]) -> None:
        plain = [w for w in words if w.isascii() and w.isprintable()] if self._plain else []
        if plain:
            other = [w for w in words if not (w.isascii() and w.isprintable())]
            texts = [w.lower() for w in plain] if self._lowercase else plain
            self._add_encoded(plain, texts, self._plain)
            words = other
        self._add_encoded(words, words, self.tokenizer)

    def _add_encoded(self, words: list[str], texts: list[str], tokenizer: Tokenizer) -> None:
        if not words:
            return
        # The tokenizer's cost is per call as much as per character (~15 us per input), so
        # words go in groups joined by spaces, and token offsets tell which word each came from.
        n = _WORDS_PER_CALL
        groups = [" ".join(texts[i : i + n]) for i in range(0, len(texts), n)]
        encodings = tokenizer.encode_batch(groups, add_special_tokens=False)
        # Character positions over all groups laid end to end, each followed by one separator.
        group_base = np.cumsum([len(g) + 1 for g in groups]) - [len(g) + 1 for g in groups]
        lengths = np.fromiter(map(len, texts), np.int64, len(texts))
        word_starts = np.cumsum(lengths + 1) - lengths - 1
        tokens_per_group = np.fromiter((len(e.ids) for e in encodings), np.int64, len(groups))
        token_starts = np.fromiter(
            (o[0] for e in encodings for o in e.offsets), np.int64, int(tokens_per_group.sum())
        ) + np.repeat(group_base, tokens_per_group)
        word_of_token = np.searchsorted(word_starts, token_starts, side="right") - 1
        per_word = np.bincount(word_of_token, minlength=len(words))
        base, first = len(self._ids), len(self._index)
        self._ids.extend(itertools.chain.from_iterable(e.ids for e in encodings))
        self._offsets.extend((base + np.cumsum(per_word)).tolist())
        self._index.update(zip(words, range(first, first + len(words)), strict=True))

    def encode(self, sentences: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids int32 [T], tokens per sentence int64 [N], word-start flags bool [T])."""
        split = [s.split(" ") for s in sentences]
        words = list(itertools.chain.from_iterable(split))
        # Look everything up first: on a warm cache that is all (no set of all words needed).
        index = np.fromiter(map(self._index.get, words, itertools.repeat(-1)), np.int64, len(words))
        misses = np.flatnonzero(index < 0).tolist()
        if misses:
            missing = {words[i] for i in misses}
            if len(self._index) + len(missing) > self.cache_limit:  # bounded memory
                self._reset()
                missing, misses = set(words), range(len(words))
            # (Cache order is internal: the ids of a word never depend on it.)
            self._add_words(list(missing))
            get = self._index.__getitem__
            if len(misses) > len(words) // 8:  # mostly new (a cold cache): C-speed map
                index = np.fromiter(map(get, words), np.int64, len(words))
            else:
                index[misses] = [get(words[i]) for i in misses]
        offsets = np.frombuffer(self._offsets, np.int64)
        starts, lengths = offsets[index], offsets[index + 1] - offsets[index]
        total = int(lengths.sum())
        word_begin = np.cumsum(lengths) - lengths
        ids = np.frombuffer(self._ids, np.int32)[
            np.repeat(starts - word_begin, lengths) + np.arange(total, dtype=np.int64)
        ]
        words_per_sentence = np.fromiter(map(len, split), np.int64, len(split))
        sentence_first_word = np.cumsum(words_per_sentence) - words_per_sentence
        cumulative = np.concatenate([[0], np.cumsum(lengths)])
        per_sentence = (
            cumulative[sentence_first_word + words_per_sentence] - cumulative[sentence_first_word]
        )
        if self.word_starts == "segmented":
            flags = np.zeros(total, bool)
            flags[word_begin[lengths > 0]] = True
        elif self.word_starts == "wordpiece":
            flags = ~self._continuation[ids]
        else:
            flags = np.ones(total, bool)
        return ids, per_sentence, flags


class _Restartable:
    """An iterable whose every iteration streams the corpus again from `factory()`."""

    def __init__(self, factory: Callable[[], Iterable[Sequence[str]]]):
        self._factory = factory

    def __iter__(self) -> Iterator[Sequence[str]]:
        return iter(self._factory())
