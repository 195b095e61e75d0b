"""Documents -> BERT pre-training instances (sentence pairs, next-sentence labels, masked LM).

The recipe of google-research/bert's create_pretraining_data.py, in distribution:
- each document is cut, `dupe_factor` times over with fresh randomness, into chunks of whole
  sentences of about `max_seq_length - 3` tokens (with probability `short_seq_prob` the document
  gets a shorter random target, so the model also sees short sequences);
- each chunk is split at a random sentence boundary into A and B; half the time (always when the
  chunk is one sentence) B is replaced by text from a random other document and the unused
  sentences are put back for the next chunk;
- the pair is truncated to fit, one token at a time from the longer side, front or back at random;
- masking: see `bert_jax.data.masking`.
With `next_sentence=False` (RoBERTa's FULL-SENTENCES, the "No NSP" ablation of BERT Table 5) an
instance is one segment packed with whole consecutive sentences up to the target length, crossing
document boundaries with a [SEP] between documents; next_sentence_labels are 0.

How it is made fast: a chunk of documents is one flat token array; an instance is a few ranges
of that array (A and B; [CLS], [SEP] and padding live at fixed slots), so truncation is index
arithmetic and a batch of instances is assembled with NumPy gathers. Only the sentence-level
recipe runs in Python, and it touches no tokens. Features and statistics: instances.py.

Deviations from the original, none changing the distribution of an instance:
- truncation draws how many of the k removed tokens come off the front as Binomial(k, 1/2) in one
  call instead of k coin flips;
- the random B document is uniform over the other documents of the chunk (the original retried 10
  times for a document other than the current one, out of the whole corpus; see streaming.py for
  chunks);
- integers are drawn as int(random() * n), which is uniform up to a bias below n / 2**53.
"""

from __future__ import annotations

import array
import bisect
import dataclasses
from collections.abc import Sequence

import numpy as np

from bert_jax.data import masking
from bert_jax.tokenization import CLS, SEP, SentenceEncoder

# Every chunk's token array starts with [CLS], [SEP] and a padding token (id 0, as the
# original pads), so instances are index arrays into it.
CLS_SLOT, SEP_SLOT, PAD_SLOT = 0, 1, 2
_SLOTS = 3
_ENCODE_SENTENCES = 8192  # sentences per SentenceEncoder call (bounds transient memory)


@dataclasses.dataclass(frozen=True)
class RecipeConfig:
    max_seq_length: int = 128
    short_seq_prob: float = 0.1
    dupe_factor: int = 5
    next_sentence: bool = True  # False: single segments packed to length (no NSP task)

    def __post_init__(self):
        if self.max_seq_length < 5:
            raise ValueError(f"max_seq_length={self.max_seq_length} is too short; use >= 5.")
        if not 0 <= self.short_seq_prob <= 1:
            raise ValueError(f"short_seq_prob={self.short_seq_prob} must be in [0, 1].")
        if self.dupe_factor < 1:
            raise ValueError(f"dupe_factor={self.dupe_factor} must be >= 1.")


@dataclasses.dataclass
class Chunk:
    """Tokenized documents: one flat token array, [CLS], [SEP] and padding at its first slots."""

    tokens: np.ndarray  # int32
    flags: np.ndarray  # uint8: masking.CANDIDATE | masking.WORD_START
    sentences: list[list[int]]  # per document: token offset of each sentence, then the end

    @property
    def num_documents(self) -> int:
        return len(self.sentences)


