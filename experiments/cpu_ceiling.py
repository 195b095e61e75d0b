r"""How fast can a BERT pre-training step be on this machine? Three numbers, one process:

    python experiments/cpu_ceiling.py --size=mini --seq=128 --batch=32

1. `plain`: a deliberately plain Flax BERT step (the ~60 lines below: nn.Dense layers, exact
   GELU, dropout, MLM at the masked positions + NSP, optax.adamw), the kind of probe one writes
   to see what JAX gives without any care;
2. `ours`: bert-jax's pre-training step (experiments/benchmark.py's `our_step`) on the same batches;
3. `matmul_bound`: every matmul of the step (forward and both gradients of each dense layer, the
   attention scores and context, the vocabulary projection at the masked positions) timed alone
   with the step's own shapes and summed. No step that does these matmuls with XLA's CPU dots
   can be faster, so `flops / matmul_bound / peak` is the highest MFU reachable here.

MFU uses DESIGN.md's FLOP formula and the float32 matmul peak measured in the same run, as
experiments/benchmark.py does.
"""

from __future__ import annotations

import functools
import json
import pathlib
import sys
import time

from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "experiments"))

FLAGS = flags.FLAGS


def _define_flags() -> None:
    flags.DEFINE_string("size", "mini", "tiny | mini | small | medium | base | large.")
    flags.DEFINE_integer("seq", 128, "Sequence length.")
    flags.DEFINE_integer("batch", 32, "Sequences per step.")
    flags.DEFINE_integer("steps", 8, "Timed steps per step function (the median is kept).")


