"""Per-token BERT features (the feature-based approach of the BERT paper, section 5.3).

    python -m bert_jax.extract_features --checkpoint=DIR --input_file=in.txt \
        --output_file=out.jsonl --layers=-1,-2,-3,-4 --max_seq_length=128 --doc_stride=64

One text per line; `A ||| B` is a sentence pair. `--output_file` ending in .jsonl writes the
original extract_features.py format, .npz one array per text and layer. `--layers` takes
indices into hidden_states (-1 = last layer, 0 or "embeddings" = the embedding output).

What a text gives: `tokens` = [CLS] + the wordpieces of the whole text + [SEP], one vector
each. A text longer than max_seq_length - 2 wordpieces runs as overlapping windows (start every
doc_stride wordpieces, as SQuAD does) and each wordpiece takes its vector from the window where
it has the most context on both sides (SQuAD's `_check_is_max_context`), so every wordpiece
appears exactly once, in order. [CLS] and the pooled output come from the first window, the
closing [SEP] from the last (the window that really ends where the text ends). Pairs are not
windowed: they are truncated longest-first to max_seq_length, as the original does.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import re
import time
import zipfile
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax.model import BertModel
from bert_jax.pretrained import BertTokenizer, truncated_lengths

EMBEDDINGS = "embeddings"
# The original's pair rule: greedy, so "x ||| y ||| z" splits at the last " ||| ", and "A|||B"
# (no spaces) is one text.
PAIR_PATTERN = re.compile(r"^(.*) \|\|\| (.*)$")
# Shortest padded length. Most sentences are 10-40 wordpieces; one shape for all of them saves
# more compile time than the padding costs, except on very large inputs of very short texts.
_MIN_BUCKET = 32

Text = str | tuple[str, str]


def _next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def windows(num_tokens: int, capacity: int, doc_stride: int) -> list[tuple[int, int]]:
    """(start, length) spans over `num_tokens` wordpieces, as SQuAD's run_squad.py makes them."""
    spans, start = [], 0
    while True:
        length = min(num_tokens - start, capacity)
        spans.append((start, length))
        if start + length >= num_tokens:
            return spans
        start += min(length, doc_stride)


def max_context_window(spans: Sequence[tuple[int, int]], num_tokens: int) -> np.ndarray:
    """For each wordpiece, the window where min(left, right) context is largest.

    Score = min(left, right) + 0.01 * window length, first window on ties: SQuAD's rule.
    """
    starts = np.array([s for s, _ in spans])[:, None]
    lengths = np.array([n for _, n in spans])[:, None]
    pos = np.arange(num_tokens)[None, :]
    left, right = pos - starts, starts + lengths - 1 - pos
    score = np.minimum(left, right) + 0.01 * lengths
    score = np.where((left >= 0) & (right >= 0), score, -np.inf)
    return np.argmax(score, axis=0)  # argmax takes the first of equal scores


@functools.partial(jax.jit, static_argnums=(0, 1))
def _forward(model: BertModel, indices: tuple[int, ...], variables, batch):
    ids, mask, segments = batch
    out = model.apply(variables, ids, mask, segments, deterministic=True)
    # Only the requested layers leave the device, in float32 even for a bfloat16 model.
    chosen = jnp.stack([out["hidden_states"][i] for i in indices]).astype(jnp.float32)
    return chosen, out["pooled_output"].astype(jnp.float32)


def _layer_keys(layers: Sequence[int], num_layers: int, include_embeddings: bool):
    """(output keys, hidden_states index of each key)."""
    keys, indices = [], []
    for layer in layers:
        if not isinstance(layer, (int, np.integer)) or not -num_layers - 1 <= layer <= num_layers:
            raise ValueError(
                f"layer {layer!r} is not an index into hidden_states of a {num_layers}-layer "
                f"model; use -1 (last) ... -{num_layers + 1} (embeddings), or 0 ... {num_layers}."
            )
        keys.append(int(layer))
        indices.append(int(layer) % (num_layers + 1))
    if include_embeddings:
        keys.append(EMBEDDINGS)
        indices.append(0)
    if not keys:
        raise ValueError("no layers requested; pass layers=(-1,) or include_embeddings=True.")
    return keys, indices


