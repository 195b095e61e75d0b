"""The short user-facing API: a BERT tokenizer whose output feeds `BertModel` directly.

    tok, model, variables = bert_jax.from_pretrained("path/to/checkpoint")
    out = model.apply(variables, **tok(["Hello, my dog is cute"]))
    out["sequence_output"], out["hidden_states"], out["pooled_output"]

`path` is anything `bert_jax.convert.load_pretrained` reads: a Hugging Face directory, a Google
TF checkpoint directory, or one of our workdirs.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from tokenizers import Encoding, Tokenizer

from bert_jax import tokenization
from bert_jax.model import BertConfig, BertModel

_PADDINGS = ("longest", "max_length")
_TENSOR_TYPES = ("np", "jax")


def truncated_lengths(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """Lengths after BERT's `_truncate_seq_pair`: drop one token at a time from the longer side.

    On a tie the original pops from the second sequence, so the second side loses the odd token.
    Closed form of that loop, so a 100k-token input costs nothing.
    """
    excess = len_a + len_b - budget
    if excess <= 0:
        return len_a, len_b
    first = min(excess, abs(len_a - len_b))  # shorten the longer side until the two are equal
    if len_a > len_b:
        len_a -= first
    else:
        len_b -= first
    rest = excess - first
    return len_a - rest // 2, len_b - (rest - rest // 2)


class BertTokenizer:
    """BERT WordPiece tokenization returning the model's own argument names.

    `tok(texts)` gives int32 `input_ids`, `input_mask`, `segment_ids` of shape [batch, length]
    with [CLS] ... [SEP] (and `... [SEP] pair [SEP]` with segment 1 for a pair), so
    `model.apply(variables, **tok(texts))` works as it is.
    """

    def __init__(self, tokenizer: Tokenizer, *, model_max_length: int = 512):
        self.backend = tokenizer  # a `tokenizers.Tokenizer` from tokenization.load_tokenizer
        self.lowercase = True  # how the backend normalizes (set by from_vocab)
        self.model_max_length = model_max_length
        special = tokenization.vocab_special_ids(tokenizer)
        self.pad_id = special[tokenization.PAD]
        self.unk_id = special[tokenization.UNK]
        self.cls_id = special[tokenization.CLS]
        self.sep_id = special[tokenization.SEP]
        self.mask_id = special[tokenization.MASK]

    @classmethod
    def from_vocab(
        cls,
        vocab_file: str | os.PathLike,
        *,
        lowercase: bool = True,
        strip_accents: bool | None = None,
        model_max_length: int = 512,
    ) -> BertTokenizer:
        """From a BERT vocab.txt; lowercase=False for cased vocabs. Accents are stripped when
        lowercasing unless `strip_accents` says otherwise (tokenizer_config.json's option)."""
        tok = cls(
            tokenization.load_tokenizer(
                vocab_file, lowercase=lowercase, strip_accents=strip_accents
            ),
            model_max_length=model_max_length,
        )
        tok.lowercase = lowercase
        return tok

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=False)

    def encode_pieces(self, texts: Sequence[str]) -> list[Encoding]:
        """Wordpieces of each text with no [CLS]/[SEP]: ids, tokens, offsets, word ids."""
        return self.backend.encode_batch(list(texts), add_special_tokens=False)

    def tokenize(self, text: str) -> list[str]:
        """The wordpieces of `text`, without [CLS]/[SEP] (as HF's `tokenize`)."""
        return self.backend.encode(text, add_special_tokens=False).tokens

    def convert_ids_to_tokens(self, ids: Sequence[int] | np.ndarray) -> list[str]:
        vocab_size = self.vocab_size
        bad = [int(i) for i in np.asarray(ids).reshape(-1) if not 0 <= int(i) < vocab_size]
        if bad:
            raise ValueError(f"ids {bad[:5]} are outside the vocab [0, {vocab_size}).")
        return [self.backend.id_to_token(int(i)) for i in np.asarray(ids).reshape(-1)]

    def convert_tokens_to_ids(self, tokens: Sequence[str]) -> list[int]:
        """Unknown tokens map to [UNK]'s id, as in BERT's `convert_tokens_to_ids`."""
        ids = (self.backend.token_to_id(t) for t in tokens)
        return [self.unk_id if i is None else i for i in ids]

    def decode(self, ids: Sequence[int] | np.ndarray, skip_special_tokens: bool = True) -> str:
        """Joins wordpieces back into text (lowercased/accent-stripped text stays that way)."""
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        if skip_special_tokens:
            # Padding and markers are not text; the Rust decoder only skips "added" tokens,
            # which a vocab.txt loaded as a plain WordPiece vocab does not mark.
            special = {self.pad_id, self.cls_id, self.sep_id, self.mask_id}
            ids = [i for i in ids if i not in special]
        return self.backend.decode(ids, skip_special_tokens=False)

    def __call__(
        self,
        texts: str | Sequence[str],
        pairs: str | Sequence[str] | None = None,
        *,
        max_length: int | None = None,
        padding: str = "longest",
        truncation: bool = True,
        return_tensors: str = "np",
        return_offsets: bool = False,
    ) -> dict[str, Any]:
        """Encodes a batch; `max_length` (default: model_max_length) counts [CLS]/[SEP].

        With `return_offsets=True` the result also has `offsets` [B, S, 2] (character spans in
        the text or, for segment-1 tokens, in the pair text; (0, 0) for specials and padding)
        and `word_ids` [B, S] (-1 for specials and padding). They are left out by default so
        that `model.apply(variables, **tok(texts))` gets only model arguments.
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        if isinstance(pairs, str):
            pairs = [pairs]
        if not texts:
            raise ValueError("texts is empty; pass at least one string.")
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(
                f"got {len(texts)} texts but {len(pairs)} pairs; pass one pair text per text."
            )
        if padding not in _PADDINGS:
            raise ValueError(f"padding={padding!r}; use one of {_PADDINGS}.")
        if return_tensors not in _TENSOR_TYPES:
            raise ValueError(f"return_tensors={return_tensors!r}; use one of {_TENSOR_TYPES}.")
        max_length = self.model_max_length if max_length is None else max_length
        n_special = 2 if pairs is None else 3
        if max_length < n_special:
            raise ValueError(
                f"max_length={max_length} leaves no room for the {n_special} [CLS]/[SEP] markers; "
                f"use max_length >= {n_special}."
            )
        enc_a = self.encode_pieces(texts)
        enc_b = self.encode_pieces(pairs) if pairs is not None else [None] * len(texts)
        budget = max_length - n_special
        rows = []
        for i, (a, b) in enumerate(zip(enc_a, enc_b, strict=True)):
            len_a, len_b = len(a.ids), (0 if b is None else len(b.ids))
            if len_a + len_b > budget:
                if not truncation:
                    raise ValueError(
                        f"text {i} has {len_a + len_b + n_special} tokens with [CLS]/[SEP], over "
                        f"max_length={max_length}; pass truncation=True, a larger max_length, or "
                        "use bert_jax.extract_features.extract, which splits long texts."
                    )
                len_a, len_b = truncated_lengths(len_a, len_b, budget)
            rows.append(self._assemble(a, len_a, b, len_b))
        return self._pad(rows, max_length, padding, return_tensors, return_offsets)

    def _assemble(self, a: Encoding, len_a: int, b: Encoding | None, len_b: int):
        """[CLS] a [SEP] (b [SEP]): ids, segments, offsets, word ids of one row."""
        ids = [self.cls_id, *a.ids[:len_a], self.sep_id]
        offsets = [(0, 0), *a.offsets[:len_a], (0, 0)]
        words = [-1, *(-1 if w is None else w for w in a.word_ids[:len_a]), -1]
        segments = [0] * len(ids)
        if b is not None:
            ids += [*b.ids[:len_b], self.sep_id]
            offsets += [*b.offsets[:len_b], (0, 0)]
            words += [*(-1 if w is None else w for w in b.word_ids[:len_b]), -1]
            segments += [1] * (len_b + 1)
        return ids, segments, offsets, words

    def _pad(self, rows, max_length, padding, return_tensors, return_offsets):
        length = max_length if padding == "max_length" else max(len(r[0]) for r in rows)
        batch = len(rows)
        input_ids = np.full((batch, length), self.pad_id, np.int32)
        input_mask = np.zeros((batch, length), np.int32)
        segment_ids = np.zeros((batch, length), np.int32)
        offsets = np.zeros((batch, length, 2), np.int32)
        word_ids = np.full((batch, length), -1, np.int32)
        for i, (ids, segments, offs, words) in enumerate(rows):
            n = len(ids)
            input_ids[i, :n] = ids
            input_mask[i, :n] = 1
            segment_ids[i, :n] = segments
            offsets[i, :n] = offs
            word_ids[i, :n] = words
        out = {"input_ids": input_ids, "input_mask": input_mask, "segment_ids": segment_ids}
        if return_offsets:
            out.update(offsets=offsets, word_ids=word_ids)
        if return_tensors == "jax":
            import jax.numpy as jnp

            out = {k: jnp.asarray(v) for k, v in out.items()}
        return out


def from_pretrained(
    path: str | os.PathLike, *, dtype: str = "float32"
) -> tuple[BertTokenizer, BertModel, dict[str, Any]]:
    """(tokenizer, model, variables) from a pre-trained checkpoint directory.

    `variables` is `{"params": encoder params}`; task heads in the checkpoint (MLM/NSP,
    classifier, QA) are not part of `BertModel` and are left out here; use
    `bert_jax.convert.load_pretrained` to get them. `dtype="bfloat16"` runs the matmuls in
    bfloat16 (parameters stay float32). The other compute settings are the defaults, whatever a
    workdir trained with; for a lever, `BertModel(dataclasses.replace(model.config, ...))`.
    """
    import jax

    from bert_jax import convert  # lazy: conversion pulls in safetensors/TF readers

    loaded = convert.load_pretrained(path)
    if loaded.vocab_file is None:
        raise FileNotFoundError(
            f"{os.fspath(path)!r} has no vocab.txt (nor a tokenizer.json with a WordPiece "
            "vocab), so no tokenizer can be built; copy the model's vocab.txt into that directory."
        )
    config: BertConfig = dataclasses.replace(loaded.config, dtype=dtype)
    tokenizer = BertTokenizer.from_vocab(
        loaded.vocab_file,
        lowercase=loaded.lowercase,
        strip_accents=loaded.strip_accents,
        model_max_length=config.max_position_embeddings,
    )
    if tokenizer.vocab_size > config.vocab_size:
        # More tokens than embedding rows would index past the table (JAX clamps silently).
        raise ValueError(
            f"{loaded.vocab_file} has {tokenizer.vocab_size} tokens but the model has "
            f"vocab_size={config.vocab_size} embeddings; the vocab.txt belongs to another model."
        )
    model = BertModel(config)
    params = loaded.params["bert"]
    if "pooler" not in params:
        # Hugging Face token-classification and QA saves carry no pooler. A fresh one keeps
        # `pooled_output` defined, but its values are meaningless: say so.
        template = model.init(jax.random.PRNGKey(0), np.zeros((1, 8), np.int32))["params"]
        params, report = convert.merge_params(template, params)
        warnings.warn(
            f"{os.fspath(path)!r} has no pooler; it was initialised at random "
            f"({report['initialised fresh']}), so pooled_output is not meaningful.",
            stacklevel=2,
        )
    return tokenizer, model, {"params": jax.device_put(params)}
