"""LayerNorm with its backward written out: the model's LayerNorm everywhere.

The forward is flax's `nn.LayerNorm` (float32, its default one-pass variance): mean and mean
square over the features, var = max(mean square - mean^2, 0), x_hat = (x - mean) * rsqrt(var +
eps), y = x_hat * scale + bias (flax multiplies by rsqrt(var + eps) * scale: the same up to
rounding), parameters `scale` and `bias` as flax names them (checkpoints unchanged).

Under autodiff, XLA's CPU backend hands the backward's reductions (the scale gradient, a sum
over the tokens of dy * (x - mean) * rstd, and the rows' sums of dy * scale) to YNNPACK fusions
whose operands must be materialised arrays, and rstd and the scale broadcast to the activations'
full shape became two such arrays per LayerNorm: [16, 128, 256] float32 written and read again
only to be multiplied (15 of ~550 thread-ms in a bf16 BERT-mini step, docs/benchmarks.md). Here
the forward keeps x_hat = (x - mean) * rstd and rstd, and the backward is

    d bias = sum_tokens dy,  d scale = sum_tokens dy * x_hat,  g = dy * scale,
    dx = rstd * (g - mean_features(g) - x_hat * mean_features(g * x_hat)),

every reduction over arrays that exist anyway. Values equal flax's up to float rounding
(tests/test_model.py); the bf16 BERT-mini step 0.982-0.987 of the time with flax's.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array


class LayerNorm(nn.Module):
    """flax's nn.LayerNorm(epsilon, dtype=float32) over the last axis, its gradient by hand."""

    epsilon: float = 1e-12

    @nn.compact
    def __call__(self, x: Array) -> Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,))
        bias = self.param("bias", nn.initializers.zeros, (features,))
        return _layer_norm(x.astype(jnp.float32), scale, bias, self.epsilon)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _layer_norm(x: Array, scale: Array, bias: Array, epsilon: float) -> Array:
    return _forward(x, scale, bias, epsilon)[0]


def _forward(x, scale, bias, epsilon):
    mean = jnp.mean(x, -1, keepdims=True)
    var = jnp.maximum(0.0, jnp.mean(lax.square(x), -1, keepdims=True) - lax.square(mean))
    rstd = lax.rsqrt(var + epsilon)
    x_hat = (x - mean) * rstd
    return x_hat * scale + bias, (x_hat, rstd, scale)


def _backward(epsilon, residuals, dy):
    del epsilon
    x_hat, rstd, scale = residuals
    tokens = tuple(range(dy.ndim - 1))
    g = dy * scale
    dx = rstd * (
        g - jnp.mean(g, -1, keepdims=True) - x_hat * jnp.mean(g * x_hat, -1, keepdims=True)
    )
    return dx, jnp.sum(dy * x_hat, tokens), jnp.sum(dy, tokens)


_layer_norm.defvjp(_forward, _backward)