def tokenize_chunk(
    documents: Sequence[Sequence[str]], encoder: SentenceEncoder, counts: dict[str, int]
) -> Chunk:
    """Tokenizes documents; sentences and documents left without tokens are dropped (counted)."""
    special = encoder.tokenizer
    ids_parts = [np.array([special.token_to_id(CLS), special.token_to_id(SEP), 0], np.int32)]
    flag_parts = [np.zeros(_SLOTS, np.uint8)]
    per_sentence_parts = []
    flat = [s for doc in documents for s in doc]
    for start in range(0, len(flat), _ENCODE_SENTENCES):
        ids, per_sentence, starts = encoder.encode(flat[start : start + _ENCODE_SENTENCES])
        ids_parts.append(ids)
        flag_parts.append(masking.CANDIDATE | (starts.astype(np.uint8) * masking.WORD_START))
        per_sentence_parts.append(per_sentence)
    per_sentence = np.concatenate(per_sentence_parts) if per_sentence_parts else np.zeros(0, int)
    ends = (_SLOTS + np.cumsum(per_sentence)).tolist()
    lengths = per_sentence.tolist()
    sentences, k = [], 0
    for doc in documents:
        offsets = [ends[i] - lengths[i] for i in range(k, k + len(doc)) if lengths[i]]
        counts["empty_sentences"] += len(doc) - len(offsets)
        if offsets:
            offsets.append(ends[k + len(doc) - 1])
            sentences.append(offsets)
            counts["one_sentence_documents"] += len(offsets) == 2
        else:
            counts["empty_documents"] += 1
        k += len(doc)
    counts["documents"] += len(sentences)
    counts["sentences"] += sum(len(s) - 1 for s in sentences)
    counts["document_tokens"] += int(per_sentence.sum())
    return Chunk(np.concatenate(ids_parts), np.concatenate(flag_parts), sentences)


class Instances:
    """Instances as pieces of a chunk's token array.

    Sentence pairs are rows (a_start, a_len, b_start, b_len, random_next, short), appended as
    tuples (one cheap call per instance in the hot loop) and packed into NumPy every
    `_PACK_ROWS`; packed single segments have a variable number of pieces, kept in typed arrays.
    """

    _PACK_ROWS = 65_536

    def __init__(self):
        self.pairs: list[tuple[int, int, int, int, bool, bool]] = []
        self._packed_pairs: list[np.ndarray] = []
        self.src = array.array("q")  # piece start in the chunk's tokens (single segments)
        self.length = array.array("q")
        self.end = array.array("q")  # cumulative piece count after each instance
        self.short = array.array("b")  # made with a short target length

    def __len__(self) -> int:
        return len(self.pairs) + sum(map(len, self._packed_pairs)) + len(self.end)

    def pack(self) -> None:
        """Moves the pending pair tuples into a compact array (bounds memory)."""
        if self.pairs:
            self._packed_pairs.append(np.array(self.pairs, np.int64).reshape(-1, 6))
            self.pairs = []

    def add_single(self, pieces: list[tuple[int, int]], short: bool) -> None:
        for src, length in pieces:
            self.src.append(src)
            self.length.append(length)
        self.end.append(len(self.src))
        self.short.append(short)

    def arrays(self) -> dict[str, np.ndarray]:
        """Per instance: pairs as a0, la, b0, lb; single segments as ragged pieces (src, length,
        segment, end); both with random_next and short."""
        self.pack()
        if self._packed_pairs:
            rows = np.concatenate(self._packed_pairs)
            return {
                "a0": rows[:, 0], "la": rows[:, 1], "b0": rows[:, 2], "lb": rows[:, 3],
                "random_next": rows[:, 4].astype(np.int8), "short": rows[:, 5].astype(np.int8),
            }  # fmt: skip
        n = len(self.end)
        return {
            "src": np.frombuffer(self.src, np.int64),
            "length": np.frombuffer(self.length, np.int64),
            "segment": np.zeros(len(self.src), np.int8),
            "end": np.frombuffer(self.end, np.int64),
            "random_next": np.zeros(n, np.int8),
            "short": np.frombuffer(self.short, np.int8),
        }


def _trim(la: int, lb: int, max_tokens: int) -> tuple[int, int]:
    """How many tokens the original's loop removes from A and B (the longer side each time;
    on a tie B)."""
    excess = la + lb - max_tokens
    if excess <= 0:
        return 0, 0
    ra = rb = 0
    if la > lb:
        ra = min(excess, la - lb)
    else:
        rb = min(excess, lb - la)
    excess -= ra + rb
    return ra + excess // 2, rb + (excess + 1) // 2


def _front(removed: int, getrandbits) -> int:
    # Each removal is from the front with probability 1/2: Binomial(removed, 1/2).
    return getrandbits(removed).bit_count() if removed else 0


