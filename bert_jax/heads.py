"""Task heads on top of `BertModel`, with the original checkpoint scopes (`cls/...`)."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax import vocab_xent
from bert_jax.model import (
    BertConfig,
    BertModel,
    dense,
    dropout_layer,
    gelu,
    kernel_init,
    layer_norm,
)

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
        x = gelu(dense(c, c.hidden_size, "dense")(x))
        return layer_norm(c, "LayerNorm")(x).astype(c.compute_dtype)


class Predictions(nn.Module):
    """`cls/predictions`: transform, then logits = h @ word_embeddings^T + output_bias.

    With `labels_BxP`, the cross-entropy instead: (-log softmax(logits)[label], hit) per
    position, through vocab_xent.py (the logits' gradient is never materialised)."""

    config: BertConfig

    @nn.compact
    def __call__(self, x_BxPxH: Array, embeddings, labels_BxP: Array | None = None):
        c = self.config
        h_BxPxH = _Transform(c, name="transform")(x_BxPxH)
        bias_V = self.param("output_bias", nn.initializers.zeros, (c.vocab_size,))
        if labels_BxP is not None:
            b, p, h = h_BxPxH.shape
            matmul_dtype = jnp.bfloat16 if c.bf16_matmul else c.compute_dtype
            table_VxH = embeddings.word_embeddings.embedding
            nll_P, hit_P = vocab_xent.vocab_cross_entropy(
                h_BxPxH.reshape(b * p, h), table_VxH, bias_V, labels_BxP.reshape(-1), matmul_dtype
            )
            return nll_P.reshape(b, p), hit_P.reshape(b, p)
        logits_BxPxV = embeddings.attend(h_BxPxH)
        return logits_BxPxV.astype(jnp.float32) + bias_V


class SeqRelationship(nn.Module):
    """`cls/seq_relationship`: the NSP classifier; weights stored [2, H] as in the original."""

    config: BertConfig

    @nn.compact
    def __call__(self, pooled_BxH: Array) -> Array:  # (or [B, K, H] -> [B, K, 2])
        c = self.config
        w_2xH = self.param("output_weights", kernel_init(c), (2, c.hidden_size))
        b_2 = self.param("output_bias", nn.initializers.zeros, (2,))
        return (
            jnp.einsum("...h,kh->...k", pooled_BxH, w_2xH.astype(pooled_BxH.dtype)).astype(
                jnp.float32
            )
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
    `masked_lm_positions=None` the MLM head scores every position ([B, S, V]). Given the
    answers `masked_lm_ids` [B, P] too, and with config.fused_mlm_loss, it returns `mlm_nll`
    and `mlm_hit` [B, P] in place of `mlm_logits` (Predictions; what train.py scores). A packed
    batch (`position_ids`, `next_sentence_positions` [B, K]; see data/packing.py) gets
    `nsp_logits` [B, K, 2], one per sequence of the row.
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
        *,
        position_ids: Array | None = None,
        next_sentence_positions: Array | None = None,
        masked_lm_ids: Array | None = None,
    ) -> dict[str, Array]:
        out = self.bert(
            input_ids,
            input_mask,
            segment_ids,
            deterministic=deterministic,
            position_ids=position_ids,
            pool_positions=next_sentence_positions,
        )
        seq_BxSxH = out["sequence_output"]
        if masked_lm_positions is not None:
            seq_BxSxH = gather_positions(seq_BxSxH, masked_lm_positions)
        outputs = {"nsp_logits": self.cls.seq_relationship(out["pooled_output"])}
        if masked_lm_ids is not None and self.config.fused_mlm_loss:
            outputs["mlm_nll"], outputs["mlm_hit"] = self.cls.predictions(
                seq_BxSxH, self.bert.embeddings, masked_lm_ids
            )
        else:
            outputs["mlm_logits"] = self.cls.predictions(seq_BxSxH, self.bert.embeddings)
        return outputs


# Which encoder outputs a head reads (BERT Table 7): every hidden state is [B, S, H];
# hidden_states[0] is the embedding output, hidden_states[-1] the last layer.
LAYERS = ("last", "second_to_last", "embeddings", "sum_last_four", "concat_last_four", "sum_all")


@dataclasses.dataclass(frozen=True)
class HeadInput:
    """What sits between the encoder and a head's output layer.

    The default (the last layer, trained encoder, no BiLSTM) is BERT fine-tuning. Table 7's
    feature-based NER freezes the encoder (`freeze_encoder`: no gradient, no dropout, no update)
    and reads `layers` through a `bilstm_layers`-layer BiLSTM; Table 5 puts a BiLSTM on top of a
    fine-tuned left-to-right model. Any non-default input bypasses the pre-trained pooler: a
    sentence is the mean of its features over the real tokens (`pool="mean"`), or its features at
    [CLS] (the last token of a causal model), or with a BiLSTM its forward state at the last
    token and backward state at the first.
    """

    layers: str = "last"
    freeze_encoder: bool = False
    bilstm_layers: int = 0
    bilstm_size: int = 0  # units per direction; 0: the encoder's hidden size
    # The sentence vector: "cls" (the pooler on [CLS], as BERT) or "mean" (of the features over
    # the real tokens; no pooler).
    pool: str = "cls"

    def __post_init__(self):
        if self.layers not in LAYERS:
            raise ValueError(f"head.layers={self.layers!r}; use one of {LAYERS}.")
        if self.pool not in ("cls", "mean"):
            raise ValueError(f"head.pool={self.pool!r}; use 'cls' or 'mean'.")
        if self.bilstm_layers < 0 or self.bilstm_size < 0:
            raise ValueError(
                f"head.bilstm_layers={self.bilstm_layers}, head.bilstm_size={self.bilstm_size}: "
                "both must be >= 0."
            )

    @property
    def is_default(self) -> bool:
        return self == HeadInput()


class ScalarMix(nn.Module):
    """gamma * sum_k softmax(w)_k h_k: a learned weighted sum of layers (ELMo; BERT Table 7)."""

    @nn.compact
    def __call__(self, layers: list[Array]) -> Array:
        w = jax.nn.softmax(self.param("weights", nn.initializers.zeros, (len(layers),)))
        gamma = self.param("gamma", nn.initializers.ones, ())
        return gamma * sum(w[k] * h.astype(jnp.float32) for k, h in enumerate(layers))


class BiLSTM(nn.Module):
    """One bidirectional LSTM layer over [B, S, D] -> [B, S, 2U]; the backward pass starts at
    each sequence's last real token (padding is never read)."""

    units: int

    @nn.compact
    def __call__(self, x_BxSxD: Array, lengths_B: Array) -> Array:
        def rnn(name):
            # An unbound cell (parent=None) is adopted by its RNN: forward/cell/...
            return nn.RNN(nn.OptimizedLSTMCell(self.units, parent=None), name=name)

        return nn.Bidirectional(rnn("forward"), rnn("backward"))(x_BxSxD, seq_lengths=lengths_B)


class HeadFeatures(nn.Module):
    """Encoder outputs -> per-position features [B, S, F] and a sentence vector [B, F]."""

    config: BertConfig
    spec: HeadInput

    @nn.compact
    def __call__(self, out: dict, input_mask: Array, deterministic: bool):
        c, spec, hidden = self.config, self.spec, out["hidden_states"]
        if spec.is_default:
            return out["sequence_output"], out["pooled_output"]
        if spec.freeze_encoder:  # before the layer mix: its weights learn, the encoder does not
            hidden = [jax.lax.stop_gradient(h) for h in hidden]
        x = {
            "last": lambda: hidden[-1],
            "second_to_last": lambda: hidden[-2],
            "embeddings": lambda: hidden[0],
            "sum_last_four": lambda: ScalarMix(name="scalar_mix")(hidden[-4:]),
            "concat_last_four": lambda: jnp.concatenate(hidden[-4:], axis=-1),
            "sum_all": lambda: ScalarMix(name="scalar_mix")(hidden[1:]),
        }[spec.layers]()
        lengths_B = jnp.sum(input_mask > 0, axis=1)
        last_B = jnp.maximum(lengths_B - 1, 0)
        if not spec.bilstm_layers and spec.pool == "cls":
            # The token a sentence vector is read from: [CLS], or the last one of a causal model.
            at_B = last_B if c.causal else jnp.zeros_like(last_B)
            return x, jnp.take_along_axis(x, at_B[:, None, None], axis=1)[:, 0]
        units = spec.bilstm_size or c.hidden_size
        for i in range(spec.bilstm_layers):
            x = dropout_layer(c, c.hidden_dropout_prob)(x, deterministic=deterministic)
            x = BiLSTM(units, name=f"bilstm_{i}")(x.astype(jnp.float32), lengths_B)
        if spec.pool == "mean":
            real_BxSx1 = (input_mask > 0)[..., None].astype(x.dtype)
            mean_BxF = jnp.sum(x * real_BxSx1, axis=1) / jnp.maximum(lengths_B, 1)[:, None]
            return x, mean_BxF
        # Sentence vector: the forward pass at the last token, the backward pass at the first.
        fwd_BxU = jnp.take_along_axis(x[..., :units], last_B[:, None, None], axis=1)[:, 0]
        return x, jnp.concatenate([fwd_BxU, x[:, 0, units:]], axis=-1)


def _encode(module: nn.Module, input_ids, input_mask, segment_ids, deterministic: bool):
    """BertModel (scope `bert`) then the head's input features: (per position, sentence)."""
    spec = module.head_input
    if input_mask is None:
        input_mask = jnp.ones_like(input_ids)
    out = BertModel(module.config, name="bert")(
        input_ids, input_mask, segment_ids, deterministic or spec.freeze_encoder
    )
    return HeadFeatures(module.config, spec, name="head_input")(out, input_mask, deterministic)


def _classify(config: BertConfig, x: Array, num_outputs: int, deterministic: bool) -> Array:
    """Dropout, then the dense `classifier` layer (called inside a compact method, whose scope
    it joins: the parameters are `classifier/kernel` and `classifier/bias`, as HF names them)."""
    x = dropout_layer(config, config.hidden_dropout_prob)(x, deterministic=deterministic)
    return dense(config, num_outputs, "classifier")(x).astype(jnp.float32)


class BertForSequenceClassification(nn.Module):
    """Pooled [CLS] output -> `num_labels` logits (1 for regression, e.g. STS-B)."""

    config: BertConfig
    num_labels: int
    head_input: HeadInput = HeadInput()

    @nn.compact
    def __call__(self, input_ids, input_mask=None, segment_ids=None, deterministic=True):
        _, pooled = _encode(self, input_ids, input_mask, segment_ids, deterministic)
        return {"logits": _classify(self.config, pooled, self.num_labels, deterministic)}


class BertForTokenClassification(nn.Module):
    """Every position's last hidden state -> `num_labels` logits (NER tags)."""

    config: BertConfig
    num_labels: int
    head_input: HeadInput = HeadInput()

    @nn.compact
    def __call__(self, input_ids, input_mask=None, segment_ids=None, deterministic=True):
        x, _ = _encode(self, input_ids, input_mask, segment_ids, deterministic)
        return {"logits": _classify(self.config, x, self.num_labels, deterministic)}


class BertForQuestionAnswering(nn.Module):
    """Every position -> (start, end) span logits (SQuAD). No dropout before `qa_outputs`."""

    config: BertConfig
    head_input: HeadInput = HeadInput()

    @nn.compact
    def __call__(self, input_ids, input_mask=None, segment_ids=None, deterministic=True):
        x, _ = _encode(self, input_ids, input_mask, segment_ids, deterministic)
        logits_BxSx2 = dense(self.config, 2, "qa_outputs")(x)
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