def plain_step(config, batches: list, steps: int) -> float:
    """Seconds per step of the plain Flax BERT described in the module docstring."""
    layers, hidden = config.num_hidden_layers, config.hidden_size
    heads, vocab = config.num_attention_heads, config.vocab_size
    import flax.linen as nn  # noqa: PLC0415
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    import optax  # noqa: PLC0415

    class Layer(nn.Module):
        @nn.compact
        def __call__(self, x, bias, train):
            b, s, h = x.shape
            q, k, v = (nn.Dense(h)(x).reshape(b, s, heads, h // heads) for _ in range(3))
            scores = jnp.einsum("bqnd,bknd->bnqk", q, k) / np.sqrt(h // heads) + bias
            probs = nn.Dropout(0.1, deterministic=not train)(jax.nn.softmax(scores))
            ctx = jnp.einsum("bnqk,bknd->bqnd", probs, v).reshape(b, s, h)
            drop = nn.Dropout(0.1, deterministic=not train)
            x = nn.LayerNorm(epsilon=1e-12)(x + drop(nn.Dense(h)(ctx)))
            y = nn.Dense(h)(nn.gelu(nn.Dense(4 * h)(x), approximate=False))
            return nn.LayerNorm(epsilon=1e-12)(x + drop(y))

    class Bert(nn.Module):
        @nn.compact
        def __call__(self, b, train):
            ids = b["input_ids"]
            words = nn.Embed(vocab, hidden)
            x = words(ids) + nn.Embed(2, hidden)(b["segment_ids"])
            x = x + nn.Embed(512, hidden)(jnp.arange(ids.shape[1]))[None]
            x = nn.Dropout(0.1, deterministic=not train)(nn.LayerNorm(epsilon=1e-12)(x))
            bias = jnp.where(b["input_mask"][:, None, None, :] > 0, 0.0, -1e9)
            for _ in range(layers):
                x = Layer()(x, bias, train)
            at = jnp.take_along_axis(x, b["masked_lm_positions"][..., None], axis=1)
            at = nn.LayerNorm(epsilon=1e-12)(nn.gelu(nn.Dense(hidden)(at), approximate=False))
            mlm = words.attend(at) + self.param("mlm_bias", nn.initializers.zeros, (vocab,))
            return mlm, nn.Dense(2)(jnp.tanh(nn.Dense(hidden)(x[:, 0])))

    model, tx = Bert(), optax.adamw(1e-4, eps=1e-6, weight_decay=0.01)
    params = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), batches[0])
    state = (params, tx.init(params), jax.random.key(1))

    @functools.partial(jax.jit, donate_argnums=0)
    def step(state, b):
        params, opt, rng = state
        rng, dropout = jax.random.split(rng)

        def loss_fn(p):
            mlm, nsp = model.apply(p, b, True, rngs={"dropout": dropout})
            w = b["masked_lm_weights"]
            nll = optax.softmax_cross_entropy_with_integer_labels(mlm, b["masked_lm_ids"])
            nsp_nll = optax.softmax_cross_entropy_with_integer_labels(
                nsp, b["next_sentence_labels"]
            )
            return (nll * w).sum() / w.sum() + nsp_nll.mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt = tx.update(grads, opt, params)
        return (optax.apply_updates(params, updates), opt, rng), loss

    import benchmark  # noqa: PLC0415

    return benchmark.Stepper(step, state, batches).measure(steps)["step_s"]


def _time(f, *shapes) -> float:
    """Fastest of 5 runs of jit(f) on random float32 arrays of `shapes`."""
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(0)
    args = [jax.device_put(rng.standard_normal(s, np.float32)) for s in shapes]
    f = jax.jit(f)
    f(*args).block_until_ready()
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        f(*args).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return best


def matmul_bound(config, batch: int, seq: int, predictions: int) -> dict[str, float]:
    """Seconds of each matmul kind of one training step, each timed alone; forward + the two
    gradients (input and weight) per dense layer, likewise for attention and the MLM output."""
    import jax.numpy as jnp  # noqa: PLC0415

    layers, h, heads = config.num_hidden_layers, config.hidden_size, config.num_attention_heads
    m, d, p, vocab = batch * seq, h // heads, batch * predictions, config.vocab_size

    def dense(k, n, rows):  # x[rows,k] @ w[k,n]; dx = dy @ w^T; dw = x^T @ dy
        return (
            _time(lambda x, w: x @ w, (rows, k), (k, n))
            + _time(lambda dy, w: dy @ w.T, (rows, n), (k, n))
            + _time(lambda x, dy: x.T @ dy, (rows, k), (rows, n))
        )

    qkvo = 4 * dense(h, h, m)
    ffn = dense(h, 4 * h, m) + dense(4 * h, h, m)
    bqnd = (batch, seq, heads, d)
    # scores = q k^T and ctx = p v, each with its two gradients (all [B, N, S, S] x [B, S, N, D]).
    scores = _time(lambda q, k: jnp.einsum("bqnd,bknd->bnqk", q, k), bqnd, bqnd)
    context = _time(
        lambda pr, v: jnp.einsum("bnqk,bknd->bqnd", pr, v), (batch, heads, seq, seq), bqnd
    )
    attention = 3 * (scores + context)
    # At the masked positions: transform dense, then logits = x @ E^T and its two gradients.
    head = dense(h, h, p) + (
        _time(lambda x, e: x @ e.T, (p, h), (vocab, h))
        + _time(lambda dl, e: dl @ e, (p, vocab), (vocab, h))
        + _time(lambda dl, x: dl.T @ x, (p, vocab), (p, h))
    )
    parts = {
        "attention_projections": layers * qkvo,
        "feed_forward": layers * ffn,
        "attention_scores_context": layers * attention,
        "mlm_head": head,
    }
    return {k: round(v, 4) for k, v in parts.items()}


def main(argv: list[str]) -> None:
    del argv
    from bert_jax import host_memory  # noqa: PLC0415

    host_memory.keep_freed_memory()  # as bert_jax.main and benchmark.py run (before JAX starts)
    import benchmark  # noqa: PLC0415
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from configs import common  # noqa: PLC0415

    config, _ = benchmark.bert_config(FLAGS.size, 30522, FLAGS.seq)
    preds = common.max_predictions(FLAGS.seq)
    rng = np.random.default_rng(0)
    vocab = config.vocab_size
    batches = [benchmark.random_batch(rng, vocab, FLAGS.seq, FLAGS.batch, preds) for _ in range(2)]

    peak = benchmark.matmul_peak("float32")
    ours = benchmark.our_step(config, batches).measure(FLAGS.steps)["step_s"]
    device_batches = [jax.device_put(b) for b in batches]
    plain = plain_step(config, device_batches, FLAGS.steps)
    parts = matmul_bound(config, FLAGS.batch, FLAGS.seq, preds)
    peak = max(peak, benchmark.matmul_peak("float32"))
    bound = sum(parts.values())
    flops = benchmark.flops_per_sequence(config, FLAGS.seq, preds) * FLAGS.batch
    result = {
        "size": FLAGS.size, "seq": FLAGS.seq, "batch": FLAGS.batch,
        "peak_tflops": round(peak / 1e12, 3), "model_gflop_per_step": round(flops / 1e9, 2),
        "plain_seqs_per_s": round(FLAGS.batch / plain, 2),
        "plain_mfu": round(flops / plain / peak, 4),
        "ours_seqs_per_s": round(FLAGS.batch / ours, 2), "ours_mfu": round(flops / ours / peak, 4),
        "matmul_bound_s": round(bound, 3), "matmul_parts_s": parts,
        "matmul_bound_seqs_per_s": round(FLAGS.batch / bound, 2),
        "matmul_bound_mfu": round(flops / bound / peak, 4),
    }  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    _define_flags()
    app.run(main)
