"""Matmuls on bfloat16 operands with float32 accumulation and float32 results, forward and
backward (`model.bf16_matmul`).

What a TPU does by default with float32 matmuls, written out for CPUs with bfloat16 matrix units
(Intel AMX, AVX512-BF16): XLA's CPU backend runs a bf16 x bf16 -> f32 dot through YNNPACK at
several times its float32 speed (1.2-1.7 TFLOP/s against 0.27 on the 2-core development VM,
docs/benchmarks.md), but only for a dot whose left operand is contracted on its last dimension
(ynn_support.cc, `IsDotSupportedByYnn`). Any other dot, and every bf16 dot with a bf16 result,
falls back to a float32 loop. Under plain autodiff the weight gradient x^T g contracts x on its
first dimension, so this module defines the gradient itself: the weight gradient is computed
from a physical transpose of x or of g (the smaller), which XLA cannot fold back into the dot
because it goes through a reshape (`transposed`). One custom VJP (`_product`) serves the dense
layers (x reshaped to [M, K]) and the attention's batched products alike.

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


def transposed(x_MxK: Array) -> Array:
    """x^T as a row-major [K, M] array (x^T of each [M, K] matrix of a batch [..., M, K]). A plain
    transpose would be folded into the consuming dot (as a contraction over x's first dimension);
    split rows into blocks and transpose those, and XLA materialises it."""
    *lead, m, k = x_MxK.shape
    block = next(b for b in (8, 4, 2, 1) if m % b == 0)
    n = len(lead)
    blocks = x_MxK.reshape(*lead, m // block, block, k)
    return blocks.transpose(*range(n), n + 2, n, n + 1).reshape(*lead, k, m)


def dtype_token(x: Array) -> Array:
    """An empty array that carries x's dtype through the residuals (a dtype is not a JAX type)."""
    return jnp.zeros((0,), x.dtype)


def dot_f32(a: Array, b: Array, b_is_NxK: bool = False) -> Array:
    """a[..., M, K] @ b[..., K, N] (or b[..., N, K]^T) -> float32, batched over the leading
    dimensions; the left operand is always contracted on its last dimension."""
    n = a.ndim - 2
    batch = tuple(range(n))
    contract = ((n + 1,), (n + 1,) if b_is_NxK else (n,))
    return lax.dot_general(a, b, (contract, (batch, batch)), preferred_element_type=_F32)


def matmul(x: Array, w_KxN: Array) -> Array:
    """x[..., K] @ w[K, N] -> float32 [..., N], operands rounded to bfloat16."""
    k, n = w_KxN.shape
    return _product(x.reshape(-1, k), w_KxN, False).reshape(*x.shape[:-1], n)


def matmul_nt(x: Array, w_NxK: Array) -> Array:
    """x[..., K] @ w[N, K]^T -> float32 [..., N] (logits against an embedding table [V, H])."""
    n, k = w_NxK.shape
    return _product(x.reshape(-1, k), w_NxK, True).reshape(*x.shape[:-1], n)


def batched_matmul(a: Array, b: Array) -> Array:
    """a[..., M, K] @ b[..., K, N] -> float32, batched over the leading dimensions (attention's
    probabilities @ values), operands rounded to bfloat16.

    The operands must be row-major arrays, not transposed views (`x.transpose(0, 2, 1, 3)` of
    the heads keeps their memory order): XLA upcasts a bf16 dot on a view to a float32 dot.
    Reshaping after the transpose (model.SelfAttention: [B*N, S, D]) makes XLA materialise it."""
    return _product(a, b, False)


def batched_matmul_nt(a: Array, b: Array) -> Array:
    """a[..., M, K] @ b[..., N, K]^T -> float32 (attention's queries @ keys^T; row-major
    operands, as for `batched_matmul`)."""
    return _product(a, b, True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _product(a: Array, b: Array, b_is_NxK: bool) -> Array:
    return _product_fwd(a, b, b_is_NxK)[0]


def _product_fwd(a, b, b_is_NxK):
    a_bf, b_bf = a.astype(_BF16), b.astype(_BF16)
    return dot_f32(a_bf, b_bf, b_is_NxK), (a_bf, b_bf, dtype_token(a), dtype_token(b))


def _product_bwd(b_is_NxK, res, g_MxN):
    a_bf, b_bf, a_token, b_token = res
    (m, k), n = a_bf.shape[-2:], g_MxN.shape[-1]
    g_bf = g_MxN.astype(_BF16)
    da = dot_f32(g_bf, b_bf, not b_is_NxK)  # g b^T, or g b for b [N, K]
    # The gradient of b contracts a and g over their rows, so one of them is transposed in
    # memory: a (db [K, N] = a^T g) or g (db^T [N, K] = g^T a). Pick the one that moves less,
    # counting the float32 result's transpose when b's layout needs one. (A plain `.T` of a dot's
    # result is folded into the dot, which XLA's CPU runtime then rejects: "Unsupported element
    # type for DotThunk::Execute: BF16 x BF16 = F32"; `transposed` is materialised.)
    moved_a = m * k * 2 + (k * n * 4 if b_is_NxK else 0)
    moved_g = m * n * 2 + (0 if b_is_NxK else k * n * 4)
    if moved_a <= moved_g:
        db_KxN = dot_f32(transposed(a_bf), g_bf)
        db = transposed(db_KxN) if b_is_NxK else db_KxN
    else:
        db_NxK = dot_f32(transposed(g_bf), a_bf)
        db = db_NxK if b_is_NxK else transposed(db_NxK)
    return da.astype(a_token.dtype), db.astype(b_token.dtype)


_product.defvjp(_product_fwd, _product_bwd)


@jax.custom_jvp
def softmax(x: Array) -> Array:
    """jax.nn.softmax over the last axis (the same formula and JVP), with the row maximum taken as
    elementwise maxima of halves instead of a reduction.

    For the attention's scores, the output of a YNNPACK dot: XLA's CPU backend hands a `reduce_max`
    over a dot's output to YNNPACK together with the bias add, the subtraction and the exp around
    it, and YNNPACK runs that element-wise work about twice as slowly as XLA's own loops (BERT-mini,
    [16, 128, 128] scores: 0.53 ms for that fusion, against 0.20 for the dot alone and 0.17 for
    XLA's max and exp). Maxima of slices are plain element-wise ops: XLA fuses them into its own
    loops. The maximum is exact either way."""
    unnormalized = jnp.exp(x - row_max(x))
    return unnormalized / jnp.sum(unnormalized, -1, keepdims=True)


@softmax.defjvp
def _softmax_jvp(primals, tangents):
    (x,), (x_dot,) = primals, tangents
    y = softmax(x)
    return y, y * (x_dot - jnp.sum(y * x_dot, -1, keepdims=True))


def row_max(x: Array) -> Array:
    """max(x, axis=-1, keepdims=True) as element-wise maxima of halves (exact): XLA fuses these
    into its own loops together with their producers. A `reduce_max` over a YNNPACK dot's output
    goes to YNNPACK instead, which needs its input materialised (the vocabulary's logits plus
    their bias: one more pass over [P, V]) and runs the element-wise work it takes in with it
    slowly (`softmax`)."""
    return reduce_halves(x, jnp.maximum, -1)


def reduce_halves(x: Array, op, axis: int) -> Array:
    """x reduced over `axis` (kept, size 1) by the element-wise `op` (jnp.maximum, jnp.add) of its
    halves, an odd element carried to the next round: element-wise work that XLA's CPU backend
    fuses into its own loops, where a reduction would go to YNNPACK."""
    while x.shape[axis] > 1:
        half = x.shape[axis] // 2
        part = functools.partial(lax.slice_in_dim, x, axis=axis)
        x = jnp.concatenate([op(part(0, half), part(half, 2 * half)), part(2 * half, None)], axis)
    return x


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
