"""The BERT encoder (Devlin et al., 2019) in flax.linen.

Module and parameter names mirror the original TensorFlow variable names one-to-one
(`bert/encoder/layer_3/attention/self/query/kernel` is `params['encoder']['layer_3']['attention']
['self']['query']['kernel']`), so checkpoint conversion is a renaming table, not guesswork. The only
systematic renames are flax's own: LayerNorm `gamma`/`beta` are `scale`/`bias`, and an embedding
table is `embedding`.

Shapes use suffixes: B batch, S sequence, H hidden, N heads, D head dim, F feed-forward width.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec

from bert_jax import bf16_matmul, dropout
from bert_jax.layer_norm import LayerNorm

Array = jax.Array
# The device-mesh axes that split the examples of a batch (bert_jax.parallel's logical "batch").
BATCH_AXES = ("data", "fsdp")


def batch_sharded(x: Array) -> Array:
    """`x` with its leading (batch) dimension split over BATCH_AXES, when traced for a device
    mesh (parallel.Parallel's mesh mode traces under it); else `x` unchanged. FSDP shards the
    weights, never the activations: left to itself, XLA split layer outputs along the hidden
    size instead and held the whole global batch's activations on every device (BERT-base,
    batch 128, fsdp=8: 9.7 GB of temporaries per device where data parallelism takes 2.9)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not set(BATCH_AXES) <= set(mesh.axis_names):
        return x
    if x.shape[0] % int(np.prod([mesh.shape[a] for a in BATCH_AXES])):
        return x  # (a slice of the batch, model.encoder_chunks: XLA decides)
    return lax.with_sharding_constraint(x, PartitionSpec(BATCH_AXES))


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Architecture hyper-parameters, named as in the original `bert_config.json`."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    # "learned" (BERT) or "sinusoidal" (Vaswani et al.: PE(pos, 2i) = sin(pos / 10000^(2i/H)),
    # PE(pos, 2i+1) = cos(...)); the sinusoidal table is a constant, not a parameter.
    position_embedding_type: str = "learned"
    # Compute dtype for matmuls ("float32" or "bfloat16"); parameters are always float32, and
    # softmax and LayerNorm statistics are always computed in float32.
    dtype: str = "float32"
    # Left-to-right model (BERT Table 5, "LTR & No NSP"): a position attends only to itself and
    # the positions before it, pre-training predicts the next token, and the pooler reads the
    # last real token (the only one that has seen the whole input) instead of [CLS].
    causal: bool = False
    # How the same math is computed (speed and memory levers; none changes a result beyond
    # float rounding, see experiments/benchmark.py):
    # one [H, 3H] matmul for query, key and value (their parameters stay separate);
    fused_qkv: bool = False
    # "einsum" (explicit softmax, attention dropout), "dot" (jax.nn.dot_product_attention
    # computed by XLA, any device) or "cudnn" (the same function through cuDNN's fused flash
    # attention: a GPU and dtype="bfloat16"). "dot" and "cudnn" need attention_probs_dropout_prob=0
    # and take the padding as each row's length (BERT pads at the end: input_mask is 1s then 0s,
    # which the pre-training loop checks); packed rows pass their block-diagonal bias instead;
    attention: str = "einsum"
    # nn.scan over the layers: one compiled layer whatever the depth (parameters stacked under
    # encoder/layers, see stack_layers / unstack_layers);
    scan_layers: bool = False
    # recompute activations in the backward pass: "none", "full" (each layer), "dots" (keep
    # only matmul outputs): less memory for more compute.
    remat: str = "none"
    # Random bits for dropout: "threefry" (JAX's default), "rbg" (XLA's RngBitGenerator,
    # far cheaper per bit on accelerators) or "hash" (a counter hash per element, dropout.py:
    # ~14x cheaper than threefry on CPU); the masks differ, their distribution does not.
    dropout_rng: str = "threefry"
    # Round the operands of the dense layers' and the vocabulary projection's matmuls to
    # bfloat16, accumulate and return float32, and keep activations float32 (bf16_matmul.py):
    # a TPU's default matmul precision, and 4-6x faster matmuls on CPUs with bfloat16 units.
    bf16_matmul: bool = False
    # The same for the attention's two batched matmuls (scores and context, computed with the
    # heads leading: [B*N, S, D]), with the softmax's row maximum as maxima of halves
    # (bf16_matmul.softmax, out of YNNPACK's reach); attention="einsum" only.
    bf16_attention: bool = False
    # Pre-training's masked-LM loss through vocab_xent.py: the cross-entropy's backward
    # written out (one pass over the [P, V] logits instead of ~six), same math.
    fused_mlm_loss: bool = True
    # Run the encoder on this many equal slices of the batch, and each layer's attention core
    # (scores, softmax, dropout, context) on this many slices of its input: independent chains
    # that XLA's CPU runtime runs side by side on its threads (its batched attention matmuls
    # use one thread each). The same outputs up to float rounding; dropout draws separate masks
    # per slice. 1 and 1 on accelerators; the bf16 BERT-mini step on 2 CPU cores: 2 and 4, +17%.
    encoder_chunks: int = 1
    attention_chunks: int = 1

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_attention_heads="
                f"{self.num_attention_heads}; pick heads = hidden_size // 64 as BERT does."
            )
        if self.position_embedding_type not in ("learned", "sinusoidal"):
            raise ValueError(
                f"position_embedding_type={self.position_embedding_type!r}; "
                "use 'learned' or 'sinusoidal'."
            )
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype={self.dtype!r}; use 'float32' or 'bfloat16'.")
        if self.attention not in ("einsum", "dot", "cudnn"):
            raise ValueError(f"attention={self.attention!r}; use 'einsum', 'dot' or 'cudnn'.")
        if self.attention != "einsum" and self.attention_probs_dropout_prob:
            raise ValueError(
                f"attention={self.attention!r} (jax.nn.dot_product_attention) has no dropout on "
                f"the attention probabilities; set attention_probs_dropout_prob=0 (it is "
                f"{self.attention_probs_dropout_prob}) or use attention='einsum'."
            )
        if self.attention == "cudnn" and self.dtype != "bfloat16":
            raise ValueError(
                f"attention='cudnn' (cuDNN's fused attention) takes 16-bit inputs; set "
                f"dtype='bfloat16' (it is {self.dtype!r}) or use attention='dot'."
            )
        if self.dropout_rng not in ("threefry", "rbg", "hash"):
            raise ValueError(f"dropout_rng={self.dropout_rng!r}; use 'threefry', 'rbg' or 'hash'.")
        if self.bf16_matmul and self.dtype != "float32":
            raise ValueError(
                f"bf16_matmul=True rounds only the matmul operands and keeps activations float32; "
                f"it needs dtype='float32' (got {self.dtype!r}, which rounds activations too)."
            )
        if self.bf16_attention and (self.dtype != "float32" or self.attention != "einsum"):
            raise ValueError(
                f"bf16_attention=True rounds the attention matmuls' operands of the float32 "
                f"'einsum' attention; it needs dtype='float32' and attention='einsum' (got "
                f"{self.dtype!r}, {self.attention!r})."
            )
        for name in ("encoder_chunks", "attention_chunks"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}; use a whole number of batch slices >= 1.")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat={self.remat!r}; use one of {sorted(REMAT_POLICIES)}.")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BertConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(f"unknown BertConfig fields {unknown}; known fields: {sorted(fields)}")
        return cls(**d)

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)


