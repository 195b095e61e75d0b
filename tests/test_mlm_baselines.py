"""experiments/mlm_baselines.py: count-based floors for held-out masked-token accuracy."""

import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "experiments"))
import mlm_baselines  # noqa: E402

PAD, CLS, SEP, MASK, S = 0, 2, 3, 4, 12
NEVER = (PAD, CLS, SEP, MASK)  # the special ids of a trained vocab (tokenization.SPECIAL_TOKENS)


def _instances(n, rng, vocab=40):
    """Token t+1 always follows token t: the left neighbour decides every token."""
    starts = rng.integers(5, vocab - S, n)
    ids = starts[:, None] + np.arange(S)[None]
    ids[:, 0] = CLS
    positions = rng.integers(2, S - 1, (n, 1))
    targets = np.take_along_axis(ids, positions, 1)
    masked = ids.copy()
    np.put_along_axis(masked, positions, MASK, 1)
    return {
        "input_ids": masked,
        "input_mask": np.ones_like(ids),
        "masked_lm_positions": positions,
        "masked_lm_ids": targets,
        "masked_lm_weights": np.ones(positions.shape, np.float32),
    }


def test_counts_restore_tokens_and_score_each_predictor():
    rng = np.random.default_rng(0)
    train, held_out = _instances(300, rng), _instances(50, rng)
    tokens = mlm_baselines.original_tokens(train)
    assert all((np.diff(t[1:]) == 1).all() for t in tokens)  # [MASK] put back everywhere
    result = mlm_baselines.score(mlm_baselines.count(tokens, NEVER), held_out, 40 - 4, MASK)
    assert result["predictions"] == result["hidden_predictions"] == 50
    assert result["left_bigram_accuracy"] == 1.0 and result["neighbours_accuracy"] == 1.0
    assert result["hidden_neighbours_accuracy"] == 1.0
    assert result["unigram_accuracy"] == result["hidden_unigram_accuracy"] < 0.3
    # Add-one unigram perplexity over the held-out targets, from the token counts without [CLS]
    # (never a target) over the 36 ids that can be one.
    values, counts = np.unique(np.concatenate([t[1:] for t in tokens]), return_counts=True)
    freq = dict(zip(values.tolist(), counts.tolist(), strict=True))
    targets = held_out["masked_lm_ids"][:, 0].tolist()
    probs = [(freq.get(t, 0) + 1) / (300 * (S - 1) + 36) for t in targets]
    expect = float(np.exp(-np.mean(np.log(probs))))
    assert result["unigram_perplexity"] == round(expect, 2)


def test_visible_answers_are_copied_and_left_out_of_hidden_scores():
    """Held-out targets all kept (BERT's unchanged 10%) except one behind [MASK], one behind a
    random token: copying gets the kept ones; the hidden scores count the other two only."""
    rng = np.random.default_rng(1)
    train, held_out = _instances(300, rng), _instances(10, rng)
    ids, pos = held_out["input_ids"], held_out["masked_lm_positions"]
    np.put_along_axis(ids, pos, held_out["masked_lm_ids"], 1)  # all kept ...
    ids[1, pos[1, 0]] = MASK  # ... but one [MASK]
    ids[2, pos[2, 0]] = 39 if held_out["masked_lm_ids"][2, 0] != 39 else 38  # and one random
    counts = mlm_baselines.count(mlm_baselines.original_tokens(train), NEVER)
    result = mlm_baselines.score(counts, held_out, 40, MASK)
    assert result["hidden_predictions"] == 2
    # The left bigram decides every token: right at the [MASK]; at the random one the
    # predictor copies (wrong), the hidden score reads the neighbour (right).
    assert result["left_bigram_accuracy"] == 0.9
    assert result["hidden_left_bigram_accuracy"] == 1.0


def test_special_tokens_are_never_guessed():
    """With NSP, short rows hold more [SEP] than any word: counted as a possible answer, [SEP]
    was the unigram guess (hidden accuracy 0 on real data) and the left-bigram guess after
    every word that ends a segment. BERT never masks [CLS]/[SEP]/[PAD], so no predictor may
    guess them; they still count as neighbours ([CLS] -> 7 below)."""
    rng = np.random.default_rng(2)
    # [CLS] 7 w [SEP] 7 w' [SEP] w'' [SEP]: 3 [SEP] and 2 of token 7 per row.
    i, j, k = rng.integers(0, 6, (3, 100))
    train = [
        np.array([CLS, 7, a, SEP, 7, b, SEP, c, SEP])
        for a, b, c in zip(i + 10, j + 20, k + 30, strict=True)
    ]
    # Held out: both 7s hidden, the second after 11, which in training always meets [SEP].
    held_out = {
        "input_ids": np.array([[CLS, MASK, 11, MASK, 7, 21, SEP, 31, SEP]]),
        "input_mask": np.ones((1, 9), np.int32),
        "masked_lm_positions": np.array([[1, 3]]),
        "masked_lm_ids": np.array([[7, 7]]),
        "masked_lm_weights": np.ones((1, 2), np.float32),
    }
    unigram, left, both = mlm_baselines.count(train, NEVER)
    assert set(unigram) & set(NEVER) == set() and unigram.most_common(1)[0] == (7, 200)
    assert 11 not in left and left[CLS] == {7: 100}  # 11 is only ever followed by [SEP]
    assert all(set(c) & set(NEVER) == set() for c in both.values())
    result = mlm_baselines.score((unigram, left, both), held_out, 40 - 4, MASK)
    assert result["hidden_predictions"] == 2
    assert result["hidden_unigram_accuracy"] == 1.0
    assert result["hidden_left_bigram_accuracy"] == result["hidden_neighbours_accuracy"] == 1.0