def _rows(tokenizer: BertTokenizer, texts: Sequence[Text], max_seq_length: int, doc_stride: int):
    """Model input rows (ids, segments) of every window, and per text its wordpieces + spans."""
    singles = [i for i, t in enumerate(texts) if isinstance(t, str)]
    pairs = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    enc = dict(zip(singles, tokenizer.encode_pieces([texts[i] for i in singles]), strict=True))
    enc_a = tokenizer.encode_pieces([texts[i][0] for i in pairs])
    enc_b = tokenizer.encode_pieces([texts[i][1] for i in pairs])
    pair_enc = dict(zip(pairs, zip(enc_a, enc_b, strict=True), strict=True))
    cls, sep = tokenizer.cls_id, tokenizer.sep_id
    rows, plans = [], []
    for i in range(len(texts)):
        if i in enc:
            ids, tokens = enc[i].ids, enc[i].tokens
            spans = windows(len(ids), max_seq_length - 2, doc_stride)
            first = len(rows)
            for start, length in spans:
                window = [cls, *ids[start : start + length], sep]
                rows.append((window, [0] * len(window)))
            plans.append(("single", tokens, spans, first))
        else:
            a, b = pair_enc[i]
            len_a, len_b = truncated_lengths(len(a.ids), len(b.ids), max_seq_length - 3)
            ids = [cls, *a.ids[:len_a], sep, *b.ids[:len_b], sep]
            tokens = ["[CLS]", *a.tokens[:len_a], "[SEP]", *b.tokens[:len_b], "[SEP]"]
            segments = [0] * (len_a + 2) + [1] * (len_b + 1)
            plans.append(("pair", tokens, segments, len(rows)))
            rows.append((ids, segments))
    return rows, plans


def _run_rows(model, variables, indices, rows, *, batch_size: int, max_seq_length: int, pad_id):
    """Runs every row; returns per row ([K, len, H] chosen layers, [H] pooled) as numpy."""
    # Rows of similar length share a padded shape (a power of two, at most max_seq_length), and
    # a batch is padded to a power of two rows, so jit compiles O(log S * log B) shapes at most.
    by_bucket: dict[int, list[int]] = {}
    for r, (ids, _) in enumerate(rows):
        bucket = min(max(_next_pow2(len(ids)), _MIN_BUCKET), max_seq_length)
        by_bucket.setdefault(bucket, []).append(r)
    results: list[Any] = [None] * len(rows)
    pending = None  # (rows of the batch, device arrays) not yet copied back

    def collect(chunk, outputs):
        hidden, pooled = jax.device_get(outputs)
        for j, r in enumerate(chunk):
            results[r] = (hidden[:, j, : len(rows[r][0])], pooled[j])

    for length, members in sorted(by_bucket.items()):
        for k in range(0, len(members), batch_size):
            chunk = members[k : k + batch_size]
            n = min(_next_pow2(len(chunk)), batch_size)
            ids = np.full((n, length), pad_id, np.int32)
            mask = np.zeros((n, length), np.int32)
            segments = np.zeros((n, length), np.int32)
            for j, r in enumerate(chunk):
                row_ids, row_segments = rows[r]
                ids[j, : len(row_ids)] = row_ids
                mask[j, : len(row_ids)] = 1
                segments[j, : len(row_ids)] = row_segments
            outputs = _forward(model, tuple(indices), variables, (ids, mask, segments))
            # Dispatch is asynchronous: copy the previous batch back while this one runs.
            if pending is not None:
                collect(*pending)
            pending = (chunk, outputs)
    if pending is not None:
        collect(*pending)
    return results


def extract(
    model: BertModel,
    variables: dict[str, Any],
    tokenizer: BertTokenizer,
    texts: Sequence[Text],
    *,
    layers: Sequence[int] = (-1, -2, -3, -4),
    max_seq_length: int = 128,
    doc_stride: int = 64,
    batch_size: int = 32,
    include_embeddings: bool = False,
) -> list[dict[str, Any]]:
    """Features of each text (a string, or a (text_a, text_b) pair); see the module docstring.

    Each result: `tokens` (list[str]), `segment_ids` ([T] int32), `layers` ({layer key: [T, H]
    float32}, keys as given in `layers` plus "embeddings"), `pooled_output` ([H]) and
    `num_windows`.
    """
    config = model.config
    if not 3 <= max_seq_length <= config.max_position_embeddings:
        raise ValueError(
            f"max_seq_length={max_seq_length} must be in [3, {config.max_position_embeddings}] "
            "(the model's max_position_embeddings)."
        )
    if doc_stride < 1 or batch_size < 1:
        raise ValueError(f"doc_stride={doc_stride} and batch_size={batch_size} must be >= 1.")
    keys, indices = _layer_keys(layers, config.num_hidden_layers, include_embeddings)
    unique = sorted(set(indices))
    rows, plans = _rows(tokenizer, list(texts), max_seq_length, doc_stride)
    results = _run_rows(
        model,
        variables,
        unique,
        rows,
        batch_size=batch_size,
        max_seq_length=max_seq_length,
        pad_id=tokenizer.pad_id,
    )
    where = [unique.index(i) for i in indices]  # output key -> row of the stacked layers
    features = []
    for kind, pieces, spans_or_segments, first in plans:
        if kind == "pair":
            tokens = pieces
            hidden, pooled = results[first]
            segment_ids = np.asarray(spans_or_segments, np.int32)
            num_windows = 1
        else:
            hidden, pooled = _merge(results, first, spans_or_segments, len(pieces))
            tokens = ["[CLS]", *pieces, "[SEP]"]
            segment_ids = np.zeros(len(tokens), np.int32)
            num_windows = len(spans_or_segments)
        features.append(
            {
                "tokens": tokens,
                "segment_ids": segment_ids,
                "layers": {key: hidden[w] for key, w in zip(keys, where, strict=True)},
                "pooled_output": pooled,
                "num_windows": num_windows,
            }
        )
    return features