# Fields that say how to compute, not what: they may differ between a checkpoint and a run.
IMPLEMENTATION_FIELDS = (
    "dtype",
    "bf16_matmul",
    "bf16_attention",
    "fused_mlm_loss",
    "encoder_chunks",
    "attention_chunks",
    "fused_qkv",
    "attention",
    "scan_layers",
    "remat",
    "dropout_rng",
)
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def batch_slices(rows: int, chunks: int) -> list[slice]:
    """`chunks` consecutive slices covering `rows` rows, their sizes differing by at most one
    (one slice per row when there are fewer rows than chunks)."""
    k = max(1, min(chunks, rows))
    bounds = [rows * i // k for i in range(k + 1)]
    return [slice(lo, hi) for lo, hi in itertools.pairwise(bounds)]


def over_batch_slices(fn, chunks: int, *arrays: Array):
    """fn(*arrays) computed on `chunks` slices of the batch (the leading axis) one by one, the
    outputs (an array or a list of arrays) concatenated; with chunks=1 simply fn(*arrays). An
    array whose leading axis is 1 (an attention bias shared by the batch) goes whole to each;
    the others (a per-row bias or lengths [B]) are sliced with the batch."""
    rows = arrays[0].shape[0]
    parts = [
        fn(*(a if a.shape[0] == 1 else a[r] for a in arrays)) for r in batch_slices(rows, chunks)
    ]
    if len(parts) == 1:
        return parts[0]
    return jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *parts)


