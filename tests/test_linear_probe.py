"""experiments/linear_probe.py: mean-pooled frozen features and the logistic-regression probe."""

import pathlib
import sys

import jax
import numpy as np

from bert_jax import tokenization
from bert_jax.model import BertConfig, BertModel
from bert_jax.pretrained import BertTokenizer

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "experiments"))
import linear_probe  # noqa: E402

WORDS = "the dog cat is cute sat on mat good bad film".split()


def _tiny(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join([*tokenization.SPECIAL_TOKENS, *WORDS]) + "\n", encoding="utf-8")
    config = BertConfig(vocab_size=len(tokenization.SPECIAL_TOKENS) + len(WORDS), hidden_size=16,
                        num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=32, initializer_range=0.5)  # fmt: skip
    model = BertModel(config)
    ids = np.zeros((1, 8), np.int32)
    return BertTokenizer.from_vocab(vocab), model, model.init(jax.random.PRNGKey(0), ids, ids, ids)


def test_mean_features_average_real_tokens_of_every_layer(tmp_path):
    tok, model, variables = _tiny(tmp_path)
    texts = ["the dog sat", "the cat is cute on the mat", "film"]
    feats = linear_probe.mean_features(model, variables, tok, texts, max_length=16, batch_size=2)
    assert feats.shape == (3, 3, 16)  # embeddings + 2 layers, 3 texts, hidden 16
    for i, text in enumerate(texts):  # unpadded, one text at a time: padding must not count
        batch = tok([text], max_length=16, padding="longest")
        hidden = model.apply(variables, **batch)["hidden_states"]
        want = np.stack([np.asarray(h[0]).mean(0) for h in hidden])
        np.testing.assert_allclose(feats[:, i], want, atol=1e-5)


def test_probe_separates_what_is_separable_and_not_noise():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    x = rng.normal(size=(400, 8))
    signal = x.copy()
    signal[:, 3] += 4.0 * (2 * y - 1)  # one feature carries the label
    assert linear_probe.probe_accuracy(signal[:300], y[:300], signal[300:], y[300:]) > 0.95
    noise = linear_probe.probe_accuracy(x[:300], y[:300], x[300:], y[300:])
    assert 0.35 < noise < 0.65