def _merge(results, first: int, spans, num_tokens: int):
    """Stitches windows: [CLS] of the first, each wordpiece from its max-context window, and
    [SEP] of the last."""
    first_hidden, pooled = results[first]
    if len(spans) == 1:
        return first_hidden, pooled
    best = max_context_window(spans, num_tokens)
    k, _, h = first_hidden.shape
    merged = np.empty((k, num_tokens + 2, h), np.float32)
    merged[:, 0] = first_hidden[:, 0]
    pos = np.arange(num_tokens)
    for w, (start, _) in enumerate(spans):
        take = pos[best == w]
        merged[:, 1 + take] = results[first + w][0][:, 1 + take - start]
    merged[:, -1] = results[first + len(spans) - 1][0][:, -1]
    return merged, pooled


def read_texts(path: str | os.PathLike) -> list[Text]:
    """One text per line (UTF-8); "A ||| B" is a pair. Empty lines stay, so index = line number."""
    texts: list[Text] = []
    # newline="\n": lines end only at "\n", as the original's readline; str.splitlines would also
    # break at \u2028, \x0c, \x85, ... and shift the indices. strip() drops a Windows "\r".
    with open(path, encoding="utf-8", newline="\n") as f:
        for raw in f:
            line = raw.strip()
            pair = PAIR_PATTERN.match(line)
            texts.append((pair[1], pair[2]) if pair else line)
    return texts


