"""Dynamic masking in the tf.data pipeline: statistics, fresh masks per epoch, exact replay."""

import collections
import os

import numpy as np
import pytest

from bert_jax import tokenization
from bert_jax.data import corpus, masking, pipeline, pretraining, records, streaming

SEQ, PRED = 128, 20


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory):
    path = tmp_path_factory.getbasetemp() / "enwiki_vocab_8000.txt"
    if not path.exists():  # shared with the other data tests within one session
        tmp = path.with_suffix(".tmp")
        tokenization.train_wordpiece(corpus.read_documents("sample:enwiki"), 8000, tmp)
        os.replace(tmp, path)
    return str(path)


@pytest.fixture(scope="module")
def unmasked(vocab_file, tmp_path_factory):
    """Unmasked instances of the Wikipedia sample (one pass), in 2 files, with word starts."""
    tok = tokenization.load_tokenizer(vocab_file)
    docs = corpus.read_documents("sample:enwiki")
    recipe = pretraining.RecipeConfig(max_seq_length=SEQ, dupe_factor=1)
    features, _ = streaming.make_features(
        docs, tok, recipe=recipe, masking_config=None, seed=3, word_starts=True,
        word_mode="wordpiece",
    )  # fmt: skip
    root = tmp_path_factory.mktemp("unmasked")
    for k in range(2):
        with records.RecordWriter(root / f"u{k}.tfrecord") as w:
            w.write_batch({name: v[k::2] for name, v in features.items()})
    return str(root / "u*.tfrecord"), features


def _dataset(pattern, vocab_file, config, **kw):
    kw = {"batch_size": 256, "training": False, **kw}
    return pipeline.pretraining_dataset(
        pattern, max_seq_length=SEQ, max_predictions_per_seq=PRED, dynamic_masking=config,
        vocab_file=vocab_file, **kw,
    )  # fmt: skip


def _restore(batch):
    ids = batch["input_ids"].copy()
    w = batch["masked_lm_weights"] > 0
    ids[np.nonzero(w)[0], batch["masked_lm_positions"][w]] = batch["masked_lm_ids"][w]
    return ids


def test_dynamic_masking_statistics(unmasked, vocab_file):
    pattern, features = unmasked
    batches = list(pipeline.as_numpy(_dataset(pattern, vocab_file, masking.MaskingConfig())))
    got = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    assert sorted(got) == sorted(pipeline.FEATURE_NAMES)
    assert len(got["input_ids"]) == len(features["input_ids"])
    restored = _restore(got)
    # The same instances as written (eval order: interleaved files), tokens restored exactly.
    order = np.argsort([hash(r.tobytes()) for r in restored])
    want = np.argsort([hash(r.tobytes()) for r in features["input_ids"]])
    np.testing.assert_array_equal(restored[order], features["input_ids"][want])
    lengths = got["input_mask"].sum(axis=1)
    n_pred = got["masked_lm_weights"].sum(axis=1)
    np.testing.assert_array_equal(n_pred, np.minimum(PRED, np.maximum(1, np.round(lengths * 0.15))))
    w = got["masked_lm_weights"] > 0
    positions = got["masked_lm_positions"][w]
    shown = got["input_ids"][np.nonzero(w)[0], positions]
    labels = got["masked_lm_ids"][w]
    mask_id = tokenization.load_tokenizer(vocab_file).token_to_id("[MASK]")
    n = len(shown)
    for kind, share in (
        (shown == mask_id, 0.8),
        ((shown == labels), 0.1 + 0.1 / 8000),
        ((shown != mask_id) & (shown != labels), 0.1 - 0.1 / 8000),
    ):
        assert abs(kind.mean() - share) < 5 * (share * (1 - share) / n) ** 0.5, (share, kind.mean())
    # Never a special token or padding, positions sorted.
    special = set(tokenization.vocab_special_ids(tokenization.load_tokenizer(vocab_file)).values())
    assert not np.isin(labels, list(special)).any()
    pos = np.where(w, got["masked_lm_positions"], SEQ)
    assert (np.diff(pos, axis=1) >= 0).all()