def kernel_init(config: BertConfig):
    # TF's truncated_normal_initializer: normal(0, stddev) re-drawn beyond 2 stddev.
    return nn.initializers.truncated_normal(stddev=config.initializer_range)


def sinusoidal_positions(max_len: int, dim: int) -> np.ndarray:
    """PE[pos, 2i] = sin(pos / 10000^(2i/dim)), PE[pos, 2i+1] = cos(pos / 10000^(2i/dim))."""
    pos = np.arange(max_len, dtype=np.float64)[:, None]
    two_i = np.arange(0, dim, 2, dtype=np.float64)[None, :]
    angle = pos / np.power(10000.0, two_i / dim)
    table = np.zeros((max_len, dim), dtype=np.float64)
    table[:, 0::2] = np.sin(angle)
    table[:, 1::2] = np.cos(angle[:, : dim // 2])
    return table.astype(np.float32)


def gelu(x: Array) -> Array:
    """Exact GELU, x * Phi(x) = x/2 (1 + erf(x / sqrt 2)), as transformers' "gelu" computes it.

    `jax.nn.gelu(approximate=False)` computes the same as x/2 erfc(-x / sqrt 2), which XLA's CPU
    backend evaluates 2-3x slower than erf (docs/benchmarks.md). On float32 inputs from -20 to
    20 this is within 1.1e-6 of the float64 value (erfc's form: 3.8e-7), its gradient 2.2e-7."""
    return 0.5 * x * (1.0 + lax.erf(x * 2**-0.5))


def layer_norm(config: BertConfig, name: str) -> LayerNorm:
    # Statistics in float32 even under bfloat16 compute (the variance of bf16 activations is noisy).
    return LayerNorm(epsilon=config.layer_norm_eps, name=name)


def dropout_layer(config: BertConfig, rate: float) -> nn.Module:
    """nn.Dropout, or with dropout_rng="hash" its counter-hash twin (same call signature)."""
    return dropout.HashDropout(rate) if config.dropout_rng == "hash" else nn.Dropout(rate)


def dense(config: BertConfig, features: int, name: str) -> nn.Dense:
    return nn.Dense(
        features,
        kernel_init=kernel_init(config),
        dtype=config.compute_dtype,
        dot_general=bf16_matmul.dot_general if config.bf16_matmul else None,
        name=name,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def broadcast_over_batch(x: Array, batch: int) -> Array:
    """x[None] repeated `batch` times ([batch, *x.shape]); its gradient, the sum over the batch, is
    taken as sums of halves (bf16_matmul.reduce_halves), element-wise adds that XLA's CPU backend
    fuses into its loops. Autodiff's reduce over the batch went to a YNNPACK fusion: 4.3 of ~550
    thread-ms in a bf16 BERT-mini step for the position embeddings' [32, 128, 256] gradient, a
    4 MB read (the step 0.992-0.994 of the time with this; docs/benchmarks.md)."""
    return jnp.broadcast_to(x[None], (batch, *x.shape))


def _broadcast_over_batch_fwd(x, batch):
    return broadcast_over_batch(x, batch), None


def _broadcast_over_batch_bwd(batch, _, g):
    del batch
    return (bf16_matmul.reduce_halves(g, jnp.add, 0)[0],)


broadcast_over_batch.defvjp(_broadcast_over_batch_fwd, _broadcast_over_batch_bwd)


class BertEmbeddings(nn.Module):
    """word + position + token-type embeddings, then LayerNorm and dropout."""

    config: BertConfig

    def setup(self):
        c = self.config
        init = kernel_init(c)
        self.word_embeddings = nn.Embed(c.vocab_size, c.hidden_size, embedding_init=init)
        self.token_type_embeddings = nn.Embed(c.type_vocab_size, c.hidden_size, embedding_init=init)
        if c.position_embedding_type == "learned":
            self.position_embeddings = nn.Embed(
                c.max_position_embeddings, c.hidden_size, embedding_init=init
            )
        self.LayerNorm = layer_norm(c, "LayerNorm")
        self.dropout = dropout_layer(c, c.hidden_dropout_prob)

    def __call__(
        self, input_ids_BxS, segment_ids_BxS, deterministic: bool, position_ids_BxS=None
    ) -> Array:
        c = self.config
        seq_len = input_ids_BxS.shape[1]
        if seq_len > c.max_position_embeddings:
            raise ValueError(
                f"sequence length {seq_len} exceeds max_position_embeddings="
                f"{c.max_position_embeddings}; truncate inputs or use a model with more positions."
            )
        x_BxSxH = self.word_embeddings(input_ids_BxS) + self.token_type_embeddings(segment_ids_BxS)
        if c.position_embedding_type == "learned":
            pos_SxH = self.position_embeddings.embedding[:seq_len]
        else:
            pos_SxH = jnp.asarray(sinusoidal_positions(seq_len, c.hidden_size))
        # Packed rows (data/packing.py) number each sequence's tokens from 0.
        if position_ids_BxS is None:
            pos = broadcast_over_batch(pos_SxH, x_BxSxH.shape[0])
        else:
            pos = pos_SxH[position_ids_BxS]
        x_BxSxH = x_BxSxH + pos
        x_BxSxH = batch_sharded(self.LayerNorm(x_BxSxH))
        return self.dropout(x_BxSxH, deterministic=deterministic)

    def attend(self, x_BxPxH: Array) -> Array:
        """Logits against the (tied) word embedding table: x @ E^T."""
        if self.config.bf16_matmul:
            return bf16_matmul.matmul_nt(x_BxPxH, self.word_embeddings.embedding)
        table_VxH = self.word_embeddings.embedding.astype(x_BxPxH.dtype)
        return jnp.einsum("bph,vh->bpv", x_BxPxH, table_VxH)


class DenseParams(nn.Module):
    """The kernel [in, out] and bias [out] of a dense layer, as nn.Dense names and initialises
    them, returned instead of applied (to be used fused with others)."""

    config: BertConfig
    features: int

    @nn.compact
    def __call__(self, in_features: int) -> tuple[Array, Array]:
        kernel = self.param("kernel", kernel_init(self.config), (in_features, self.features))
        return kernel, self.param("bias", nn.initializers.zeros, (self.features,))


class SelfAttention(nn.Module):
    """The `attention/self` scope: query, key, value projections and scaled dot-product."""

    config: BertConfig

    @nn.compact
    def __call__(self, x_BxSxH, mask, deterministic: bool) -> Array:
        # `mask`: the attention bias [B, 1, 1, S] ([B, 1, S, S] when causal or packed), or each
        # row's length [B] (attention 'dot' and 'cudnn' on unpacked rows; see BertModel).
        c = self.config
        n, d = c.num_attention_heads, c.hidden_size // c.num_attention_heads
        b, s, h = x_BxSxH.shape
        if c.fused_qkv:
            names = ("query", "key", "value")
            kernels, biases = zip(*(DenseParams(c, h, name=k)(h) for k in names), strict=True)
            dt = c.compute_dtype
            w_Hx3H = jnp.concatenate(kernels, axis=1)
            if c.bf16_matmul:
                qkv_BxSx3H = bf16_matmul.matmul(x_BxSxH, w_Hx3H)
            else:
                qkv_BxSx3H = x_BxSxH.astype(dt) @ w_Hx3H.astype(dt)
            qkv_BxSx3H = qkv_BxSx3H + jnp.concatenate(biases).astype(dt)
            q_BxSxNxD, k_BxSxNxD, v_BxSxNxD = (
                t.reshape(b, s, n, d) for t in jnp.split(qkv_BxSx3H, 3, axis=-1)
            )
        else:

            def heads(name):
                return dense(c, c.hidden_size, name)(x_BxSxH).reshape(b, s, n, d)

            q_BxSxNxD, k_BxSxNxD, v_BxSxNxD = heads("query"), heads("key"), heads("value")
        # With attention_chunks > 1, one independent computation per slice of the batch.
        return over_batch_slices(
            functools.partial(_attend, c, deterministic=deterministic),
            c.attention_chunks,
            q_BxSxNxD,
            k_BxSxNxD,
            v_BxSxNxD,
            mask,
        )


def _attend(c: BertConfig, q_BxSxNxD, k_BxSxNxD, v_BxSxNxD, mask, *, deterministic) -> Array:
    """softmax(q k^T / sqrt(D) + bias) v, with dropout on the probabilities: [B, S, N*D]. Called
    from SelfAttention's compact method, so its dropout layer is a submodule of SelfAttention."""
    b, s, n, d = q_BxSxNxD.shape
    if c.attention != "einsum":
        # `mask`: each row's length [B], or (packed rows) a bias in the compute dtype [B, 1, S, S]
        # that already holds the causal mask (see BertModel).
        lengths = mask.ndim == 1
        ctx_BxSxNxD = jax.nn.dot_product_attention(
            q_BxSxNxD, k_BxSxNxD, v_BxSxNxD,
            bias=None if lengths else mask,
            key_value_seq_lengths=mask if lengths else None,
            is_causal=c.causal and lengths,
            implementation="cudnn" if c.attention == "cudnn" else "xla",
        )  # fmt: skip
        return ctx_BxSxNxD.reshape(b, s, n * d)
    if c.bf16_attention:
        # Heads-major [B*N, S, D]: the reshape makes XLA materialise the transpose row-major
        # (see bf16_matmul.batched_matmul; on a transposed view the dots ran in float32,
        # 1.5-2.5x slower here).
        q_GxSxD, k_GxSxD, v_GxSxD = (
            t.transpose(0, 2, 1, 3).reshape(b * n, s, d) for t in (q_BxSxNxD, k_BxSxNxD, v_BxSxNxD)
        )
        scores_GxSxS = bf16_matmul.batched_matmul_nt(q_GxSxD, k_GxSxD) / np.sqrt(d)
        scores_BxNxSxS = scores_GxSxS.reshape(b, n, s, s)
    else:
        scores_BxNxSxS = jnp.einsum("bqnd,bknd->bnqk", q_BxSxNxD, k_BxSxNxD) / np.sqrt(d)
    scores_BxNxSxS = scores_BxNxSxS.astype(jnp.float32) + mask
    softmax = (
        bf16_matmul.softmax if c.bf16_attention else functools.partial(jax.nn.softmax, axis=-1)
    )
    probs_BxNxSxS = softmax(scores_BxNxSxS)
    probs_BxNxSxS = dropout_layer(c, c.attention_probs_dropout_prob)(
        probs_BxNxSxS, deterministic=deterministic
    ).astype(c.compute_dtype)
    if c.bf16_attention:
        ctx_GxSxD = bf16_matmul.batched_matmul(probs_BxNxSxS.reshape(b * n, s, s), v_GxSxD)
        return ctx_GxSxD.reshape(b, n, s, d).transpose(0, 2, 1, 3).reshape(b, s, n * d)
    ctx_BxSxNxD = jnp.einsum("bnqk,bknd->bqnd", probs_BxNxSxS, v_BxSxNxD)
    return ctx_BxSxNxD.reshape(b, s, n * d)


class DenseResidualNorm(nn.Module):
    """dense -> dropout -> residual add -> LayerNorm: the `output` scopes of BERT (post-LN)."""

    config: BertConfig
    features: int

    @nn.compact
    def __call__(self, x, residual, deterministic: bool) -> Array:
        c = self.config
        y = dense(c, self.features, "dense")(x)
        y = dropout_layer(c, c.hidden_dropout_prob)(y, deterministic=deterministic)
        return batch_sharded(layer_norm(c, "LayerNorm")(y + residual))


class Attention(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x_BxSxH, mask, deterministic: bool) -> Array:
        ctx_BxSxH = SelfAttention(self.config, name="self")(x_BxSxH, mask, deterministic)
        return DenseResidualNorm(self.config, self.config.hidden_size, name="output")(
            ctx_BxSxH, x_BxSxH, deterministic
        )


class Intermediate(nn.Module):
    """Keeps the `intermediate/dense` scope of the original checkpoint."""

    config: BertConfig

    @nn.compact
    def __call__(self, x):
        h = dense(self.config, self.config.intermediate_size, "dense")(x)
        return gelu(h)


class TransformerLayer(nn.Module):
    """One transformer layer with the original scopes: attention, intermediate, output."""

    config: BertConfig

    @nn.compact
    def __call__(self, x_BxSxH, mask, deterministic: bool) -> Array:
        c = self.config
        a_BxSxH = Attention(c, name="attention")(x_BxSxH, mask, deterministic)
        h_BxSxF = Intermediate(c, name="intermediate")(a_BxSxH)
        return DenseResidualNorm(c, c.hidden_size, name="output")(h_BxSxF, a_BxSxH, deterministic)


class _ScanStep(nn.Module):
    """One layer as an nn.scan body: (carry, mask) -> (carry, this layer's output)."""

    config: BertConfig
    deterministic: bool

    @nn.compact
    def __call__(self, x_BxSxH, mask):
        x_BxSxH = _layer_class(self.config)(self.config, name="layer")(
            x_BxSxH, mask, self.deterministic
        )
        return x_BxSxH, x_BxSxH


def _layer_class(config: BertConfig):
    policy = REMAT_POLICIES[config.remat]
    if policy is None:
        return TransformerLayer
    # `deterministic` (argument 3, counting self) is a Python bool: static.
    return nn.remat(TransformerLayer, policy=policy, static_argnums=(3,))


class Encoder(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x_BxSxH, mask, deterministic: bool) -> list[Array]:
        c = self.config
        if c.scan_layers:
            scanned = nn.scan(
                _ScanStep,
                variable_axes={"params": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=nn.broadcast,
                length=c.num_hidden_layers,
            )(c, deterministic, name="layers")

            def layers_out(x_BxSxH, mask):
                _, out_LxBxSxH = scanned(x_BxSxH, mask)
                return list(out_LxBxSxH)

        else:
            layers = [_layer_class(c)(c, name=f"layer_{i}") for i in range(c.num_hidden_layers)]

            def layers_out(x_BxSxH, mask):
                out = []
                for layer in layers:
                    x_BxSxH = layer(x_BxSxH, mask, deterministic)
                    out.append(x_BxSxH)
                return out

        def run(x_BxSxH, mask):
            # Every layer takes and returns float32 (its LayerNorm's output; a bfloat16 embedding
            # output converts exactly), so its residual adds are float32 and a scan's carry
            # keeps one type. hidden_states[0] stays the embedding output as given.
            return [x_BxSxH, *layers_out(x_BxSxH.astype(jnp.float32), mask)]

        # With encoder_chunks > 1, one independent pass per slice of the batch.
        return over_batch_slices(run, c.encoder_chunks, x_BxSxH, mask)


def stack_layers(params: dict, num_layers: int | None = None) -> dict:
    """Per-layer encoder parameters (encoder/layer_i/..., the checkpoint layout) -> the layout
    of a scan_layers model (encoder/layers/layer/... with a leading layer axis). Works on any
    dict holding an "encoder" entry at any depth; num_layers defaults to all layer_i present."""
    if "encoder" in params and "layer_0" in params["encoder"]:
        if num_layers is None:
            num_layers = sum(k.startswith("layer_") for k in params["encoder"])
        layers = [params["encoder"][f"layer_{i}"] for i in range(num_layers)]
        stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *layers)
        return {**params, "encoder": {"layers": {"layer": stacked}}}
    return {k: stack_layers(v, num_layers) if isinstance(v, dict) else v for k, v in params.items()}


def has_stacked_layers(params: dict) -> bool:
    """Whether a parameter tree (at any depth) holds scan_layers' stacked encoder layers."""
    if "encoder" in params:
        return "layers" in params["encoder"]
    return any(has_stacked_layers(v) for v in params.values() if isinstance(v, dict))


def unstack_layers(params: dict) -> dict:
    """The inverse of stack_layers (a no-op on per-layer parameters)."""
    if "encoder" in params and "layers" in params["encoder"]:
        stacked = params["encoder"]["layers"]["layer"]
        n = len(jax.tree_util.tree_leaves(stacked)[0])
        return {**params, "encoder": {
            f"layer_{i}": jax.tree_util.tree_map(lambda x, i=i: x[i], stacked) for i in range(n)
        }}  # fmt: skip
    return {k: unstack_layers(v) if isinstance(v, dict) else v for k, v in params.items()}


def check_attention_backend(attention: str) -> None:
    """attention='cudnn' runs on a GPU only (the training loops check their config with this
    before they write or read anything; the model checks again when traced)."""
    if attention == "cudnn" and jax.default_backend() != "gpu":
        raise ValueError(
            f"attention='cudnn' runs on a GPU (this is {jax.default_backend()!r}); "
            "attention='dot' computes the same function here."
        )


def attention_bias(
    input_mask_BxS: Array, causal: bool = False, dtype=jnp.float32, packed: bool = False
) -> Array:
    """0 where a key may be attended to, a large negative number where it is padding (or, for a
    causal model, in the future of the query): [B, 1, 1, S], or [B, 1, S, S] when causal or
    `packed` (input_mask then numbers the sequences of a row 1, 2, ..., padding 0, and a token
    sees only the tokens of its own sequence).

    Added to the attention scores before the softmax, so padded keys get exactly zero weight
    (exp(finfo.min) underflows to 0) and real positions never see padding. The number is the
    minimum of `dtype`, the dtype of the scores it is added to: float32's would be -inf in
    bfloat16, and a row of all padding would then be NaN.
    """
    big_neg = jnp.finfo(dtype).min
    allowed = input_mask_BxS[:, None, None, :] > 0
    if packed:
        # Block-diagonal: a token attends only to its own sequence of the row (padding queries,
        # whose outputs are never read, see every real token as in an unpacked row).
        query_BxSx1 = input_mask_BxS[:, None, :, None]
        allowed = allowed & ((query_BxSx1 == input_mask_BxS[:, None, None, :]) | (query_BxSx1 == 0))
    if causal:
        s = input_mask_BxS.shape[1]
        allowed = allowed & jnp.tril(jnp.ones((s, s), bool))[None, None]
    return jnp.where(allowed, 0.0, big_neg).astype(dtype)


class BertModel(nn.Module):
    """The encoder: returns a dict with the last hidden layer, all layers, and the pooled output.

    `hidden_states` has num_hidden_layers + 1 entries: the embedding output, then every layer.
    """

    config: BertConfig

    def setup(self):
        c = self.config
        self.embeddings = BertEmbeddings(c)
        self.encoder = Encoder(c)
        self.pooler = Pooler(c)

    def __call__(
        self,
        input_ids: Array,
        input_mask: Array | None = None,
        segment_ids: Array | None = None,
        deterministic: bool = True,
        *,
        position_ids: Array | None = None,
        pool_positions: Array | None = None,
    ) -> dict[str, Any]:
        """`position_ids` [B, S] marks a packed batch (several sequences per row, see
        data/packing.py): input_mask numbers the sequences, attention stays within each, and
        `pool_positions` [B, K] gives each sequence's [CLS] (pooled_output is then [B, K, H])."""
        if input_mask is None:
            input_mask = jnp.ones_like(input_ids)
        if segment_ids is None:
            segment_ids = jnp.zeros_like(input_ids)
        c = self.config
        packed = position_ids is not None
        if packed and c.causal:
            raise ValueError("packed sequences are for bidirectional models; model.causal=True.")
        check_attention_backend(c.attention)
        x_BxSxH = self.embeddings(input_ids, segment_ids, deterministic, position_ids)
        if c.attention != "einsum" and not packed:
            # The padding as each row's length (it is at the end of the row): no [B, 1, 1, S]
            # bias to read, and cuDNN's kernel skips the padded keys.
            mask = jnp.sum(input_mask > 0, axis=1, dtype=jnp.int32)
            if c.attention == "cudnn":
                # A row with no tokens (a filler row of an evaluation batch) attends to its first
                # position instead: XLA's softmax over no keys is finite, cuDNN's is not
                # guaranteed to be, and a NaN there would reach weighted sums as NaN x 0.
                mask = jnp.maximum(mask, 1)
        else:
            # The einsum attention adds the bias to float32 scores; jax.nn.dot_product_attention
            # to scores in the compute dtype.
            bias_dtype = jnp.float32 if c.attention == "einsum" else c.compute_dtype
            mask = attention_bias(input_mask, c.causal, bias_dtype, packed)
        hidden = self.encoder(x_BxSxH.astype(self.config.compute_dtype), mask, deterministic)
        return {
            "sequence_output": hidden[-1],
            "hidden_states": hidden,
            "pooled_output": self.pooler(hidden[-1], input_mask, pool_positions),
        }


class Pooler(nn.Module):
    """tanh(dense(h[CLS])): the sentence representation used by NSP and classifiers.

    A causal model pools its last real token instead (its [CLS] has seen only itself)."""

    config: BertConfig

    @nn.compact
    def __call__(self, x_BxSxH, input_mask_BxS, positions_BxK=None) -> Array:
        """[B, H]; [B, K, H] at `positions_BxK` (the [CLS] of each sequence of a packed row)."""
        if positions_BxK is not None:
            first_BxH = jnp.take_along_axis(x_BxSxH, positions_BxK[..., None], axis=1)
        elif self.config.causal:
            last_B = jnp.maximum(jnp.sum(input_mask_BxS > 0, axis=1) - 1, 0)
            first_BxH = jnp.take_along_axis(x_BxSxH, last_B[:, None, None], axis=1)[:, 0]
        else:
            first_BxH = x_BxSxH[:, 0]
        return jnp.tanh(dense(self.config, self.config.hidden_size, "dense")(first_BxH))