def nsp_document(
    chunk: Chunk, d: int, cfg: RecipeConfig, *, rng, out: Instances, counts: dict[str, int]
) -> None:
    """One pass of the recipe over document `d` of the chunk (sentence pairs with NSP)."""
    # The hottest Python loop of data creation: locals only, one call per instance.
    random, getrandbits, add_pair = rng.random, rng.getrandbits, out.pairs.append
    docs = chunk.sentences
    st = docs[d]
    n = len(st) - 1
    max_tokens = cfg.max_seq_length - 3  # room for [CLS], [SEP], [SEP]
    target, short = max_tokens, False
    if random() < cfg.short_seq_prob:  # chosen once per document, as in the original
        target, short = 2 + int(random() * (max_tokens - 1)), True
    counts["target_draws"] += 1
    counts["short_target_draws"] += short
    n_docs = len(docs)
    forced = truncated = 0
    begin = i = 0
    while i < n:
        if i == n - 1 or st[i + 1] - st[begin] >= target:
            m = i - begin + 1  # sentences in the chunk
            a_end = begin + (1 + int(random() * (m - 1)) if m >= 2 else 1)
            a0, a1 = st[begin], st[a_end]
            if m == 1 or random() < 0.5:
                forced += m == 1
                other = int(random() * (n_docs - 1))
                other += other >= d  # uniform over the other documents
                ost = docs[other]
                s = int(random() * (len(ost) - 1))
                b0 = ost[s]
                # Sentences from s on until B reaches its share of the target.
                e = bisect.bisect_left(ost, b0 + target - (a1 - a0), s + 1, len(ost) - 1)
                b1 = ost[e]
                i = a_end - 1  # the chunk's unused sentences go back for the next chunk
                random_next = True
            else:
                b0, b1, random_next = a1, st[i + 1], False
            la, lb = a1 - a0, b1 - b0
            if la + lb > max_tokens:
                ra, rb = _trim(la, lb, max_tokens)
                truncated += ra + rb
                fa, fb = _front(ra, getrandbits), _front(rb, getrandbits)
                a0, la, b0, lb = a0 + fa, la - ra, b0 + fb, lb - rb
            add_pair((a0, la, b0, lb, random_next, short))
            begin = i + 1
        i += 1
    counts["forced_random_next"] += forced
    counts["truncated_tokens"] += truncated
    if len(out.pairs) >= out._PACK_ROWS:
        out.pack()


def packed_pass(
    chunk: Chunk, order: list[int], cfg: RecipeConfig, *, rng, out: Instances, counts
) -> None:
    """One pass packing whole sentences into single segments (next_sentence=False)."""
    random, getrandbits = rng.random, rng.getrandbits
    max_tokens = cfg.max_seq_length - 2  # room for [CLS], [SEP]

    def new_target() -> tuple[int, bool]:
        counts["target_draws"] += 1
        if random() < cfg.short_seq_prob:  # per instance: packing has no per-document target
            counts["short_target_draws"] += 1
            return 2 + int(random() * (max_tokens - 1)), True
        return max_tokens, False

    target, short = new_target()
    pieces: list[tuple[int, int]] = []  # (start, length); contiguous sentences are merged
    used = 0
    for d in order:
        st = chunk.sentences[d]
        new_doc = bool(pieces)  # a [SEP] separates documents inside one instance
        for i in range(len(st) - 1):
            s0, n = st[i], st[i + 1] - st[i]
            sep = 1 if new_doc else 0
            if pieces and used + sep + n > target:  # does not fit: close this instance
                out.add_single([(CLS_SLOT, 1), *pieces, (SEP_SLOT, 1)], short)
                target, short = new_target()
                pieces, used, sep = [], 0, 0
            if n > target:  # a sentence longer than the target alone: truncate it
                counts["truncated_tokens"] += n - target
                front = _front(n - target, getrandbits)
                s0, n = s0 + front, target
            if sep:
                pieces.append((SEP_SLOT, 1))
            if pieces and not sep and pieces[-1][0] + pieces[-1][1] == s0:
                pieces[-1] = (pieces[-1][0], pieces[-1][1] + n)
            else:
                pieces.append((s0, n))
            used += sep + n
            new_doc = False
    if pieces:
        out.add_single([(CLS_SLOT, 1), *pieces, (SEP_SLOT, 1)], short)


