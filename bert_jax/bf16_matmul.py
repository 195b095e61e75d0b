"""Matmuls on bfloat16 operands with float32 accumulation and float32 results, forward and
backward (`model.bf16_matmul`).

What a TPU does by default with float32 matmuls, written out for CPUs with bfloat16 matrix units
(Intel AMX, AVX512-BF16): XLA's CPU backend runs a bf16 x bf16 -> f32 dot through YNNPACK at
several times its float32 speed (1.2-1.7 TFLOP/s against 0.27 on the 2-core development VM,
docs/benchmarks.md), but only for a dot whose left operand is contracted on its last dimension
(ynn_support.cc, `IsDotSupportedByYnn`). Any other dot, and every bf16 dot with a bf16 result,
falls back to a float32 loop. Under plain autodiff the weight gradient x^T g contracts x on its
first dimension, so this module defines the gradient itself: the weight gradient is computed
from a physical transpose of x, which XLA cannot fold back into the dot because it goes through
a reshape (`_transposed`).

Activations, biases, softmax and LayerNorm stay float32; only the operands of the dense layers'
and the vocabulary projection's matmuls (`matmul`, `matmul_nt`), and with `model.bf16_attention`
those of the attention's scores and context (`batched_matmul_nt`, `batched_matmul`), are rounded
to bfloat16.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array
_BF16, _F32 = jnp.bfloat16, jnp.float32


def _transposed(x_MxK: Array) -> Array:
    """x^T as a row-major [K, M] array (x^T of each [M, K] matrix of a batch [..., M, K]). A plain
    transpose would be folded into the consuming dot (as a contraction over x's first dimension);
    split rows into blocks and transpose those, and XLA materialises it."""
    *lead, m, k = x_MxK.shape
    block = next(b for b in (8, 4, 2, 1) if m % b == 0)
    n = len(lead)
    blocks = x_MxK.reshape(*lead, m // block, block, k)
    return blocks.transpose(*range(n), n + 2, n, n + 1).reshape(*lead, k, m)


def _dtype_token(x: Array) -> Array:
    """An empty array that carries x's dtype through the residuals (a dtype is not a JAX type)."""
    return jnp.zeros((0,), x.dtype)


def _dot(a_MxK: Array, b_KxN: Array) -> Array:
    return jnp.dot(a_MxK, b_KxN, preferred_element_type=_F32)


def _dot_nt(a_MxN: Array, b_KxN: Array) -> Array:
    """a @ b^T, contracting both on their last dimension (no transpose needed)."""
    return lax.dot_general(a_MxN, b_KxN, (((1,), (1,)), ((), ())), preferred_element_type=_F32)


def matmul(x: Array, w_KxN: Array) -> Array:
    """x[..., K] @ w[K, N] -> float32 [..., N], operands rounded to bfloat16."""
    return _product(x, w_KxN, False)


def matmul_nt(x: Array, w_NxK: Array) -> Array:
    """x[..., K] @ w[N, K]^T -> float32 [..., N] (logits against an embedding table [V, H])."""
    return _product(x, w_NxK, True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _product(x: Array, w: Array, w_is_NxK: bool) -> Array:
    y, _ = _product_fwd(x, w, w_is_NxK)
    return y


def _product_fwd(x, w, w_is_NxK):
    n, k = w.shape if w_is_NxK else w.shape[::-1]
    x_MxK = x.reshape(-1, k).astype(_BF16)
    w_bf = w.astype(_BF16)
    y = (_dot_nt if w_is_NxK else _dot)(x_MxK, w_bf).reshape(*x.shape[:-1], n)
    return y, (x_MxK, w_bf, _dtype_token(x), _dtype_token(w))


def _product_bwd(w_is_NxK, res, g):
    x_MxK, w_bf, x_token, w_token = res
    (m, k), n = x_MxK.shape, g.shape[-1]
    g_MxN = g.reshape(-1, n).astype(_BF16)
    dx = (_dot if w_is_NxK else _dot_nt)(g_MxN, w_bf).reshape(*g.shape[:-1], k)
    # The weight gradient contracts x and g over their rows, so one of them is transposed: x
    # (dW [K, N] = x^T g) or g (dW^T [N, K] = g^T x). Pick the one that moves less memory,
    # counting the float32 result's transpose when the weight's layout needs one.
    moved_x = m * k * 2 + (k * n * 4 if w_is_NxK else 0)
    moved_g = m * n * 2 + (0 if w_is_NxK else k * n * 4)
    if moved_x <= moved_g:
        dw_KxN = _dot(_transposed(x_MxK), g_MxN)
        dw = _transposed(dw_KxN) if w_is_NxK else dw_KxN
    else:
        dw_NxK = _dot(_transposed(g_MxN), x_MxK)
        dw = dw_NxK if w_is_NxK else _transposed(dw_NxK)
    return dx.astype(x_token.dtype), dw.astype(w_token.dtype)


_product.defvjp(_product_fwd, _product_bwd)


def _bdot(a: Array, b: Array, b_is_NxK: bool = False) -> Array:
    """a[..., M, K] @ b[..., K, N] (or b[..., N, K]^T), batched over the leading dimensions."""
    n = a.ndim - 2
    batch = tuple(range(n))
    contract = ((n + 1,), (n + 1,) if b_is_NxK else (n,))
    return lax.dot_general(a, b, (contract, (batch, batch)), preferred_element_type=_F32)


def batched_matmul(a: Array, b: Array) -> Array:
    """a[..., M, K] @ b[..., K, N] -> float32, batched over the leading dimensions (attention's
    probabilities @ values), operands rounded to bfloat16."""
    return _batched(a, b, False)


def batched_matmul_nt(a: Array, b: Array) -> Array:
    """a[..., M, K] @ b[..., N, K]^T -> float32 (attention's queries @ keys^T)."""
    return _batched(a, b, True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _batched(a: Array, b: Array, b_is_NxK: bool) -> Array:
    return _batched_fwd(a, b, b_is_NxK)[0]


def _batched_fwd(a, b, b_is_NxK):
    a_bf, b_bf = a.astype(_BF16), b.astype(_BF16)
    return _bdot(a_bf, b_bf, b_is_NxK), (a_bf, b_bf, _dtype_token(a), _dtype_token(b))


def _batched_bwd(b_is_NxK, res, g_MxN):
    a_bf, b_bf, a_token, b_token = res
    g_bf = g_MxN.astype(_BF16)
    # da = g b^T (b [K, N]) or g b (b [N, K]); db = a^T g or g^T a: the transposed operand is
    # materialised, so that every dot contracts its left operand on the last dimension.
    da = _bdot(g_bf, b_bf, not b_is_NxK)
    db = _bdot(_transposed(g_bf), a_bf) if b_is_NxK else _bdot(_transposed(a_bf), g_bf)
    return da.astype(a_token.dtype), db.astype(b_token.dtype)


_batched.defvjp(_batched_fwd, _batched_bwd)


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """`flax.linen.Dense(dot_general=...)`: the dense layer's x[..., K] @ kernel[K, N]."""
    del precision, preferred_element_type
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    if (
        tuple(lhs_contract) != (lhs.ndim - 1,)
        or tuple(rhs_contract) != (0,)
        or lhs_batch
        or rhs_batch
        or rhs.ndim != 2
    ):
        raise ValueError(
            f"bf16_matmul.dot_general takes a dense layer's x[..., K] @ w[K, N]; got dimension "
            f"numbers {dimension_numbers} for shapes {lhs.shape} and {rhs.shape}."
        )
    return matmul(lhs, rhs)
