"""Masking options and NSP on/off, checked statistically on the real English and Chinese samples.

Tolerances are 5 standard deviations of the binomial proportion being estimated, so a correct
implementation fails about once in 3 million runs and a wrong split (off by a point) always does.
"""

import os

import numpy as np
import pytest

from bert_jax import tokenization
from bert_jax.data import corpus, instances, masking, pretraining, streaming

SEQ, PRED = 128, 20


def _sigma5(p, n):
    return 5 * (p * (1 - p) / max(n, 1)) ** 0.5 + 1e-9


@pytest.fixture(scope="module")
def enwiki_docs():
    return corpus.read_documents("sample:enwiki")


@pytest.fixture(scope="module")
def en_tok(tmp_path_factory):
    path = tmp_path_factory.getbasetemp() / "enwiki_vocab_8000.txt"
    if not path.exists():  # shared with test_data.py within one session
        tmp = path.with_suffix(".tmp")
        tokenization.train_wordpiece(corpus.read_documents("sample:enwiki"), 8000, tmp)
        os.replace(tmp, path)
    return tokenization.load_tokenizer(path)


@pytest.fixture(scope="module")
def zh_docs():
    return corpus.read_documents("sample:peoples_daily")


@pytest.fixture(scope="module")
def zh_tok(zh_docs, tmp_path_factory):
    """A character vocab for the Chinese sample (what WordPiece training converges to there)."""
    chars = sorted({c for d in zh_docs for s in d for c in s if not c.isspace()})
    path = tmp_path_factory.mktemp("zh") / "vocab.txt"
    tokens = tokenization.SPECIAL_TOKENS + chars + ["##" + c for c in chars]
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return tokenization.load_tokenizer(path)


def _make(docs, tok, masking_config, *, seq=SEQ, dupe=1, next_sentence=True, seed=0, words=None):
    recipe = pretraining.RecipeConfig(
        max_seq_length=seq, dupe_factor=dupe, next_sentence=next_sentence
    )
    return streaming.make_features(
        docs, tok, recipe=recipe, masking_config=masking_config, seed=seed, word_starts=True,
        word_mode=words,
    )  # fmt: skip


def _kinds(features, mask_id):
    w = features["masked_lm_weights"] > 0
    shown = np.take_along_axis(features["input_ids"], features["masked_lm_positions"], axis=1)[w]
    labels = features["masked_lm_ids"][w]
    return {
        "mask": int((shown == mask_id).sum()),
        "same": int((shown == labels).sum()),
        "random": int(((shown != mask_id) & (shown != labels)).sum()),
    }


@pytest.mark.parametrize("split", masking.TABLE8_SPLITS)
def test_table8_splits_on_english(enwiki_docs, en_tok, split):
    cfg = masking.MaskingConfig.from_split(split)
    features, counts = _make(enwiki_docs, en_tok, cfg)
    kinds = _kinds(features, en_tok.token_to_id("[MASK]"))
    n = sum(kinds.values())
    assert n > 80_000
    want = dict(zip(("mask", "same", "random"), masking.parse_split(split), strict=True))
    # A random replacement equal to the original token is seen as "same": ~1/8000 of them.
    want["same"] += want["random"] / 8000
    want["random"] -= want["random"] / 8000
    for kind, p in want.items():
        assert abs(kinds[kind] / n - p) < _sigma5(p, n) + 1e-4, (split, kind, kinds)
    assert counts["predictions"] == n


@pytest.mark.parametrize("prob", [0.1, 0.2])
def test_masked_lm_prob(enwiki_docs, en_tok, prob):
    cfg = masking.MaskingConfig(masked_lm_prob=prob, max_predictions_per_seq=40)
    features, _ = _make(enwiki_docs, en_tok, cfg)
    lengths = features["input_mask"].sum(axis=1)
    n_pred = features["masked_lm_weights"].sum(axis=1)
    np.testing.assert_array_equal(n_pred, np.minimum(40, np.maximum(1, np.round(lengths * prob))))
    assert abs(n_pred.sum() / lengths.sum() - prob) < 0.01


def _groups(input_ids, word_starts, n):
    """Masking groups of one instance: runs starting at a word start (or after a special)."""
    groups, current = [], []
    for i in range(n):
        if word_starts[i] or not current:
            if current:
                groups.append(current)
            current = [i]
        else:
            current.append(i)
    groups.append(current)
    return groups


def _split_words(features, special_ids):
    """How many words are partly masked, and how many masked tokens sit in multi-token words."""
    split = multi = 0
    for i in range(len(features["input_ids"])):
        n = int(features["input_mask"][i].sum())
        w = features["masked_lm_weights"][i] > 0
        masked = set(features["masked_lm_positions"][i][w].tolist())
        ids = features["input_ids"][i]
        for group in _groups(ids, features["word_starts"][i], n):
            if len(group) == 1 or ids[group[0]] in special_ids:
                continue
            hit = sum(p in masked for p in group)
            split += 0 < hit < len(group)
            multi += hit
    return split, multi


