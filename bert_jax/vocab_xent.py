"""Masked-LM cross-entropy against the tied vocabulary, forward and backward written out
(`model.fused_mlm_loss`).

The plain route (logits = h E^T + b, then `losses.weighted_cross_entropy`) leaves the backward
to autodiff, which on XLA's CPU backend costs several extra passes over the [P, V] logits (P
masked positions, V = 30522): a zero [P, V] array that take_along_axis's gradient scatters
into, an add of it to the softmax gradient, a float32 gradient converted to the matmul dtype
in a separate pass, a column reduction for the bias gradient (slow on CPU) and a summed
gradient of log_softmax. Here the backward is one pass, softmax x cotangent in the matmul
dtype; the label's "- 1" is applied after the matmuls, to P rows of their [P, H] and [V, H]
results; and the bias gradient comes out of the table-gradient matmul as one extra row. The
math is that of the plain route: the same logits, the same float32 softmax, the same
gradients up to float rounding (tests/test_levers.py). BERT-mini, P = 640, V = 30522 on the
2-core development VM: 157 -> 86 ms for this block's forward and backward with bfloat16
matmuls, 227 -> 171 ms in float32 (docs/benchmarks.md).

Matmuls follow bf16_matmul.py's rule and use its helpers: every dot (`dot_f32`) contracts its
left operand on its last dimension (the only bf16 dot XLA's CPU backend runs fast), and
transposes are materialised (`transposed`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from bert_jax.bf16_matmul import dot_f32, dtype_token, row_max, transposed

Array = jax.Array
_F32 = jnp.float32


def vocab_cross_entropy(
    h_PxH: Array, table_VxH: Array, bias_V: Array, labels_P: Array, matmul_dtype
) -> tuple[Array, Array]:
    """(-log softmax(h E^T + b)[label], hit) per position, both float32 [P].

    A hit is a label whose logit is the largest (as `losses.weighted_correct`: ties count).
    The matmuls take operands in `matmul_dtype` (bfloat16 under model.bf16_matmul) and
    accumulate in float32; softmax and both outputs are float32. Differentiable in h, the
    table and the bias; `hit` carries no gradient.
    """
    return _xent(h_PxH, table_VxH, bias_V, labels_P, jnp.dtype(matmul_dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _xent(h_PxH, table_VxH, bias_V, labels_P, dtype):
    return _xent_fwd(h_PxH, table_VxH, bias_V, labels_P, dtype)[0]


def _xent_fwd(h_PxH, table_VxH, bias_V, labels_P, dtype):
    h_c, table_c = h_PxH.astype(dtype), table_VxH.astype(dtype)
    z_PxV = dot_f32(h_c, table_c, b_is_NxK=True) + bias_V
    # (Not jnp.max: XLA would materialise z for YNNPACK's reduction; see bf16_matmul.row_max.)
    max_P = row_max(z_PxV)[:, 0]
    # exp(z - max) is kept for the backward: it is the softmax up to a per-row factor, and the
    # backward's single pass then reads it instead of recomputing an exp over [P, V].
    e_PxV = jnp.exp(z_PxV - max_P[:, None])
    sum_P = jnp.sum(e_PxV, axis=-1)
    label_logit_P = jnp.take_along_axis(z_PxV, labels_P[:, None], axis=-1)[:, 0]
    nll_P = max_P + jnp.log(sum_P) - label_logit_P
    hit_P = (label_logit_P >= max_P).astype(_F32)
    return (nll_P, hit_P), (h_c, table_c, e_PxV, sum_P, labels_P, dtype_token(h_PxH))


def _xent_bwd(dtype, res, cotangents):
    h_c, table_c, e_PxV, sum_P, labels_P, h_token = res
    g_P = cotangents[0]  # d loss / d nll; the hits are not differentiable
    p, hidden = h_c.shape
    # d nll / d z = softmax - onehot(label): the softmax part here, in one pass over [P, V] ...
    dz_PxV = (e_PxV * (g_P / sum_P)[:, None]).astype(dtype)
    dh_PxH = dot_f32(dz_PxV, table_c)
    # ... with a row of ones under h^T, the same matmul sums dz over the positions: the bias
    # gradient is row H of the result.
    h1T = transposed(jnp.concatenate([h_c, jnp.ones((p, 1), dtype)], axis=1))
    dtable1T = dot_f32(h1T, dz_PxV)  # [H + 1, V]
    dtable_VxH = transposed(dtable1T[:hidden])
    dbias_V = dtable1T[hidden]
    # ... and the onehot part, -g at (position, label), added to P rows of the results.
    dh_PxH = dh_PxH - g_P[:, None] * table_c[labels_P].astype(_F32)
    dtable_VxH = dtable_VxH.at[labels_P].add(-g_P[:, None] * h_c.astype(_F32))
    dbias_V = dbias_V.at[labels_P].add(-g_P)
    return dh_PxH.astype(h_token.dtype), dtable_VxH, dbias_V, None


_xent.defvjp(_xent_fwd, _xent_bwd)
