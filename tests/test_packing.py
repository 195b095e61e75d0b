"""Sequence packing: rows of several instances give each instance exactly its unpacked result."""

import dataclasses
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import inputs, losses, train
from bert_jax.data import packing, pipeline, records
from bert_jax.heads import BertForPreTraining
from tests import test_train

# The train tests' tiny model, with sharp attention: a leak between instances would show.
CFG = dataclasses.replace(test_train.CFG, initializer_range=0.2)
S, P = 24, 4


def instances(n=12, seed=0):
    """Unpacked instances of the original format, 4 to 16 tokens long (so several fit a row)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, 17, n)
    mask = (np.arange(S)[None] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(5, CFG.vocab_size, (n, S)) * mask
    ids[:, 0] = 2  # [CLS]
    segments = ((np.arange(S)[None] >= lengths[:, None] // 2) * mask).astype(np.int64)
    n_pred = np.minimum(rng.integers(1, P + 1, n), lengths - 1)
    positions = np.zeros((n, P), np.int64)
    for i in range(n):
        positions[i, : n_pred[i]] = np.sort(rng.choice(np.arange(1, lengths[i]), n_pred[i], False))
    weights = (np.arange(P)[None] < n_pred[:, None]).astype(np.float32)
    return {
        "input_ids": ids,
        "input_mask": mask,
        "segment_ids": segments,
        "masked_lm_positions": positions,
        "masked_lm_ids": rng.integers(5, CFG.vocab_size, (n, P)) * (weights > 0),
        "masked_lm_weights": weights,
        "next_sentence_labels": rng.integers(0, 2, (n, 1)),
    }


def as_batch(features):
    out = {k: jnp.asarray(v, jnp.float32 if v.dtype.kind == "f" else jnp.int32)
           for k, v in features.items()}  # fmt: skip
    if not packing.is_packed(out):
        out["next_sentence_labels"] = out["next_sentence_labels"][:, 0]
    return out


def test_best_fit_decreasing_by_hand():
    # Longest first: 5 opens row 0 (room 3), 4 opens row 1 (room 4), 3 fills row 0, 2 goes to
    # row 1 (the only room left).
    assert packing.assign_rows(np.array([5, 3, 4, 2]), np.zeros(4), 8, 3, 10) == [[0, 1], [2, 3]]
    # At most 2 per row: the three 2-token instances need two rows.
    assert packing.assign_rows(np.array([2, 2, 2]), np.zeros(3), 8, 2, 10) == [[0, 1], [2]]
    # Predictions cap: 3 + 3 > 5, so the second instance gets its own row despite the room.
    assert packing.assign_rows(np.array([2, 2]), np.array([3, 3]), 8, 3, 5) == [[0], [1]]
    # Best fit: 3 goes to the row with room 3 (row 1), not the first one with room 4 (row 0).
    assert packing.assign_rows(np.array([4, 5, 3]), np.zeros(3), 8, 3, 10) == [[1, 2], [0]]


def test_pack_keeps_every_token_and_label():
    feats = instances()
    packed = packing.pack(feats, max_per_row=3)
    n_rows = len(packed["input_ids"])
    assert n_rows < len(feats["input_ids"])
    assert packed["next_sentence_weights"].sum() == len(feats["input_ids"])
    assert packed["masked_lm_weights"].sum() == feats["masked_lm_weights"].sum()
    assert (packed["input_mask"] > 0).sum() == feats["input_mask"].sum()
    # Each instance's tokens, in order, under its own number; its [CLS] where NSP looks.
    seen = []
    for r in range(n_rows):
        for slot in range(3):
            if packed["next_sentence_weights"][r, slot]:
                tokens = packed["input_ids"][r][packed["input_mask"][r] == slot + 1]
                assert packed["input_ids"][r, packed["next_sentence_positions"][r, slot]] == 2
                seen.append(tuple(tokens))
    rows = zip(feats["input_ids"], feats["input_mask"], strict=True)
    want = [tuple(ids[m > 0]) for ids, m in rows]
    assert sorted(seen) == sorted(want)
    # Rows come shuffled: best-fit decreasing opens them in order of their first instance's
    # length, longest first, and a shuffle buffer would not undo that.
    first = (packed["input_mask"] == 1).sum(axis=1)
    assert np.any(np.diff(first) > 0), first
    rows_ids = np.take_along_axis(packed["input_ids"], packed["masked_lm_positions"], 1)
    shown = rows_ids[packed["masked_lm_weights"] > 0]
    orig = np.take_along_axis(feats["input_ids"], feats["masked_lm_positions"], 1)
    assert sorted(shown) == sorted(orig[feats["masked_lm_weights"] > 0])


@pytest.mark.parametrize("attention", ["einsum", "dot"])
def test_packed_rows_give_the_unpacked_losses_and_gradients(attention):
    model = BertForPreTraining(dataclasses.replace(CFG, attention=attention))
    feats = instances()
    unpacked, packed = as_batch(feats), as_batch(packing.pack(feats, max_per_row=3))
    params = model.init(jax.random.PRNGKey(0), unpacked["input_ids"][:1])["params"]

    def loss_and_sums(params, batch):
        sums = losses.pretraining_sums(train.model_outputs(model, params, batch), batch)
        return sums["mlm_loss"] / sums["mlm_weight"] + sums["nsp_loss"] / sums["nsp_weight"], sums

    (loss_u, sums_u), grads_u = jax.value_and_grad(loss_and_sums, has_aux=True)(params, unpacked)
    (loss_p, sums_p), grads_p = jax.value_and_grad(loss_and_sums, has_aux=True)(params, packed)
    for k in sums_u:
        np.testing.assert_allclose(sums_p[k], sums_u[k], rtol=1e-5, atol=1e-5, err_msg=k)
    np.testing.assert_allclose(loss_p, loss_u, rtol=1e-6)
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads_p, grads_u
    )
    nsp_u = train.model_outputs(model, params, unpacked)["nsp_logits"]
    nsp_p = train.model_outputs(model, params, packed)["nsp_logits"]
    nsp_p = nsp_p[packed["next_sentence_weights"] > 0]
    np.testing.assert_allclose(np.sort(nsp_p[:, 0]), np.sort(nsp_u[:, 0]), atol=1e-5)
    # The check can fail: without the block-diagonal mask, instances see each other.
    leaky = dict(packed, input_mask=(packed["input_mask"] > 0).astype(jnp.int32))
    leaky["input_mask"] = leaky["input_mask"].at[:, 0].set(2)  # still "packed", one big block
    assert abs(float(loss_and_sums(params, leaky)[0]) - float(loss_u)) > 1e-3


def _write(path, feats):
    with records.RecordWriter(path) as w:
        w.write_batch(feats)


def test_pack_files_reads_back_through_the_pipeline_and_is_idempotent(tmp_path):
    src = tmp_path / "data"
    src.mkdir()
    for shard in range(2):
        _write(src / f"train-{shard}.tfrecord", instances(n=20, seed=shard))
    pattern = str(src / "train-*.tfrecord")
    target = packing.pack_pattern(pattern, 3)
    assert target == str(src / "packed3" / "train-*.tfrecord")
    stats = json.loads((src / "packed3" / "stats.json").read_text())
    assert stats["instances"] == 40 and stats["rows"] < 40
    assert stats["token_fill_packed"] > stats["token_fill_unpacked"]
    assert packing.pack_pattern(pattern, 3) == target  # second call: nothing to do
    assert packing.pack_pattern(target, 3) == target  # already packed
    ds = pipeline.pretraining_dataset(
        target, batch_size=64, max_seq_length=S, max_predictions_per_seq=P, training=False
    )
    (batch,) = list(pipeline.as_numpy(ds))
    assert batch["next_sentence_labels"].shape == (stats["rows"], 3)
    assert batch["next_sentence_weights"].sum() == 40
    inputs.check_batch(batch, CFG.vocab_size, "packed batch")
    bad = dict(batch, position_ids=batch["position_ids"] + S)
    with pytest.raises(ValueError, match=r"position_ids\[0, 0\] = 24"):
        inputs.check_batch(bad, CFG.vocab_size, "packed batch")
    packed_file = str(src / "packed3" / "train-0.tfrecord")
    with pytest.raises(ValueError, match="packed rows"):
        packing.read_records(packed_file)
    with pytest.raises(ValueError, match="packed rows, which carry static masks"):
        pipeline.check_record_lengths(packed_file, S, P, dynamic_masking=True)
    # Another K in the same directory would mix files: refused, naming the fix.
    with pytest.raises(ValueError, match="other input"):
        packing.pack_files(sorted(map(str, src.glob("train-*"))), str(src / "packed3"), 2)


def test_command_line(tmp_path):
    _write(tmp_path / "train-0.tfrecord", instances(n=20))
    out = subprocess.run(
        [sys.executable, "-m", "bert_jax.data.packing", f"--input={tmp_path}/train-*.tfrecord",
         f"--output_dir={tmp_path}/packed2", "--max_per_row=2"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    stats = json.loads((tmp_path / "packed2" / "stats.json").read_text())
    assert f"20 instances -> {stats['rows']} rows" in out.stdout
    assert stats["args"] == {"files": ["train-0.tfrecord"], "max_per_row": 2}