class FeatureWriter:
    """Streams features to `.jsonl` (original format) or `.npz`; a context manager.

    The file appears under its name only when closed without error (written as `*.partial`).
    JSONL lines are {"linex_index", "features": [{"token", "layers": [{"index", "values"}]}]}
    plus "pooled_output" and "segment_ids"; values rounded to 6 decimals as in the original.
    NPZ keys are "{i}/tokens", "{i}/segment_ids", "{i}/pooled_output", "{i}/layer_{key}".
    """

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        self.kind = self.path.suffix.lower()
        if self.kind not in (".jsonl", ".npz"):
            raise ValueError(f"output file {self.path} must end in .jsonl or .npz.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = self.path.with_name(self.path.name + ".partial")
        if self.kind == ".jsonl":
            self._file = open(self._partial, "w", encoding="utf-8")
        else:
            self._file = zipfile.ZipFile(self._partial, "w", zipfile.ZIP_STORED, allowZip64=True)

    def write(self, index: int, feature: dict[str, Any]) -> None:
        if self.kind == ".jsonl":
            self._file.write(json.dumps(_jsonl_record(index, feature), ensure_ascii=False) + "\n")
            return
        arrays = {
            "tokens": np.asarray(feature["tokens"], dtype=str),
            "segment_ids": np.asarray(feature["segment_ids"], np.int32),
            "pooled_output": np.asarray(feature["pooled_output"], np.float32),
        }
        for key, values in feature["layers"].items():
            arrays[f"layer_{key}"] = np.asarray(values, np.float32)
        for name, array in arrays.items():
            # What np.savez does, one member at a time, so memory stays flat on big inputs.
            with self._file.open(f"{index}/{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)

    def close(self, keep: bool = True) -> None:
        self._file.close()
        if keep:
            os.replace(self._partial, self.path)
        else:
            self._partial.unlink(missing_ok=True)

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(self, exc_type, *_) -> None:
        self.close(keep=exc_type is None)


def _rounded(values: np.ndarray) -> list:
    # np.round then tolist gives Python floats whose repr is the short decimal, like round(x, 6).
    return np.round(np.asarray(values, np.float64), 6).tolist()


def _jsonl_record(index: int, feature: dict[str, Any]) -> dict[str, Any]:
    layers = {key: _rounded(v) for key, v in feature["layers"].items()}
    return {
        "linex_index": index,
        "features": [
            {
                "token": token,
                "layers": [{"index": key, "values": rows[t]} for key, rows in layers.items()],
            }
            for t, token in enumerate(feature["tokens"])
        ],
        "pooled_output": _rounded(feature["pooled_output"]),
        "segment_ids": np.asarray(feature["segment_ids"]).tolist(),
    }


def read_features(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Reads a .jsonl or .npz written by FeatureWriter back into extract()'s structure."""
    path = pathlib.Path(path)
    if path.suffix.lower() == ".jsonl":
        with open(path, encoding="utf-8") as f:
            return [_from_jsonl(json.loads(line)) for line in f if line.strip()]
    with np.load(path, allow_pickle=False) as npz:
        by_index: dict[int, dict[str, Any]] = {}
        for name in npz.files:
            index, field = name.split("/", 1)
            feature = by_index.setdefault(int(index), {"layers": {}})
            if field.startswith("layer_"):
                key = field[len("layer_") :]
                feature["layers"][key if key == EMBEDDINGS else int(key)] = npz[name]
            elif field == "tokens":
                feature["tokens"] = npz[name].tolist()
            else:
                feature[field] = npz[name]
    return [by_index[i] for i in sorted(by_index)]


def _from_jsonl(record: dict[str, Any]) -> dict[str, Any]:
    tokens = [f["token"] for f in record["features"]]
    keys = [layer["index"] for layer in record["features"][0]["layers"]]
    layers = {
        key: np.array([f["layers"][k]["values"] for f in record["features"]], np.float32)
        for k, key in enumerate(keys)
    }
    return {
        "tokens": tokens,
        "segment_ids": np.asarray(record["segment_ids"], np.int32),
        "layers": layers,
        "pooled_output": np.asarray(record["pooled_output"], np.float32),
    }


def parse_layers(spec: str) -> tuple[list[int], bool]:
    """Parses the --layers flag: "-1,-2,embeddings" -> ([-1, -2], True)."""
    layers, include_embeddings = [], False
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part == EMBEDDINGS:
            include_embeddings = True
            continue
        try:
            layers.append(int(part))
        except ValueError:
            raise ValueError(
                f"--layers entry {part!r} is neither an integer nor 'embeddings'; "
                "e.g. --layers=-1,-2,-3,-4,embeddings."
            ) from None
    return layers, include_embeddings


def run(
    checkpoint: str,
    input_file: str,
    output_file: str,
    *,
    layers: str = "-1,-2,-3,-4",
    chunk_texts: int = 1024,
    dtype: str = "float32",
    **kwargs: Any,
) -> dict[str, Any]:
    """The CLI's work: checkpoint + text file -> feature file; returns a short summary."""
    from bert_jax import pretrained

    tokenizer, model, variables = pretrained.from_pretrained(checkpoint, dtype=dtype)
    layer_list, include_embeddings = parse_layers(layers)
    texts = read_texts(input_file)
    start, windows_run, tokens = time.time(), 0, 0
    # Texts go through in chunks so that features of a big input never sit in memory at once.
    with FeatureWriter(output_file) as writer:
        for offset in range(0, len(texts), chunk_texts):
            chunk = texts[offset : offset + chunk_texts]
            options = dict(layers=layer_list, include_embeddings=include_embeddings, **kwargs)
            for j, feat in enumerate(extract(model, variables, tokenizer, chunk, **options)):
                writer.write(offset + j, feat)
                windows_run += feat["num_windows"]
                tokens += len(feat["tokens"])
    return {
        "texts": len(texts),
        "windows": windows_run,
        "tokens": tokens,
        "seconds": round(time.time() - start, 2),
        "output_file": os.fspath(output_file),
    }


def _define_flags() -> None:
    # Defined only when run as a script, so importing this module adds no absl flags.
    from absl import flags

    d = flags
    d.DEFINE_string(
        "checkpoint", None, "HF dir, Google TF checkpoint dir or workdir.", required=True
    )
    d.DEFINE_string("input_file", None, "One text per line; 'A ||| B' is a pair.", required=True)
    d.DEFINE_string("output_file", None, "Ends in .jsonl or .npz.", required=True)
    d.DEFINE_string("layers", "-1,-2,-3,-4", "hidden_states indices; 'embeddings' allowed.")
    d.DEFINE_integer("max_seq_length", 128, "Window length, [CLS]/[SEP] included.")
    d.DEFINE_integer("doc_stride", 64, "Wordpieces between window starts for long texts.")
    d.DEFINE_integer("batch_size", 32, "Windows per forward pass.")
    d.DEFINE_string("dtype", "float32", "Compute dtype: float32 or bfloat16.")


def main(argv: list[str]) -> None:
    from absl import app, flags

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments {argv[1:]}; use --flag=value.")
    f = flags.FLAGS
    options = {k: f[k].value for k in ("layers", "dtype", "max_seq_length", "doc_stride")}
    summary = run(f.checkpoint, f.input_file, f.output_file, batch_size=f.batch_size, **options)
    print(json.dumps(summary))


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
