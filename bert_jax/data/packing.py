"""Sequence packing: several pre-training instances side by side in one row of tokens.

    python -m bert_jax.data.packing --input='data/enwiki_128/train-*.tfrecord' \
        --output_dir=data/enwiki_128/packed3 --max_per_row=3

(or `--config.data.pack_sequences=3` in a pre-training run, which does this for its training
files). BERT's recipe fills most rows, but document ends, short_seq_prob and over-long sentences
leave padding (7% of the tokens of the 128-token Wikipedia sample, more at 512) that every step
still computes. Packed rows hold whole instances; attention stays inside each instance
(block-diagonal), each instance keeps its own positions from 0 and its own [CLS] for NSP, so a
packed batch gives each instance exactly the outputs it would have alone (tests/test_packing.py).

A packed record has the original features plus three, with these meanings (S tokens, P
predictions, K = max_per_row instances):
  input_ids, segment_ids [S]      the instances' tokens back to back, then padding
  input_mask [S]                  1 on the first instance's tokens, 2 on the second's, ...; 0 padding
  position_ids [S]                each instance's positions 0, 1, ..., n-1
  masked_lm_positions/ids/weights [P]  every instance's predictions (positions in the row)
  next_sentence_positions [K]     where each instance's [CLS] sits
  next_sentence_labels [K], next_sentence_weights [K]  (weight 0: no instance in that slot)
Instances are placed by best-fit decreasing length within each input file, so a row never
exceeds S tokens, K instances or P predictions; the packed files keep the input's sharding.
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
from absl import app, flags

def is_packed(features) -> bool:
    """Whether a batch (or a record's feature names) holds packed rows."""
    return "position_ids" in features


def assign_rows(
    lengths: np.ndarray, predictions: np.ndarray, max_seq_length: int, max_per_row: int,
    max_predictions: int,
) -> list[list[int]]:  # fmt: skip
    """Instance indices per row, by best-fit decreasing: longest first, each into the open row
    with the least room that still takes it (its tokens, a free slot, its predictions)."""
    by_room: list[list[int]] = [[] for _ in range(max_seq_length + 1)]  # room -> open rows
    rows: list[list[int]] = []
    room: list[int] = []
    preds: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i)):
        n, p = int(lengths[i]), int(predictions[i])
        row = next(
            (r for fit in range(n, max_seq_length + 1) for r in by_room[fit]
             if preds[r] + p <= max_predictions),
            None,
        )  # fmt: skip
        if row is None:
            row = len(rows)
            rows.append([])
            room.append(max_seq_length)
            preds.append(0)
        else:
            by_room[room[row]].remove(row)
        rows[row].append(i)
        room[row] -= n
        preds[row] += p
        if len(rows[row]) < max_per_row and room[row] > 0:
            by_room[room[row]].append(row)
    return rows


