"""bert_jax/dropout.py: the counter-hash dropout keeps each element with probability 1 - rate,
independently of its neighbours and of other calls, scales what it keeps, and is the identity
when deterministic."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.dropout import HashDropout, hash_bits

N = 1_000_000  # binomial std of a kept fraction: sqrt(p (1 - p) / N) <= 0.0005


def _apply(rate, x, key=0, deterministic=False):
    layer = HashDropout(rate)
    rngs = {"dropout": jax.random.PRNGKey(key)}
    return layer.apply({}, x, deterministic=deterministic, rngs=rngs)


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_keeps_the_right_fraction_and_scales_it(rate):
    y = np.asarray(_apply(rate, jnp.ones((1000, 1000))))
    kept = y != 0
    assert abs(kept.mean() - (1 - rate)) < 0.003, kept.mean()
    np.testing.assert_allclose(y[kept], 1 / (1 - rate), rtol=1e-6)


def test_masks_are_independent_across_neighbours_and_calls():
    a = np.asarray(_apply(0.5, jnp.ones((N,)), key=0)) != 0
    b = np.asarray(_apply(0.5, jnp.ones((N,)), key=1)) != 0
    # Independent fair coins agree half the time, neighbour pairs are both kept a quarter.
    assert abs((a == b).mean() - 0.5) < 0.003
    assert abs((a[1:] & a[:-1]).mean() - 0.25) < 0.003
    bits = np.asarray(hash_bits((N,), jnp.array([3, 7], jnp.uint32)))
    for bit in (0, 15, 31):  # every bit of the hash is a fair coin
        assert abs(((bits >> bit) & 1).mean() - 0.5) < 0.003


def test_bfloat16_values_are_scaled_by_the_exact_keep_probability():
    """1 / 0.9 applied in float32, then rounded once: not x / bf16(0.9) = x / 0.8984."""
    y = np.asarray(_apply(0.1, jnp.ones((1000,), jnp.bfloat16)).astype(jnp.float32))
    assert set(np.unique(y)) == {0.0, float(jnp.bfloat16(1 / 0.9))}


def test_arrays_of_2_to_the_32_elements_do_not_repeat_their_masks():
    """A 32-bit element counter wraps at 2^32: rows 0 and 1024 of a [1025, 16, 512, 512] array
    (attention probabilities of a large global batch) used to get the same mask."""
    seeds = jnp.array([3, 7], jnp.uint32)
    shape = (1025, 16, 512, 512)  # 4.3e9 elements; XLA computes only the rows taken below
    rows = jax.jit(lambda s: hash_bits(shape, s)[jnp.array([0, 1024]), 0, :2, :64])(seeds)
    rows = np.asarray(rows)
    assert (rows[0] != rows[1]).mean() > 0.99
    # Below 2^32 elements the hash is unchanged (earlier runs' masks stay the same).
    small = np.asarray(hash_bits((4, 8), seeds)).ravel()
    index = np.arange(32, dtype=np.uint32)
    np.testing.assert_array_equal(small, np.asarray(_reference(index, seeds)))


def _reference(index, seeds):
    from bert_jax.dropout import _fmix32

    return _fmix32(_fmix32(jnp.asarray(index) + seeds[0]) ^ seeds[1])


def test_identity_when_deterministic_or_rate_zero_and_zero_at_rate_one():
    x = jnp.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(_apply(0.3, x, deterministic=True), x)
    np.testing.assert_array_equal(_apply(0.0, x), x)
    np.testing.assert_array_equal(_apply(1.0, x), jnp.zeros_like(x))


def test_gradient_uses_the_forward_mask():
    x = jnp.linspace(1.0, 2.0, 64)
    y, vjp = jax.vjp(lambda v: _apply(0.5, v), x)
    (g,) = vjp(jnp.ones_like(x))
    np.testing.assert_allclose(g, np.where(np.asarray(y) != 0, 2.0, 0.0))
