"""Speed and memory levers compute the same function: fused QKV, jax.nn.dot_product_attention,
nn.scan over layers (with stack/unstack of the checkpoint layout) and rematerialisation give the
default model's loss and gradients; bfloat16 compute stays close."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import losses
from bert_jax.heads import BertForPreTraining
from bert_jax.model import stack_layers, unstack_layers
from tests.test_train import CFG, fake_batch

BASE = dataclasses.replace(CFG, num_hidden_layers=3)
INPUTS = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions")


def _init(config, batch):
    args = [batch[k] for k in INPUTS]
    return BertForPreTraining(config).init(jax.random.PRNGKey(0), *args)["params"]


def _leaves(*trees):
    return zip(*(jax.tree_util.tree_leaves(t) for t in trees), strict=True)


def _loss_and_grads(config, params, batch):
    model = BertForPreTraining(config)

    def loss_fn(p):
        out = model.apply({"params": p}, *(batch[k] for k in INPUTS))
        return losses.pretraining_metrics(losses.pretraining_sums(out, batch))["loss"]

    return jax.jit(jax.value_and_grad(loss_fn))(params)


@pytest.fixture(scope="module")
def reference():
    batch = fake_batch(batch=8)
    params = _init(BASE, batch)
    return batch, params, _loss_and_grads(BASE, params, batch)


@pytest.mark.parametrize(
    "options",
    [
        {"fused_qkv": True},
        {"attention": "dot"},
        {"scan_layers": True},
        {"remat": "full"},
        {"remat": "dots", "scan_layers": True, "fused_qkv": True, "attention": "dot"},
    ],
    ids=str,
)
def test_levers_compute_the_same_loss_and_gradients(options, reference):
    batch, params, (loss, grads) = reference
    config = dataclasses.replace(BASE, **options)
    mine = stack_layers(params, BASE.num_hidden_layers) if config.scan_layers else params
    # Same parameter names and shapes as the checkpoint layout (after unstacking).
    shapes = jax.tree_util.tree_map(lambda x: x.shape, unstack_layers(_init(config, batch)))
    assert shapes == jax.tree_util.tree_map(lambda x: x.shape, params)
    loss2, grads2 = _loss_and_grads(config, mine, batch)
    np.testing.assert_allclose(loss2, loss, rtol=1e-5)
    grads2 = unstack_layers(grads2)
    for a, b in _leaves(grads2, grads):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)


def test_fused_qkv_initialises_like_separate_projections(reference):
    batch, params, _ = reference
    for a, b in _leaves(_init(dataclasses.replace(BASE, fused_qkv=True), batch), params):
        np.testing.assert_array_equal(a, b)


def test_stack_unstack_round_trip(reference):
    _, params, _ = reference
    stacked = stack_layers(params, BASE.num_hidden_layers)
    assert stacked["bert"]["encoder"]["layers"]["layer"]["attention"]["self"]["query"][
        "kernel"
    ].shape == (3, 32, 32)
    back = unstack_layers(stacked)
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(params)
    for a, b in _leaves(back, params):
        np.testing.assert_array_equal(a, b)


def test_bfloat16_compute_stays_close(reference):
    batch, params, (loss, _) = reference
    loss16, _ = _loss_and_grads(dataclasses.replace(BASE, dtype="bfloat16"), params, batch)
    assert loss16.dtype == jnp.float32
    np.testing.assert_allclose(loss16, loss, rtol=2e-2)


def test_bfloat16_dot_attention_is_finite_on_an_all_padding_row(reference):
    batch, params, _ = reference
    mask = np.array(batch["input_mask"])
    mask[0] = 0  # row 0: nothing to attend to
    batch = {**batch, "input_mask": mask}
    outs = {}
    for attention in ("einsum", "dot"):
        config = dataclasses.replace(
            BASE, dtype="bfloat16", attention=attention, attention_probs_dropout_prob=0.0
        )
        outs[attention] = BertForPreTraining(config).apply(
            {"params": params}, *(batch[k] for k in INPUTS)
        )["mlm_logits"]
    assert np.isfinite(np.asarray(outs["dot"], np.float32)).all()
    np.testing.assert_allclose(outs["dot"], outs["einsum"], atol=0.1)