def pack(features: dict[str, np.ndarray], max_per_row: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Packed rows ([R, ...] arrays, the record format above) of unpacked instances ([N, ...]
    arrays of the original format, statically masked), in an order shuffled by `seed` (best-fit
    decreasing makes them longest first, and a shuffle buffer would not undo that)."""
    if max_per_row < 1:
        raise ValueError(f"max_per_row={max_per_row}; it must be >= 1.")
    if is_packed(features):
        raise ValueError("these instances are packed already.")
    ids = features["input_ids"]
    n_inst, seq = ids.shape
    pred = features["masked_lm_positions"].shape[1]
    lengths = features["input_mask"].sum(axis=1)
    n_pred = (features["masked_lm_weights"] > 0).sum(axis=1)
    rows = assign_rows(lengths, n_pred, seq, max_per_row, pred)
    rows = [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))]
    r = len(rows)
    out = {
        name: np.zeros((r, seq), np.int64)
        for name in ("input_ids", "input_mask", "segment_ids", "position_ids")
    }
    out["masked_lm_positions"] = np.zeros((r, pred), np.int64)
    out["masked_lm_ids"] = np.zeros((r, pred), np.int64)
    out["masked_lm_weights"] = np.zeros((r, pred), np.float32)
    for name in ("next_sentence_positions", "next_sentence_labels"):
        out[name] = np.zeros((r, max_per_row), np.int64)
    out["next_sentence_weights"] = np.zeros((r, max_per_row), np.float32)
    nsp = features["next_sentence_labels"].reshape(n_inst)
    for row, members in enumerate(rows):
        start = n_start = 0
        for slot, i in enumerate(members):
            n, p = int(lengths[i]), int(n_pred[i])
            span = slice(start, start + n)
            out["input_ids"][row, span] = ids[i, :n]
            out["segment_ids"][row, span] = features["segment_ids"][i, :n]
            out["input_mask"][row, span] = slot + 1
            out["position_ids"][row, span] = np.arange(n)
            pspan = slice(n_start, n_start + p)
            out["masked_lm_positions"][row, pspan] = features["masked_lm_positions"][i, :p] + start
            out["masked_lm_ids"][row, pspan] = features["masked_lm_ids"][i, :p]
            out["masked_lm_weights"][row, pspan] = features["masked_lm_weights"][i, :p]
            out["next_sentence_positions"][row, slot] = start
            out["next_sentence_labels"][row, slot] = nsp[i]
            out["next_sentence_weights"][row, slot] = 1.0
            start += n
            n_start += p
    return out


def read_records(path: str) -> dict[str, np.ndarray]:
    """Every record of one TFRecord file of the original format, as [N, ...] arrays."""
    import tensorflow as tf  # noqa: PLC0415

    from bert_jax.data import pipeline  # noqa: PLC0415

    found = pipeline.record_features(path)
    if not found:
        return {}
    if is_packed(found):
        raise ValueError(f"{path} holds packed rows already; pack the unpacked files.")
    if "masked_lm_positions" not in found:
        raise ValueError(
            f"{path} holds unmasked records (dynamic_masking): packing needs statically masked "
            "instances; prepare the data with dynamic_masking=False."
        )
    spec = pipeline.feature_spec(found["input_ids"], found["masked_lm_positions"])
    ds = tf.data.TFRecordDataset(path).batch(4096).map(lambda s: tf.io.parse_example(s, spec))
    parts = list(ds.as_numpy_iterator())
    return {name: np.concatenate([p[name] for p in parts]) for name in spec}


def pack_files(files: list[str], output_dir: str, max_per_row: int) -> dict:
    """Packs each file into output_dir/<same name> (idempotent: returns the stats of a finished
    run at once). The files appear together: written in a hidden directory, then renamed."""
    out = pathlib.Path(output_dir)
    stats_file = out / "stats.json"
    args = {"files": [os.path.basename(f) for f in files], "max_per_row": max_per_row}
    if stats_file.exists():
        stats = json.loads(stats_file.read_text())
        if stats["args"] != args:
            raise ValueError(
                f"{output_dir} holds files packed from other input ({stats['args']}); remove it "
                "or choose another output directory."
            )
        return stats
    from bert_jax.data import records  # noqa: PLC0415

    work = out.parent / f".{out.name}.partial"
    work.mkdir(parents=True, exist_ok=True)
    totals = {"instances": 0, "rows": 0, "tokens": 0, "unpacked_slots": 0, "slots": 0}
    for index, path in enumerate(files):
        features = read_records(path)
        if not features:
            continue
        packed = pack(features, max_per_row, seed=index)
        with records.RecordWriter(work / os.path.basename(path)) as writer:
            writer.write_batch(packed)
        totals["instances"] += len(features["input_ids"])
        totals["rows"] += len(packed["input_ids"])
        totals["tokens"] += int(features["input_mask"].sum())
        totals["unpacked_slots"] += features["input_ids"].size
        totals["slots"] += packed["input_ids"].size
    if not totals["rows"]:
        raise ValueError(f"no records in {files}; nothing to pack.")
    stats = {
        "args": args,
        **totals,
        "instances_per_row": totals["instances"] / totals["rows"],
        "token_fill_unpacked": totals["tokens"] / totals["unpacked_slots"],
        "token_fill_packed": totals["tokens"] / totals["slots"],
    }
    (work / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    if out.exists():  # an empty or foreign directory left behind: never merge into it
        raise FileExistsError(f"{output_dir} exists without a finished stats.json; remove it.")
    work.rename(out)
    return stats


def packed_pattern(pattern: str, max_per_row: int) -> str:
    """The packed twin of a training-file glob: <its directory>/packed<K>/<its file glob>."""
    if "://" in pattern:
        raise ValueError(
            f"data.pack_sequences packs local files; {pattern!r} is remote. Pack with "
            "`python -m bert_jax.data.packing` and set data.train_files to the packed files."
        )
    head, tail = os.path.split(pattern)
    if os.path.basename(head) == f"packed{max_per_row}":  # already the packed files
        return pattern
    return os.path.join(head, f"packed{max_per_row}", tail)


def pack_pattern(pattern: str, max_per_row: int) -> str:
    """Packs the files of `pattern` (once) and returns the glob of the packed files."""
    from bert_jax.data import pipeline  # noqa: PLC0415

    target = packed_pattern(pattern, max_per_row)
    if target == pattern:
        return target
    pack_files(pipeline.list_files(pattern), os.path.dirname(target), max_per_row)
    return target


def _define_flags() -> None:
    flags.DEFINE_string("input", None, "Training TFRecords (glob) of the original format.")
    flags.DEFINE_string("output_dir", None, "Where the packed files go (same names).")
    flags.DEFINE_integer("max_per_row", 3, "Most instances per row.")
    flags.mark_flags_as_required(["input", "output_dir"])


def main(argv: list[str]) -> None:
    del argv
    from bert_jax.data import pipeline  # noqa: PLC0415

    f = flags.FLAGS
    stats = pack_files(pipeline.list_files(f.input), f.output_dir, f.max_per_row)
    print(
        f"{stats['instances']} instances -> {stats['rows']} rows "
        f"({stats['instances_per_row']:.3f} per row); real tokens fill "
        f"{stats['token_fill_unpacked']:.1%} of the unpacked rows, "
        f"{stats['token_fill_packed']:.1%} of the packed ones. Wrote {f.output_dir}/"
    )


if __name__ == "__main__":
    _define_flags()
    app.run(main)