def test_masks_differ_across_epochs_and_replay_exactly(unmasked, vocab_file):
    pattern, features = unmasked
    n = len(features["input_ids"])

    def run(skip=0, take=None):
        ds = _dataset(
            pattern, vocab_file, masking.MaskingConfig(), training=True, seed=5,
            shuffle_buffer=512, batch_size=64,
        )  # fmt: skip
        return list(pipeline.as_numpy(ds.skip(skip).take(take or 2 * n // 64)))

    first = run()
    masks = collections.defaultdict(list)
    for b in first:
        for ids, r in zip(b["input_ids"], _restore(b), strict=True):
            masks[r.tobytes()].append(ids.tobytes())
    seen_twice = [m for m in masks.values() if len(m) >= 2]
    assert len(seen_twice) > 0.5 * n
    # A fresh mask each time an instance comes back (identical masks only by rare chance).
    assert sum(m[0] == m[1] for m in seen_twice) < 0.01 * len(seen_twice)
    again = run(skip=10, take=5)  # a rebuilt pipeline resumed at batch 10: the very same masks
    for a, b in zip(again, first[10:15], strict=True):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_dynamic_whole_word_masking(unmasked, vocab_file, tmp_path):
    pattern, _ = unmasked
    config = masking.MaskingConfig(whole_word="wordpiece")
    got = list(pipeline.as_numpy(_dataset(pattern, vocab_file, config)))
    tok = tokenization.load_tokenizer(vocab_file)
    tokens = np.array([t.startswith("##") for t in tokenization.vocab_tokens(tok)])
    specials = [tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")]
    split = whole = 0
    for b in got:
        restored = _restore(b)
        w = b["masked_lm_weights"] > 0
        masked = np.zeros_like(restored, bool)
        masked[np.nonzero(w)[0], b["masked_lm_positions"][w]] = True
        cont = tokens[restored] & (np.arange(SEQ) > 0)
        prev_masked = np.roll(masked, 1, axis=1)
        # A continuation piece is masked iff the token before it is (inside the same segment).
        prev_special = np.isin(np.roll(restored, 1, axis=1), specials)
        check = cont & ~prev_special & (b["input_mask"] > 0)
        split += (masked[check] != prev_masked[check]).sum()
        whole += (masked & cont).sum()
    assert split == 0 and whole > 5_000
    # Files without word_starts: the ## rule from the vocab gives the same groups.
    features = unmasked[1]
    with records.RecordWriter(tmp_path / "plain.tfrecord") as w:
        w.write_batch({k: v[:256] for k, v in features.items() if k != "word_starts"})
    plain = next(pipeline.as_numpy(_dataset(str(tmp_path / "plain.tfrecord"), vocab_file, config)))
    # Same instances, same seed and batch index: the same masks.
    for k in ("input_ids", "masked_lm_positions"):
        np.testing.assert_array_equal(plain[k], got[0][k])


def test_static_and_dynamic_files_are_not_confused(unmasked, vocab_file, tmp_path):
    pattern, features = unmasked
    with pytest.raises(ValueError, match="unmasked instances.*dynamic_masking"):
        pipeline.pretraining_dataset(
            pattern, batch_size=8, max_seq_length=SEQ, max_predictions_per_seq=PRED,
            training=False,
        )  # fmt: skip
    tok = tokenization.load_tokenizer(vocab_file)
    static, _ = streaming.make_features(corpus.read_documents("sample:lee_background")[:20], tok)
    with records.RecordWriter(tmp_path / "static.tfrecord") as w:
        w.write_batch(static)
    with pytest.raises(ValueError, match="statically masked"):
        _dataset(str(tmp_path / "static.tfrecord"), vocab_file, masking.MaskingConfig())
    with pytest.raises(ValueError, match="needs vocab_file"):
        _dataset(pattern, None, masking.MaskingConfig())
    with records.RecordWriter(tmp_path / "nows.tfrecord") as w:
        w.write_batch({k: v[:8] for k, v in features.items() if k != "word_starts"})
    with pytest.raises(ValueError, match="word_starts"):
        _dataset(
            str(tmp_path / "nows.tfrecord"),
            vocab_file,
            masking.MaskingConfig(whole_word="segmented"),
        )


def test_dynamic_chinese_whole_word_masking(tmp_path):
    docs = corpus.read_documents("sample:peoples_daily")[:600]
    chars = sorted({c for d in docs for s in d for c in s if not c.isspace()})
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(tokenization.SPECIAL_TOKENS + chars + ["##" + c for c in chars]))
    tok = tokenization.load_tokenizer(vocab)
    recipe = pretraining.RecipeConfig(max_seq_length=SEQ, dupe_factor=1)
    features, _ = streaming.make_features(
        docs, tok, recipe=recipe, masking_config=None, word_starts=True, word_mode="segmented"
    )
    with records.RecordWriter(tmp_path / "zh.tfrecord") as w:
        w.write_batch(features)
    config = masking.MaskingConfig(whole_word="segmented")
    rows = {r.tobytes(): i for i, r in enumerate(features["input_ids"])}
    split = multi = 0
    for b in pipeline.as_numpy(_dataset(str(tmp_path / "zh.tfrecord"), str(vocab), config)):
        restored = _restore(b)
        starts = features["word_starts"][[rows[r.tobytes()] for r in restored]]
        w = b["masked_lm_weights"] > 0
        masked = np.zeros(restored.shape, np.int64)
        masked[np.nonzero(w)[0], b["masked_lm_positions"][w]] = 1
        # Number every word of the batch; count its tokens and its masked tokens.
        word = (np.cumsum(starts, axis=1) + np.arange(len(starts))[:, None] * SEQ).ravel()
        size = np.bincount(word, minlength=word.max() + 1)
        hit = np.bincount(word, weights=masked.ravel(), minlength=word.max() + 1)
        split += ((hit > 0) & (hit < size)).sum()
        multi += ((hit > 1) & (hit == size)).sum()
    assert split == 0 and multi > 1_000
