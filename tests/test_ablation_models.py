"""The model variants of the paper's ablations: the left-to-right model and its LM loss (Table 5),
feature-based heads with a frozen encoder, layer mixes and BiLSTMs (Tables 5 and 7)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bert_jax import finetune, losses, optim, train
from bert_jax.heads import BertForPreTraining, BertForTokenClassification, HeadInput
from bert_jax.model import BertConfig, BertModel

CFG = BertConfig(
    vocab_size=50,
    hidden_size=16,
    num_hidden_layers=3,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=16,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)
LTR = dataclasses.replace(CFG, causal=True)


def _batch(seed=0, b=4, s=12, p=3):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(s // 2, s + 1, b)
    mask = (np.arange(s)[None] < lengths[:, None]).astype(np.int32)
    ids = rng.integers(5, CFG.vocab_size, (b, s)).astype(np.int32) * mask
    pos = np.stack([rng.choice(np.arange(1, n - 1), p, replace=False) for n in lengths])
    weights = np.ones((b, p), np.float32)
    weights[0, -1] = 0.0  # a padding prediction slot
    pos[0, -1] = 0
    original = ids[np.arange(b)[:, None], pos]
    masked = ids.copy()
    masked[np.arange(b)[:, None], pos] = np.where(
        weights > 0, 3, masked[np.arange(b)[:, None], pos]
    )
    return {
        "input_ids": masked,
        "input_mask": mask,
        "segment_ids": np.zeros_like(ids),
        "masked_lm_positions": pos.astype(np.int32),
        "masked_lm_ids": np.where(weights > 0, original, 0).astype(np.int32),
        "masked_lm_weights": weights,
        "next_sentence_labels": np.zeros(b, np.int32),
    }, ids


def test_unmasked_input_ids_restores_the_text():
    batch, ids = _batch()
    np.testing.assert_array_equal(losses.unmasked_input_ids(batch), ids)


def test_causal_position_sees_only_its_past():
    batch, ids = _batch()
    mask = batch["input_mask"]
    params = BertModel(LTR).init(jax.random.PRNGKey(0), ids, mask)["params"]
    out = BertModel(LTR).apply({"params": params}, ids, mask)
    changed = ids.copy()
    changed[:, 6:] = (changed[:, 6:] + 7) % CFG.vocab_size * mask[:, 6:]  # the future differs
    out2 = BertModel(LTR).apply({"params": params}, changed, mask)
    np.testing.assert_allclose(out["sequence_output"][:, :6], out2["sequence_output"][:, :6])
    assert not np.allclose(out["sequence_output"][:, 6:], out2["sequence_output"][:, 6:])
    # The pooler reads the last real token: padding after it changes nothing, the token does.
    last = mask.sum(1) - 1
    h = out["sequence_output"][np.arange(4), last]
    dense = params["pooler"]["dense"]
    np.testing.assert_allclose(
        out["pooled_output"], np.tanh(h @ dense["kernel"] + dense["bias"]), rtol=1e-5, atol=1e-6
    )
    # A bidirectional model's first position sees the future.
    bi = BertModel(CFG).apply({"params": params}, ids, mask)["sequence_output"]
    bi2 = BertModel(CFG).apply({"params": params}, changed, mask)["sequence_output"]
    assert not np.allclose(bi[:, :6], bi2[:, :6])


def test_left_to_right_loss_by_hand():
    batch, ids = _batch()
    logits = jax.random.normal(jax.random.PRNGKey(1), (4, 12, CFG.vocab_size))
    outputs = {"mlm_logits": logits, "nsp_logits": jnp.zeros((4, 2))}
    sums = losses.pretraining_sums(outputs, batch, causal=True, next_sentence=False)
    logp = jax.nn.log_softmax(logits, -1)
    nll, n = 0.0, 0
    for b in range(4):
        for t in range(11):
            if batch["input_mask"][b, t + 1]:
                nll -= float(logp[b, t, ids[b, t + 1]])
                n += 1
    np.testing.assert_allclose(sums["mlm_loss"], nll, rtol=1e-5)
    assert float(sums["mlm_weight"]) == n
    assert float(sums["nsp_weight"]) == 0.0 and float(sums["nsp_loss"]) == 0.0
    m = losses.pretraining_metrics(sums)
    np.testing.assert_allclose(m["mlm_perplexity"], np.exp(nll / n), rtol=1e-5)
    np.testing.assert_allclose(m["loss"], nll / n, rtol=1e-5)  # no NSP term


def test_ltr_train_step_learns_the_next_token():
    batch, _ = _batch()
    model = BertForPreTraining(LTR)
    tx = optax.adam(1e-2)
    state = train.init_state(model, tx, jax.random.PRNGKey(0), 12, 3)
    step = jax.jit(
        functools.partial(train.train_step, model=model, optimizer=tx, next_sentence=False)
    )
    first = None
    for _ in range(60):
        state, m = step(state, batch)
        first = float(m["mlm_loss"]) if first is None else first
    assert float(m["mlm_loss"]) < 0.2 * first
    assert float(m["nsp_loss"]) == 0.0


@pytest.mark.parametrize("layers", ["embeddings", "second_to_last", "sum_last_four", "sum_all"])
def test_head_reads_the_chosen_layers(layers):
    batch, ids = _batch()
    mask = batch["input_mask"]
    spec = HeadInput(layers=layers, freeze_encoder=True)
    model = BertForTokenClassification(CFG, 5, spec)
    params = model.init(jax.random.PRNGKey(0), ids, mask)["params"]
    hidden = BertModel(CFG).apply({"params": params["bert"]}, ids, mask)["hidden_states"]
    expected = {
        "embeddings": hidden[0],
        "second_to_last": hidden[-2],
        # Zero-initialised mixing weights: softmax gives the plain mean (gamma starts at 1).
        "sum_last_four": np.mean(hidden[-4:], axis=0),
        "sum_all": np.mean(hidden[1:], axis=0),
    }[layers]
    k = params["classifier"]["kernel"]
    np.testing.assert_allclose(
        model.apply({"params": params}, ids, mask)["logits"],
        expected @ k + params["classifier"]["bias"],
        rtol=1e-4,
        atol=1e-5,
    )


def test_concat_last_four_widens_the_features():
    batch, ids = _batch()
    model = BertForTokenClassification(CFG, 5, HeadInput(layers="concat_last_four"))
    params = model.init(jax.random.PRNGKey(0), ids, batch["input_mask"])["params"]
    assert params["classifier"]["kernel"].shape == (4 * CFG.hidden_size, 5)


def test_bilstm_ignores_padding_and_frozen_encoder_never_changes():
    batch, ids = _batch()
    mask = batch["input_mask"]
    spec = HeadInput(layers="sum_last_four", freeze_encoder=True, bilstm_layers=2, bilstm_size=6)
    model = finetune.make_model("token", CFG, 5, spec)
    params = model.init(jax.random.PRNGKey(0), ids, mask)["params"]
    assert set(params) == {"bert", "head_input", "classifier"}
    assert set(params["head_input"]) == {"scalar_mix", "bilstm_0", "bilstm_1"}
    logits = model.apply({"params": params}, ids, mask)["logits"]
    garbage = np.where(mask > 0, ids, 7)  # other tokens under the padding
    logits2 = model.apply({"params": params}, garbage, mask)["logits"]
    real = mask[..., None] > 0
    np.testing.assert_allclose(np.where(real, logits, 0), np.where(real, logits2, 0), atol=1e-5)

    tx = optim.freeze(optax.adamw(1e-2, weight_decay=0.1), "bert")
    state = {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "opt_state": tx.init(params),
        "rng": jax.random.PRNGKey(0),
    }
    fbatch = {
        "input_ids": ids,
        "input_mask": mask,
        "segment_ids": np.zeros_like(ids),
        "label": np.ones_like(ids),
        "label_weights": mask.astype(np.float32),
    }
    step = jax.jit(functools.partial(finetune.train_step, model=model, optimizer=tx, head="token"))
    for _ in range(3):
        state, _ = step(state, fbatch)
    for a, b in zip(
        jax.tree_util.tree_leaves(params["bert"]),
        jax.tree_util.tree_leaves(state["params"]["bert"]),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(params["classifier"]["kernel"], state["params"]["classifier"]["kernel"])
    # The layer mix is the head's, not the encoder's: it learns (it stayed the plain mean when
    # the gradient was stopped after mixing).
    mix, mixed = params["head_input"]["scalar_mix"], state["params"]["head_input"]["scalar_mix"]
    assert not np.allclose(mix["weights"], mixed["weights"])
    assert not np.allclose(mix["gamma"], mixed["gamma"])


def test_classification_with_bilstm_reads_both_directions():
    batch, ids = _batch()
    mask = batch["input_mask"]
    spec = HeadInput(bilstm_layers=1, bilstm_size=4)
    model = finetune.make_model("classification", LTR, 3, spec)
    params = model.init(jax.random.PRNGKey(0), ids, mask)["params"]
    assert params["classifier"]["kernel"].shape == (8, 3)
    out = model.apply({"params": params}, ids, mask)["logits"]
    assert out.shape == (4, 3) and np.isfinite(out).all()
    with pytest.raises(ValueError, match="head.layers='top'"):
        HeadInput(layers="top")


def test_mean_pooled_sentence_vector_by_hand():
    batch, ids = _batch()
    mask = batch["input_mask"]
    model = finetune.make_model("classification", CFG, 3, HeadInput(pool="mean"))
    params = model.init(jax.random.PRNGKey(0), ids, mask)["params"]
    last = np.asarray(
        BertModel(CFG).apply({"params": params["bert"]}, ids, mask)["sequence_output"]
    )
    mean = np.stack([last[i, : mask[i].sum()].mean(0) for i in range(len(ids))])
    k, b = params["classifier"]["kernel"], params["classifier"]["bias"]
    logits = model.apply({"params": params}, ids, mask)["logits"]
    np.testing.assert_allclose(logits, mean @ k + b, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="head.pool='max'"):
        HeadInput(pool="max")