def test_whole_word_masking_never_splits_a_wordpiece_word(enwiki_docs, en_tok):
    special = set(tokenization.vocab_special_ids(en_tok).values())
    wwm, _ = _make(enwiki_docs, en_tok, masking.MaskingConfig(whole_word="wordpiece"))
    # word_starts agree with BERT's rule: a `##` piece continues the previous token's word.
    tokens = tokenization.vocab_tokens(en_tok)
    restored = wwm["input_ids"].copy()
    w = wwm["masked_lm_weights"] > 0
    rows = np.nonzero(w)[0]
    restored[rows, wwm["masked_lm_positions"][w]] = wwm["masked_lm_ids"][w]
    is_cont = np.array([t.startswith("##") for t in tokens])[restored]
    inside = wwm["input_mask"].astype(bool)
    prev_special = np.isin(np.roll(restored, 1, axis=1), list(special))
    np.testing.assert_array_equal(wwm["word_starts"][inside], (~is_cont | prev_special)[inside])

    split, multi = _split_words(wwm, special)
    assert split == 0 and multi > 5_000  # many multi-piece words, all masked whole
    plain, _ = _make(enwiki_docs, en_tok, masking.MaskingConfig(), words="wordpiece")
    assert _split_words(plain, special)[0] > 1_000  # without WWM words are split all the time
    # The rate stays close to 15%: a word that does not fit is skipped, not cut.
    lengths = wwm["input_mask"].sum(axis=1)
    assert 0.135 < wwm["masked_lm_weights"].sum() / lengths.sum() <= 0.15


def test_chinese_whole_word_masking_masks_segmented_words(zh_docs, zh_tok):
    special = set(tokenization.vocab_special_ids(zh_tok).values())
    cfg = masking.MaskingConfig(whole_word="segmented")
    wwm, counts = _make(zh_docs, zh_tok, cfg)
    assert counts["documents"] > 2_500 and len(wwm["input_ids"]) > 4_000
    # Word starts come from the segmentation: e.g. 中国 (2 characters) is one word of 2 tokens.
    ids = zh_tok.encode("中国", add_special_tokens=False).ids
    assert len(ids) == 2
    split, multi = _split_words(wwm, special)
    assert split == 0 and multi > 20_000
    plain, _ = _make(zh_docs, zh_tok, masking.MaskingConfig(), words="segmented")
    assert _split_words(plain, special)[0] > 5_000
    kinds = _kinds(wwm, zh_tok.token_to_id("[MASK]"))
    n = sum(kinds.values())
    assert abs(kinds["mask"] / n - 0.8) < _sigma5(0.8, n)
    lengths = wwm["input_mask"].sum(axis=1)
    assert 0.13 < n / lengths.sum() <= 0.15


def test_no_nsp_packs_single_segments(enwiki_docs, en_tok):
    features, counts = _make(enwiki_docs, en_tok, masking.MaskingConfig(), next_sentence=False)
    sep = en_tok.token_to_id("[SEP]")
    assert not features["next_sentence_labels"].any() and not features["segment_ids"].any()
    lengths = features["input_mask"].sum(axis=1)
    assert lengths.max() == SEQ
    # Full instances fill the length up to one sentence; short targets are the only short ones.
    full = lengths[lengths >= SEQ // 2]
    assert full.mean() > 0.85 * SEQ
    stats = instances.summarize(counts)
    draws = counts["target_draws"]
    assert abs(stats["fraction_short_target_draws"] - 0.1) < _sigma5(0.1, draws)
    restored = features["input_ids"].copy()
    w = features["masked_lm_weights"] > 0
    restored[np.nonzero(w)[0], features["masked_lm_positions"][w]] = features["masked_lm_ids"][w]
    seps = (restored == sep).sum(axis=1)
    # Instances cross document boundaries, with a [SEP] between the documents.
    assert (seps >= 1).all() and 0.3 * 105 < (seps > 1).sum() < 105
    # Every sentence is used exactly once per pass (no NSP: nothing is put back).
    text_tokens = counts["tokens"] - 2 * len(lengths) - (seps - 1).sum()
    assert text_tokens == counts["document_tokens"] - counts["truncated_tokens"]
    assert counts["truncated_tokens"] < 0.01 * counts["document_tokens"]


@pytest.mark.parametrize("split", ["80/10/10", "100/0/0", "0/0/100"])
def test_chinese_splits_and_no_nsp(zh_docs, zh_tok, split):
    cfg = masking.MaskingConfig.from_split(split, whole_word="segmented")
    features, counts = _make(zh_docs[:1500], zh_tok, cfg, next_sentence=split == "80/10/10")
    kinds = _kinds(features, zh_tok.token_to_id("[MASK]"))
    n = sum(kinds.values())
    vocab = zh_tok.get_vocab_size()
    want = dict(zip(("mask", "same", "random"), masking.parse_split(split), strict=True))
    want["same"] += want["random"] / vocab
    want["random"] -= want["random"] / vocab
    for kind, p in want.items():
        assert abs(kinds[kind] / n - p) < _sigma5(p, n) + 1e-3, (split, kind, kinds)
    if split != "80/10/10":  # packed single segments: no NSP
        assert not features["next_sentence_labels"].any() and not features["segment_ids"].any()
        lengths = features["input_mask"].sum(axis=1)
        # Whole sentences only (FULL-SENTENCES), and Chinese ones are long (~55 tokens): a
        # sentence that does not fit starts the next instance.
        assert lengths.max() == SEQ and lengths[lengths >= SEQ // 2].mean() > 0.75 * SEQ
    else:
        stats = instances.summarize(counts)
        coin = counts["instances"] - counts["forced_random_next"]
        assert abs(stats["fraction_random_next_by_coin"] - 0.5) < _sigma5(0.5, coin)
