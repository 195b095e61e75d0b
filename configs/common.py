"""Shared config pieces: the published BERT size table and the `arg` string parser."""

from __future__ import annotations

import ml_collections

# name -> (layers L, hidden H). Heads = H / 64 and intermediate = 4H, as in the BERT release
# (Turc et al., 2019 for the small ones).
SIZES = {
    "tiny": (2, 128),
    "mini": (4, 256),
    "small": (4, 512),
    "medium": (8, 512),
    "base": (12, 768),
    "large": (24, 1024),
}


def model_config(size: str) -> ml_collections.ConfigDict:
    """The `model` section for a named size; fields are those of `bert_jax.model.BertConfig`."""
    if size not in SIZES:
        raise ValueError(f"size={size!r} is not one of {sorted(SIZES)}.")
    layers, hidden = SIZES[size]
    m = ml_collections.ConfigDict()
    # Named size this section was built from (informational; the numbers below are what count).
    m.size = size
    # WordPiece vocabulary size; 0 means "read it from data.vocab_file" (one token per line).
    m.vocab_size = 0
    # Transformer width, depth and heads (head dim = hidden / heads = 64).
    m.hidden_size = hidden
    m.num_hidden_layers = layers
    m.num_attention_heads = hidden // 64
    # Width of the feed-forward block (4H).
    m.intermediate_size = 4 * hidden
    # Dropout on embeddings, attention outputs and feed-forward outputs; on attention probabilities.
    m.hidden_dropout_prob = 0.1
    m.attention_probs_dropout_prob = 0.1
    # Longest sequence the position table supports.
    m.max_position_embeddings = 512
    # Number of segment (token type) ids: A and B.
    m.type_vocab_size = 2
    # Stddev of the truncated-normal initializer.
    m.initializer_range = 0.02
    # LayerNorm epsilon of the original BERT.
    m.layer_norm_eps = 1e-12
    # "learned" (BERT) or "sinusoidal" positions.
    m.position_embedding_type = "learned"
    # Matmul compute dtype: "float32" or "bfloat16" (params stay float32).
    m.dtype = "float32"
    # Left-to-right (causal) attention and a next-token LM objective instead of masked LM
    # (BERT Table 5, "LTR & No NSP"); the pooler then reads the last token.
    m.causal = False
    # How to compute (speed/memory levers; the results stay the same up to float rounding):
    # one fused query/key/value matmul; "einsum", "dot" (jax.nn.dot_product_attention by XLA)
    # or "cudnn" (the same by cuDNN's flash attention: GPUs, dtype bfloat16), the last two
    # without attention dropout; nn.scan over layers (constant compile time in depth);
    # rematerialisation "none" | "full" | "dots".
    m.fused_qkv = False
    m.attention = "einsum"
    m.scan_layers = False
    m.remat = "none"
    # Dropout's random bits: "threefry" (JAX's default), "rbg" (cheaper on accelerators) or
    # "hash" (a counter hash per element, bert_jax/dropout.py; cheapest on CPU).
    m.dropout_rng = "threefry"
    # Matmul operands rounded to bfloat16, float32 accumulation and activations (a TPU's default
    # precision; 4-6x faster matmuls on CPUs with AMX / AVX512-BF16, docs/benchmarks.md).
    m.bf16_matmul = False
    # The same for the attention's scores and context matmuls (heads-major layout).
    m.bf16_attention = False
    # The masked-LM cross-entropy with its backward written out (bert_jax/vocab_xent.py):
    # the same loss and gradients, one pass over the [positions, vocabulary] logits.
    m.fused_mlm_loss = True
    # Independent slices of the batch for the encoder, and of each slice for the attention
    # core: XLA's CPU runtime overlaps them on its threads (bf16 BERT-mini on 2 cores: 2 and 4,
    # +17%); keep 1 and 1 on accelerators.
    m.encoder_chunks = 1
    m.attention_chunks = 1
    return m


def max_predictions(seq: int) -> int:
    """Masked positions per sequence of the original recipe: 20 at 128, 80 at 512, else 15%."""
    return {128: 20, 512: 80}.get(seq, round(0.15 * seq))


_BOOLEANS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def parse_arg(arg: str | None, **defaults):
    """Parses "size=base,seq=128,demo" into a ConfigDict, typed after `defaults`.

    A bare word is a boolean flag set to True; unknown keys are an error (a typo must not pass).
    """
    out = ml_collections.ConfigDict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        if key not in defaults:
            raise ValueError(f"unknown config arg {key!r} in {arg!r}; known: {sorted(defaults)}")
        default = defaults[key]
        if not _:
            value = True
        elif isinstance(default, bool):
            if value.lower() not in _BOOLEANS:
                raise ValueError(f"config arg {key}={value!r} in {arg!r}; use true or false.")
            value = _BOOLEANS[value.lower()]
        else:
            value = type(default)(value)
        out[key] = value
    return out
