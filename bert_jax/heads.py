"""Task heads on top of `BertModel`, with the original checkpoint scopes (`cls/...`)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.model import BertConfig, BertModel, dense, kernel_init, layer_norm

Array = jax.Array


def gather_positions(x_BxSxH: Array, positions_BxP: Array) -> Array:
    """x[b, positions[b, p]] for every b, p: the hidden states at the masked positions."""
    return jnp.take_along_axis(x_BxSxH, positions_BxP[:, :, None], axis=1)


class _Transform(nn.Module):
    """`cls/predictions/transform`: dense, exact GELU, LayerNorm."""

    config: BertConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        x = nn.gelu(dense(c, c.hidden_size, "dense")(x), approximate=False)
        return layer_norm(c, "LayerNorm")(x).astype(c.compute_dtype)


class Predictions(nn.Module):
    """`cls/predictions`: transform, then logits = h @ word_embeddings^T + output_bias."""

    config: BertConfig

    @nn.compact
    def __call__(self, x_BxPxH: Array, embeddings) -> Array:
        h_BxPxH = _Transform(self.config, name="transform")(x_BxPxH)
        bias_V = self.param("output_bias", nn.initializers.zeros, (self.config.vocab_size,))
        logits_BxPxV = embeddings.attend(h_BxPxH)
        return logits_BxPxV.astype(jnp.float32) + bias_V


class SeqRelationship(nn.Module):
    """`cls/seq_relationship`: the NSP classifier; weights stored [2, H] as in the original."""

    config: BertConfig

    @nn.compact
    def __call__(self, pooled_BxH: Array) -> Array:
        c = self.config
        w_2xH = self.param("output_weights", kernel_init(c), (2, c.hidden_size))
        b_2 = self.param("output_bias", nn.initializers.zeros, (2,))
        return (
            jnp.einsum("bh,kh->bk", pooled_BxH, w_2xH.astype(pooled_BxH.dtype)).astype(jnp.float32)
            + b_2
        )


class PretrainingHeads(nn.Module):
    """The `cls` scope: masked-LM predictions and next-sentence prediction."""

    config: BertConfig

    def setup(self):
        self.predictions = Predictions(self.config)
        self.seq_relationship = SeqRelationship(self.config)


class BertForPreTraining(nn.Module):
    """BERT + masked-LM head (scored only at `masked_lm_positions`) + NSP head.

    Returns float32 logits: `mlm_logits` [B, P, V] and `nsp_logits` [B, 2]. With
    `masked_lm_positions=None` the MLM head scores every position ([B, S, V]).
    """

    config: BertConfig

    def setup(self):
        self.bert = BertModel(self.config)
        self.cls = PretrainingHeads(self.config)

    def __call__(
        self,
        input_ids: Array,
        input_mask: Array | None = None,
        segment_ids: Array | None = None,
        masked_lm_positions: Array | None = None,
        deterministic: bool = True,
    ) -> dict[str, Array]:
        out = self.bert(input_ids, input_mask, segment_ids, deterministic=deterministic)
        seq_BxSxH = out["sequence_output"]
        if masked_lm_positions is not None:
            seq_BxSxH = gather_positions(seq_BxSxH, masked_lm_positions)
        return {
            "mlm_logits": self.cls.predictions(seq_BxSxH, self.bert.embeddings),
            "nsp_logits": self.cls.seq_relationship(out["pooled_output"]),
        }


def _classify(config: BertConfig, x: Array, num_outputs: int, deterministic: bool) -> Array:
    """Dropout, then the dense `classifier` layer (called inside a compact method, whose scope
    it joins: the parameters are `classifier/kernel` and `classifier/bias`, as HF names them)."""
    x = nn.Dropout(config.hidden_dropout_prob)(x, deterministic=deterministic)
    return dense(config, num_outputs, "classifier")(x).astype(jnp.float32)


class BertForSequenceClassification(nn.Module):
    """Pooled [CLS] output -> `num_labels` logits (1 for regression, e.g. STS-B)."""

    config: BertConfig
    num_labels: int

    @nn.compact
    def __call__(self, input_ids, input_mask=None, segment_ids=None, deterministic=True):
        out = BertModel(self.config, name="bert")(input_ids, input_mask, segment_ids, deterministic)
        logits = _classify(self.config, out["pooled_output"], self.num_labels, deterministic)
        return {"logits": logits}


class BertForTokenClassification(nn.Module):
    """Every position's last hidden state -> `num_labels` logits (NER tags)."""

    config: BertConfig
    num_labels: int

    @nn.compact
    def __call__(self, input_ids, input_mask=None, segment_ids=None, deterministic=True):
        out = BertModel(self.config, name="bert")(input_ids, input_mask, segment_ids, deterministic)
        logits = _classify(self.config, out["sequence_output"], self.num_labels, deterministic)
        return {"logits": logits}


class BertForQuestionAnswering(nn.Module):
    """Every position -> (start, end) span logits (SQuAD). No dropout before `qa_outputs`."""

    config: BertConfig

    @nn.compact
    def __call__(self, input_ids, input_mask=None, segment_ids=None, deterministic=True):
        out = BertModel(self.config, name="bert")(input_ids, input_mask, segment_ids, deterministic)
        logits_BxSx2 = dense(self.config, 2, "qa_outputs")(out["sequence_output"])
        logits_BxSx2 = logits_BxSx2.astype(jnp.float32)
        return {"start_logits": logits_BxSx2[..., 0], "end_logits": logits_BxSx2[..., 1]}


class BertForMultipleChoice(nn.Module):
    """Inputs [B, C, S] (C choices) -> one score per choice from the pooled output: [B, C]."""

    config: BertConfig

    @nn.compact
    def __call__(self, input_ids, input_mask=None, segment_ids=None, deterministic=True):
        b, c, s = input_ids.shape

        def flat(x):
            return None if x is None else x.reshape(b * c, s)

        out = BertModel(self.config, name="bert")(
            flat(input_ids), flat(input_mask), flat(segment_ids), deterministic
        )
        scores = _classify(self.config, out["pooled_output"], 1, deterministic)
        return {"logits": scores.reshape(b, c)}
