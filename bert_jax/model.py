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
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


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


def layer_norm(config: BertConfig, name: str) -> nn.LayerNorm:
    # Statistics in float32 even under bfloat16 compute (the variance of bf16 activations is noisy).
    return nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=jnp.float32, name=name)


def dense(config: BertConfig, features: int, name: str) -> nn.Dense:
    return nn.Dense(
        features, kernel_init=kernel_init(config), dtype=config.compute_dtype, name=name
    )


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
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def __call__(self, input_ids_BxS, segment_ids_BxS, deterministic: bool) -> Array:
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
        x_BxSxH = x_BxSxH + pos_SxH[None]
        x_BxSxH = self.LayerNorm(x_BxSxH)
        return self.dropout(x_BxSxH, deterministic=deterministic)

    def attend(self, x_BxPxH: Array) -> Array:
        """Logits against the (tied) word embedding table: x @ E^T."""
        table_VxH = self.word_embeddings.embedding.astype(x_BxPxH.dtype)
        return jnp.einsum("bph,vh->bpv", x_BxPxH, table_VxH)


class SelfAttention(nn.Module):
    """The `attention/self` scope: query, key, value projections and scaled dot-product."""

    config: BertConfig

    @nn.compact
    def __call__(self, x_BxSxH, bias_Bx1x1xS, deterministic: bool) -> Array:
        # (bias_Bx1xSxS for a causal model: the broadcast below is the same.)
        c = self.config
        n, d = c.num_attention_heads, c.hidden_size // c.num_attention_heads
        b, s, _ = x_BxSxH.shape

        def heads(name):
            return dense(c, c.hidden_size, name)(x_BxSxH).reshape(b, s, n, d)

        q_BxSxNxD, k_BxSxNxD, v_BxSxNxD = heads("query"), heads("key"), heads("value")
        scores_BxNxSxS = jnp.einsum("bqnd,bknd->bnqk", q_BxSxNxD, k_BxSxNxD) / np.sqrt(d)
        scores_BxNxSxS = scores_BxNxSxS.astype(jnp.float32) + bias_Bx1x1xS
        probs_BxNxSxS = jax.nn.softmax(scores_BxNxSxS, axis=-1)
        probs_BxNxSxS = nn.Dropout(c.attention_probs_dropout_prob)(
            probs_BxNxSxS, deterministic=deterministic
        ).astype(c.compute_dtype)
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
        y = nn.Dropout(c.hidden_dropout_prob)(y, deterministic=deterministic)
        return layer_norm(c, "LayerNorm")(y + residual)


class Attention(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x_BxSxH, bias_Bx1x1xS, deterministic: bool) -> Array:
        ctx_BxSxH = SelfAttention(self.config, name="self")(x_BxSxH, bias_Bx1x1xS, deterministic)
        return DenseResidualNorm(self.config, self.config.hidden_size, name="output")(
            ctx_BxSxH, x_BxSxH, deterministic
        )


class Intermediate(nn.Module):
    """Keeps the `intermediate/dense` scope of the original checkpoint."""

    config: BertConfig

    @nn.compact
    def __call__(self, x):
        h = dense(self.config, self.config.intermediate_size, "dense")(x)
        return nn.gelu(h, approximate=False)


class TransformerLayer(nn.Module):
    """One transformer layer with the original scopes: attention, intermediate, output."""

    config: BertConfig

    @nn.compact
    def __call__(self, x_BxSxH, bias_Bx1x1xS, deterministic: bool) -> Array:
        c = self.config
        a_BxSxH = Attention(c, name="attention")(x_BxSxH, bias_Bx1x1xS, deterministic)
        h_BxSxF = Intermediate(c, name="intermediate")(a_BxSxH)
        return DenseResidualNorm(c, c.hidden_size, name="output")(h_BxSxF, a_BxSxH, deterministic)


class Encoder(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x_BxSxH, bias_Bx1x1xS, deterministic: bool) -> list[Array]:
        hidden = [x_BxSxH]
        for i in range(self.config.num_hidden_layers):
            x_BxSxH = TransformerLayer(self.config, name=f"layer_{i}")(
                x_BxSxH, bias_Bx1x1xS, deterministic
            )
            hidden.append(x_BxSxH)
        return hidden


def attention_bias(input_mask_BxS: Array, causal: bool = False) -> Array:
    """0 where a key may be attended to, a large negative number where it is padding (or, for a
    causal model, in the future of the query): [B, 1, 1, S], or [B, 1, S, S] when causal.

    Added to the attention scores before the softmax, so padded keys get exactly zero weight in
    float32 (exp(finfo.min) underflows to 0) and real positions never see padding.
    """
    big_neg = jnp.finfo(jnp.float32).min
    allowed = input_mask_BxS[:, None, None, :] > 0
    if causal:
        s = input_mask_BxS.shape[1]
        allowed = allowed & jnp.tril(jnp.ones((s, s), bool))[None, None]
    return jnp.where(allowed, 0.0, big_neg).astype(jnp.float32)


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
    ) -> dict[str, Any]:
        if input_mask is None:
            input_mask = jnp.ones_like(input_ids)
        if segment_ids is None:
            segment_ids = jnp.zeros_like(input_ids)
        x_BxSxH = self.embeddings(input_ids, segment_ids, deterministic)
        bias = attention_bias(input_mask, self.config.causal)
        hidden = self.encoder(x_BxSxH.astype(self.config.compute_dtype), bias, deterministic)
        return {
            "sequence_output": hidden[-1],
            "hidden_states": hidden,
            "pooled_output": self.pooler(hidden[-1], input_mask),
        }


class Pooler(nn.Module):
    """tanh(dense(h[CLS])): the sentence representation used by NSP and classifiers.

    A causal model pools its last real token instead (its [CLS] has seen only itself)."""

    config: BertConfig

    @nn.compact
    def __call__(self, x_BxSxH, input_mask_BxS) -> Array:
        if self.config.causal:
            last_B = jnp.maximum(jnp.sum(input_mask_BxS > 0, axis=1) - 1, 0)
            first_BxH = jnp.take_along_axis(x_BxSxH, last_B[:, None, None], axis=1)[:, 0]
        else:
            first_BxH = x_BxSxH[:, 0]
        return jnp.tanh(dense(self.config, self.config.hidden_size, "dense")(first_BxH))