def chunk_instances(chunk: Chunk, cfg: RecipeConfig, rng, counts: dict[str, int]) -> Instances:
    """All `dupe_factor` passes over a chunk (an unshuffled table of instances)."""
    if chunk.num_documents < 2 and cfg.next_sentence:
        raise ValueError(
            f"a chunk has {chunk.num_documents} non-empty document(s); a random next sentence "
            "needs at least 2. Use a bigger corpus or fewer shards (num_train_files)."
        )
    out = Instances()
    for _ in range(cfg.dupe_factor):
        if cfg.next_sentence:
            for d in range(chunk.num_documents):
                nsp_document(chunk, d, cfg, rng=rng, out=out, counts=counts)
        else:
            order = list(range(chunk.num_documents))
            rng.shuffle(order)
            packed_pass(chunk, order, cfg, rng=rng, out=out, counts=counts)
    return out


def assemble(
    chunk: Chunk, table: dict[str, np.ndarray], rows: np.ndarray, max_seq_length: int
) -> dict[str, np.ndarray]:
    """Padded arrays of instances `rows` of a table: tokens, segments, flags [B, S], lengths."""
    if "a0" in table:
        src, segments, lengths = _pair_layout(table, rows, max_seq_length)
    else:
        src, segments, lengths = _ragged_layout(table, rows, max_seq_length)
    return {
        "tokens": chunk.tokens[src],
        "segments": segments,
        "flags": chunk.flags[src],
        "lengths": lengths,
        "random_next": table["random_next"][rows],
        "short": table["short"][rows],
    }


def _pair_layout(table, rows, seq):
    """[CLS] A [SEP] B [SEP] as indices into the chunk's tokens, by broadcasting."""
    a0, la = table["a0"][rows, None], table["la"][rows, None]
    b0, lb = table["b0"][rows, None], table["lb"][rows, None]
    j = np.arange(seq, dtype=np.int64)[None, :]
    b_begin = la + 2
    src = np.where(
        (j >= 1) & (j <= la),
        a0 + j - 1,
        np.where((j >= b_begin) & (j < b_begin + lb), b0 + j - b_begin, PAD_SLOT),
    )
    src[:, 0] = CLS_SLOT
    r = np.arange(len(rows))
    src[r, la[:, 0] + 1] = SEP_SLOT
    src[r, (la + lb)[:, 0] + 2] = SEP_SLOT
    segments = ((j >= b_begin) & (j <= b_begin + lb)).astype(np.int8)
    return src, segments, (la + lb + 3)[:, 0]


def _ragged_layout(table, rows, seq):
    """Any list of pieces per instance (packed single segments)."""
    ends = table["end"][rows]
    begins = np.where(rows > 0, table["end"][np.maximum(rows - 1, 0)], 0)
    n_pieces = ends - begins
    piece = _ragged_range(begins, n_pieces)
    src, length, segment = table["src"][piece], table["length"][piece], table["segment"][piece]
    b = len(rows)
    row_of_piece = np.repeat(np.arange(b), n_pieces)
    piece_begin = np.cumsum(length) - length  # offset in the concatenation of all rows
    row_first_piece = np.cumsum(n_pieces) - n_pieces
    col_of_piece = piece_begin - np.repeat(piece_begin[row_first_piece], n_pieces)
    token_row = np.repeat(row_of_piece, length)
    token_col = np.repeat(col_of_piece, length) + _ragged_offsets(length)
    lengths = np.bincount(row_of_piece, weights=length, minlength=b).astype(np.int64)
    if lengths.max(initial=0) > seq:
        raise AssertionError(f"instance of {lengths.max()} tokens > {seq}")
    index = np.full((b, seq), PAD_SLOT, np.int64)
    index[token_row, token_col] = _ragged_range(src, length)
    segments = np.zeros((b, seq), np.int8)
    segments[token_row, token_col] = np.repeat(segment, length)
    return index, segments, lengths


def _ragged_offsets(lengths: np.ndarray) -> np.ndarray:
    """[0..l0), [0..l1), ... concatenated."""
    total = int(lengths.sum())
    return np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def _ragged_range(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """[s0..s0+l0), [s1..s1+l1), ... concatenated."""
    return np.repeat(starts, lengths) + _ragged_offsets(lengths)
