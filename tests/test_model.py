"""The encoder and heads: shapes, padding invariance, masked-position MLM, and a NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from bert_jax.heads import BertForPreTraining
from bert_jax.model import BertConfig, BertModel, sinusoidal_positions

CFG = BertConfig(
    vocab_size=97,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=40,
)


def _inputs(batch=3, seq=16, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, CFG.vocab_size, (batch, seq)).astype(np.int32)
    lengths = rng.integers(seq // 2, seq + 1, batch)
    mask = (np.arange(seq)[None] < lengths[:, None]).astype(np.int32)
    seg = ((np.arange(seq)[None] >= lengths[:, None] // 2) & (mask > 0)).astype(np.int32)
    return ids * mask, mask, seg


@pytest.fixture(scope="module")
def pretrain_params():
    ids, mask, seg = _inputs()
    pos = np.zeros((3, 4), np.int32)
    return BertForPreTraining(CFG).init(jax.random.PRNGKey(0), ids, mask, seg, pos)["params"]


def test_output_shapes(pretrain_params):
    ids, mask, seg = _inputs(batch=3, seq=16)
    out = BertModel(CFG).apply({"params": pretrain_params["bert"]}, ids, mask, seg)
    assert out["sequence_output"].shape == (3, 16, 32)
    assert out["pooled_output"].shape == (3, 32)
    assert len(out["hidden_states"]) == CFG.num_hidden_layers + 1
    pos = np.array([[1, 2, 3, 0, 0], [4, 5, 6, 7, 0], [1, 1, 1, 1, 1]], np.int32)
    heads = BertForPreTraining(CFG).apply({"params": pretrain_params}, ids, mask, seg, pos)
    assert heads["mlm_logits"].shape == (3, 5, CFG.vocab_size)
    assert heads["nsp_logits"].shape == (3, 2)
    assert heads["mlm_logits"].dtype == jnp.float32


def test_param_names_follow_the_original_checkpoint(pretrain_params):
    flat = {
        "/".join(k.key for k in path)
        for path, _ in jax.tree_util.tree_flatten_with_path(pretrain_params)[0]
    }
    for name in [
        "bert/embeddings/word_embeddings/embedding",
        "bert/embeddings/token_type_embeddings/embedding",
        "bert/embeddings/position_embeddings/embedding",
        "bert/embeddings/LayerNorm/scale",
        "bert/encoder/layer_1/attention/self/query/kernel",
        "bert/encoder/layer_1/attention/output/dense/kernel",
        "bert/encoder/layer_1/attention/output/LayerNorm/bias",
        "bert/encoder/layer_1/intermediate/dense/kernel",
        "bert/encoder/layer_1/output/dense/kernel",
        "bert/encoder/layer_1/output/LayerNorm/scale",
        "bert/pooler/dense/kernel",
        "cls/predictions/transform/dense/kernel",
        "cls/predictions/transform/LayerNorm/scale",
        "cls/predictions/output_bias",
        "cls/seq_relationship/output_weights",
        "cls/seq_relationship/output_bias",
    ]:
        assert name in flat, name
    assert pretrain_params["cls"]["seq_relationship"]["output_weights"].shape == (2, 32)


def test_padding_invariance(pretrain_params):
    """Extra padding (with garbage ids under it) leaves the outputs at real positions unchanged."""
    ids, mask, seg = _inputs(batch=3, seq=16)
    model = BertModel(CFG)
    short = model.apply({"params": pretrain_params["bert"]}, ids, mask, seg)
    pad = 8
    garbage = np.random.default_rng(1).integers(0, CFG.vocab_size, (3, pad)).astype(np.int32)
    ids2 = np.concatenate([ids, garbage], 1)
    mask2 = np.concatenate([mask, np.zeros((3, pad), np.int32)], 1)
    seg2 = np.concatenate([seg, np.ones((3, pad), np.int32)], 1)
    long = model.apply({"params": pretrain_params["bert"]}, ids2, mask2, seg2)
    real = mask.astype(bool)
    np.testing.assert_allclose(
        np.asarray(long["sequence_output"][:, :16])[real],
        np.asarray(short["sequence_output"])[real],
        atol=2e-6,
    )
    np.testing.assert_allclose(long["pooled_output"], short["pooled_output"], atol=2e-6)


def test_masked_positions_equal_full_logits_gathered(pretrain_params):
    ids, mask, seg = _inputs()
    model = BertForPreTraining(CFG)
    full = model.apply({"params": pretrain_params}, ids, mask, seg, None)["mlm_logits"]
    pos = np.array([[0, 3, 7, 7], [1, 2, 4, 15], [5, 6, 9, 11]], np.int32)
    masked = model.apply({"params": pretrain_params}, ids, mask, seg, pos)["mlm_logits"]
    expected = np.take_along_axis(np.asarray(full), pos[:, :, None], axis=1)
    np.testing.assert_allclose(masked, expected, rtol=1e-5, atol=1e-5)


def _np_reference(p, ids, mask, seg, cfg):
    """The original BERT forward pass in float64 NumPy, written from the paper."""

    def ln(x, q):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + cfg.layer_norm_eps) * q["scale"] + q["bias"]

    def dense(x, q):
        return x @ q["kernel"] + q["bias"]

    def gelu(x):
        return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))

    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), p)
    e = p["bert"]["embeddings"]
    s = ids.shape[1]
    x = (
        e["word_embeddings"]["embedding"][ids]
        + e["token_type_embeddings"]["embedding"][seg]
        + e["position_embeddings"]["embedding"][:s][None]
    )
    x = ln(x, e["LayerNorm"])
    n = cfg.num_attention_heads
    d = cfg.hidden_size // n
    bias = (1.0 - mask[:, None, None, :]) * -1e9  # additive large negative on padded keys
    for i in range(cfg.num_hidden_layers):
        lyr = p["bert"]["encoder"][f"layer_{i}"]
        a = lyr["attention"]

        def heads(name, a=a, x=x):
            return dense(x, a["self"][name]).reshape(*x.shape[:2], n, d).transpose(0, 2, 1, 3)

        q, k, v = heads("query"), heads("key"), heads("value")
        sc = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d) + bias
        pr = np.exp(sc - sc.max(-1, keepdims=True))
        pr /= pr.sum(-1, keepdims=True)
        ctx = (pr @ v).transpose(0, 2, 1, 3).reshape(x.shape)
        x = ln(dense(ctx, a["output"]["dense"]) + x, a["output"]["LayerNorm"])
        h = gelu(dense(x, lyr["intermediate"]["dense"]))
        x = ln(dense(h, lyr["output"]["dense"]) + x, lyr["output"]["LayerNorm"])
    pooled = np.tanh(dense(x[:, 0], p["bert"]["pooler"]["dense"]))
    c = p["cls"]
    t = ln(
        gelu(dense(x, c["predictions"]["transform"]["dense"])),
        c["predictions"]["transform"]["LayerNorm"],
    )
    mlm = t @ e["word_embeddings"]["embedding"].T + c["predictions"]["output_bias"]
    nsp = pooled @ c["seq_relationship"]["output_weights"].T + c["seq_relationship"]["output_bias"]
    return x, pooled, mlm, nsp


def test_matches_numpy_reference_of_original_bert(pretrain_params):
    # Perturb LayerNorm params and biases away from their 1/0 init so that they are exercised.
    leaves, tree = jax.tree_util.tree_flatten(pretrain_params)
    rng = np.random.default_rng(3)
    params = jax.tree_util.tree_unflatten(
        tree, [np.asarray(x) + rng.normal(0, 0.1, x.shape).astype(np.float32) for x in leaves]
    )
    ids, mask, seg = _inputs()
    out = BertModel(CFG).apply({"params": params["bert"]}, ids, mask, seg)
    heads = BertForPreTraining(CFG).apply({"params": params}, ids, mask, seg, None)
    x, pooled, mlm, nsp = _np_reference(params, ids, mask, seg, CFG)
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(out["sequence_output"])[real], x[real], atol=5e-5)
    np.testing.assert_allclose(out["pooled_output"], pooled, atol=5e-5)
    np.testing.assert_allclose(np.asarray(heads["mlm_logits"])[real], mlm[real], atol=2e-4)
    np.testing.assert_allclose(heads["nsp_logits"], nsp, atol=5e-5)


def test_sinusoidal_positions():
    table = sinusoidal_positions(50, 16)
    pos, i = 7, 3
    assert table[pos, 2 * i] == pytest.approx(np.sin(pos / 10000 ** (2 * i / 16)), abs=1e-6)
    assert table[pos, 2 * i + 1] == pytest.approx(np.cos(pos / 10000 ** (2 * i / 16)), abs=1e-6)
    cfg = BertConfig(**{**CFG.__dict__, "position_embedding_type": "sinusoidal"})
    ids, mask, seg = _inputs()
    params = BertModel(cfg).init(jax.random.PRNGKey(0), ids, mask, seg)["params"]
    assert "position_embeddings" not in params["embeddings"]
    emb = BertModel(cfg).apply({"params": params}, ids, mask, seg)["hidden_states"][0]
    # Shifting the same tokens by one position changes their embedding (positions are used).
    assert not np.allclose(
        emb[:, 1:2],
        BertModel(cfg).apply({"params": params}, ids[:, 1:], mask[:, 1:], seg[:, 1:])[
            "hidden_states"
        ][0][:, :1],
    )


def test_truncated_normal_init(pretrain_params):
    w = np.asarray(pretrain_params["bert"]["embeddings"]["word_embeddings"]["embedding"])
    assert np.abs(w).max() <= 2 * 0.02 + 1e-7  # truncated at two standard deviations
    assert 0.015 < w.std() < 0.02  # stddev of N(0, 0.02) truncated at 2 sigma is ~0.0176


def test_config_errors():
    with pytest.raises(ValueError, match="not divisible"):
        BertConfig(hidden_size=100, num_attention_heads=12)
    with pytest.raises(ValueError, match="unknown BertConfig fields"):
        BertConfig.from_dict({"hiden_size": 10})
    ids = np.zeros((1, CFG.max_position_embeddings + 1), np.int32)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        BertModel(CFG).init(jax.random.PRNGKey(0), ids)


def test_fine_tuning_heads_shapes_and_names():
    from bert_jax import heads

    ids, mask, seg = _inputs(batch=3, seq=16)
    rng = jax.random.PRNGKey(0)
    cases = [
        (heads.BertForSequenceClassification(CFG, 3), {"logits": (3, 3)}, "classifier"),
        (heads.BertForTokenClassification(CFG, 5), {"logits": (3, 16, 5)}, "classifier"),
        (heads.BertForQuestionAnswering(CFG), {"start_logits": (3, 16), "end_logits": (3, 16)},
         "qa_outputs"),
    ]  # fmt: skip
    for model, shapes, head in cases:
        params = model.init(rng, ids, mask, seg)["params"]
        assert set(params) == {"bert", head}
        out = model.apply({"params": params}, ids, mask, seg)
        assert {k: v.shape for k, v in out.items()} == shapes


def test_multiple_choice_scores_each_choice_independently():
    from bert_jax import heads

    ids, mask, seg = _inputs(batch=4, seq=16)
    model = heads.BertForMultipleChoice(CFG)
    ids_2x2, mask_2x2, seg_2x2 = (x.reshape(2, 2, 16) for x in (ids, mask, seg))
    params = model.init(jax.random.PRNGKey(0), ids_2x2, mask_2x2, seg_2x2)["params"]
    scores = model.apply({"params": params}, ids_2x2, mask_2x2, seg_2x2)["logits"]
    assert scores.shape == (2, 2)
    # Swapping the two choices of the first example swaps its scores and nothing else.
    swapped = [x.copy() for x in (ids_2x2, mask_2x2, seg_2x2)]
    for x in swapped:
        x[0] = x[0][::-1]
    scores2 = model.apply({"params": params}, *swapped)["logits"]
    np.testing.assert_allclose(scores2[0], scores[0][::-1], atol=1e-5)
    np.testing.assert_allclose(scores2[1], scores[1], atol=1e-5)


@pytest.mark.parametrize("offset", [0.0, 30.0])
def test_layer_norm_is_flaxs_with_its_gradient_by_hand(offset):
    """bert_jax.layer_norm.LayerNorm (backward written out) against flax's nn.LayerNorm: the
    same parameters, values and gradients (also for rows with a large mean, where the one-pass
    variance both use loses digits alike), and a hand-checked row."""
    import flax.linen as nn

    from bert_jax.layer_norm import LayerNorm

    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    x = 2.0 * jax.random.normal(keys[0], (3, 5, 64)) + offset
    ours, ref = LayerNorm(epsilon=1e-12), nn.LayerNorm(epsilon=1e-12, dtype=jnp.float32)
    params = ref.init(keys[1], x)
    assert jax.tree_util.tree_structure(ours.init(keys[1], x)) == jax.tree_util.tree_structure(
        params
    )
    params = {"params": {"scale": 1 + 0.3 * jax.random.normal(keys[2], (64,)),
                         "bias": 0.3 * jax.random.normal(keys[3], (64,))}}  # fmt: skip
    w = jax.random.normal(jax.random.PRNGKey(5), x.shape)  # a loss that weighs every output

    def loss(module):
        return lambda p, x: jnp.sum(jnp.tanh(module.apply(p, x)) * w)

    np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), atol=2e-6, rtol=0)
    got = jax.grad(loss(ours), argnums=(0, 1))(params, x)
    want = jax.grad(loss(ref), argnums=(0, 1))(params, x)
    for g, r in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_allclose(g, r, atol=2e-5 * float(jnp.abs(r).max()), rtol=0)
    # By hand: [1, 2, 3, 4] has mean 2.5 and variance 1.25, so x_hat = (x - 2.5) / sqrt(1.25).
    row = jnp.array([[1.0, 2.0, 3.0, 4.0]])
    unit = {"params": {"scale": jnp.ones(4), "bias": jnp.zeros(4)}}
    expected = (np.array([1.0, 2.0, 3.0, 4.0]) - 2.5) / np.sqrt(1.25)
    np.testing.assert_allclose(LayerNorm(epsilon=0.0).apply(unit, row)[0], expected, rtol=1e-6)


@pytest.mark.parametrize("batch", [1, 5, 32])
def test_broadcast_over_batch_sums_its_gradient_over_the_batch(batch):
    from bert_jax.model import broadcast_over_batch

    x = jax.random.normal(jax.random.PRNGKey(0), (7, 3))
    w = jax.random.normal(jax.random.PRNGKey(1), (batch, 7, 3))
    np.testing.assert_array_equal(broadcast_over_batch(x, batch), jnp.broadcast_to(x, w.shape))
    got = jax.grad(lambda x: jnp.sum(jnp.sin(broadcast_over_batch(x, batch)) * w))(x)
    np.testing.assert_allclose(
        got, np.sum(np.cos(np.asarray(x))[None] * np.asarray(w), 0), rtol=1e-5, atol=1e-6
    )
