r"""Training-step speed of bert-jax against Hugging Face's Flax BERT, in the same process.

    python experiments/benchmark.py --size=mini --seq=128 --batch=32
    python experiments/benchmark.py --size=base --seq=128 --batch=32 --dtype=bfloat16   # a GPU
    python experiments/benchmark.py --size=mini --reference_site=/tmp/hf457   # + HF Flax
    python experiments/benchmark.py --size=mini --set=bf16_matmul=true   # a CPU with AMX
    python experiments/benchmark.py --size=mini --set=bf16_matmul=true \
        --compiler_options=xla_cpu_prefer_vector_width=512   # XLA options, for both steps
    python experiments/benchmark.py --size=large --seq=128 --batch=8 --steps=3 \
        --set=scan_layers=true,remat=full
    python experiments/benchmark.py --size=mini --head=span --seq=384   # a fine-tuning step

Times the jitted pre-training step (MLM at the masked positions + NSP, AdamW, dropout on) after
compilation: the median of `--steps` steps. With a transformers 4.x importable (Flax was removed in
5.0; `--reference_site=DIR` adds a directory made by `pip install --target DIR --no-deps
transformers==4.57.3 tokenizers==0.22.1 'huggingface_hub<1.0'`), it times `FlaxBertForPreTraining`
on the same config and batch (MLM over all positions + NSP, optax AdamW, as its examples train),
both steps compiled first and then timed in turns (`--rounds` blocks each, A B A B ...: a drift in
a shared machine's speed reaches both alike). Prints sequences/s, tokens/s, the ratio to Hugging
Face, model FLOPs per step (DESIGN.md: 3 x [2 S L (4 d^2 + 2 d d_ff) + 4 L d S^2 + 2 P (d^2 + d V)]
per sequence, P the scored positions), MFU against a float32 matmul peak measured in the same run
(on accelerators, and on CPU when the step's matmuls are bfloat16: the bf16 x bf16 -> f32 matmul
peak, measured likewise), compile time and peak memory.

`--head=classification|token|span` times a fine-tuning step instead (bert_jax/finetune.py's
train step: the head's loss, AdamW as configs/finetune.py sets it, dropout on) against Hugging
Face's `FlaxBertForSequenceClassification` / `...TokenClassification` / `...QuestionAnswering`
with the same loss; its FLOPs are the encoder's and the head's (no MLM head).

`--output=results.jsonl --table=docs/benchmarks.md` appends the result as a JSON line and
rewrites the table between the markers in docs/benchmarks.md from all lines of the file.
"""

from __future__ import annotations

import functools
import json
import pathlib
import resource
import statistics
import sys
import time

from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FLAGS = flags.FLAGS
# Fine-tuning heads (bert_jax/finetune.py's names) -> Hugging Face's Flax class for them.
FINETUNE_HEADS = {
    "classification": "FlaxBertForSequenceClassification",
    "token": "FlaxBertForTokenClassification",
    "span": "FlaxBertForQuestionAnswering",
}
DEFAULT_LABELS = {"classification": 2, "token": 9, "span": 2}


def _define_flags() -> None:
    flags.DEFINE_string("size", "mini", "tiny | mini | small | medium | base | large.")
    flags.DEFINE_integer("seq", 128, "Sequence length.")
    flags.DEFINE_integer("batch", 32, "Sequences per step.")
    flags.DEFINE_integer(
        "predictions", 0, "Masked positions per sequence (0: 20 at 128, 80 at 512)."
    )
    flags.DEFINE_integer("vocab", 30522, "Vocabulary size.")
    flags.DEFINE_enum(
        "head", "pretraining", ["pretraining", *FINETUNE_HEADS],
        "The step timed: pre-training (MLM + NSP) or fine-tuning with this head.",
    )  # fmt: skip
    flags.DEFINE_integer(
        "labels", 0, "Classes of a classification or token head (0: 2 and 9, as SST-2 and CoNLL)."
    )
    flags.DEFINE_integer("steps", 10, "Timed steps (after compilation); the median is reported.")
    flags.DEFINE_integer(
        "rounds", 5,
        "The timed steps of ours and Hugging Face's alternate in this many blocks (A B A B ...).",
    )  # fmt: skip
    flags.DEFINE_string("dtype", "float32", "Compute dtype: float32 | bfloat16.")
    flags.DEFINE_list("set", [], "Model config fields, e.g. --set=fused_qkv=true,attention=dot.")
    flags.DEFINE_string(
        "compiler_options", "",
        "XLA compile options for both steps, as train.compiler_options: 'name=value,...'.",
    )  # fmt: skip
    flags.DEFINE_bool(
        "keep_freed_memory", True,
        "Let glibc reuse freed host memory (bert_jax/host_memory.py), as bert_jax.main does.",
    )  # fmt: skip
    flags.DEFINE_bool("reference", True, "Also time Hugging Face's Flax step (if importable).")
    flags.DEFINE_string("reference_site", "", "Directory holding transformers 4.x (see above).")
    flags.DEFINE_string("output", "", "Append the result as one JSON line to this file.")
    flags.DEFINE_string(
        "table", "", "Rewrite the results table in this Markdown file from all lines of --output."
    )


def flops_per_sequence(c, seq: int, predictions: int) -> float:
    """Matmul FLOPs of one training sequence (forward + backward = 3 x forward)."""
    layers, d, ff, v = c.num_hidden_layers, c.hidden_size, c.intermediate_size, c.vocab_size
    forward = (
        2 * seq * layers * (4 * d * d + 2 * d * ff)
        + 4 * layers * d * seq * seq
        + 2 * predictions * (d * d + d * v)
    )
    return 3.0 * forward


def finetune_flops_per_sequence(c, seq: int, head: str, labels: int) -> float:
    """flops_per_sequence without the MLM head, plus the fine-tuning head's matmuls: the pooler
    and classifier on [CLS], or a [d, labels] layer at every position."""
    d = c.hidden_size
    head_forward = 2 * (d * d + d * labels) if head == "classification" else 2 * seq * d * labels
    return flops_per_sequence(c, seq, 0) + 3.0 * head_forward


def matmul_peak(dtype: str) -> float:
    """FLOP/s of a large square matmul in `dtype` on the default device: the fastest of 10
    (a peak; on a shared machine a median would understate it and so overstate MFU)."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    n = 2048 if jax.default_backend() == "cpu" else 8192
    a = jnp.ones((n, n), dtype)
    # Accumulated in float32, as the model's matmuls are (a bf16 x bf16 -> bf16 dot runs on a
    # slower path on CPU).
    f = jax.jit(lambda x: jnp.dot(x, x, preferred_element_type=jnp.float32))
    f(a).block_until_ready()
    times = []
    for _ in range(10):
        t = time.perf_counter()
        f(a).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times)


def host_cpu(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name and its vector and matrix extensions that decide the step's speed
    (a fast bf16 step needs AMX or AVX512-BF16): "" where `cpuinfo` is absent."""
    try:
        info = pathlib.Path(cpuinfo).read_text()
    except OSError:
        return ""
    first = info.split("\n\n")[0]  # the first processor's entry
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in
              first.splitlines() if ":" in line)}  # fmt: skip
    flags, name = fields.get("flags", "").split(), fields.get("model name", "")
    kept = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name} ({', '.join(kept)})" if kept else name


class Stepper:
    """A jitted step (its state donated) compiled and run once on a list of batches; `times(n)`
    runs n more steps and returns their seconds, `measure(n)` their summary."""

    def __init__(self, step, state, batches: list):
        import jax  # noqa: PLC0415

        t = time.perf_counter()
        self.compiled = step.lower(state, batches[0]).compile()
        self.compile_s = time.perf_counter() - t
        self.state, m = self.compiled(state, batches[0])  # warm-up (first call allocations)
        jax.block_until_ready(m)
        self.batches, self.calls = batches, 1
        self.memory_mb = None
        try:
            analysis = self.compiled.memory_analysis()
            self.memory_mb = (analysis.temp_size_in_bytes + analysis.argument_size_in_bytes) / 2**20
        except Exception:  # noqa: BLE001 (not every backend reports it)
            pass

    def times(self, n: int) -> list[float]:
        import jax  # noqa: PLC0415

        out = []
        for _ in range(n):
            batch = self.batches[self.calls % len(self.batches)]
            t = time.perf_counter()
            self.state, m = self.compiled(self.state, batch)
            jax.block_until_ready(m)
            out.append(time.perf_counter() - t)
            self.calls += 1
        return out

    def summary(self, times: list[float]) -> dict:
        """compile_s, step_s (the median of `times`), device_memory_mb."""
        return {"compile_s": self.compile_s, "step_s": statistics.median(times),
                "device_memory_mb": self.memory_mb}  # fmt: skip

    def measure(self, n: int) -> dict:
        return self.summary(self.times(n))


def alternate(steppers: dict, steps: int, rounds: int) -> dict:
    """`steps` timed steps of each stepper, in `rounds` blocks taken in turn (A B A B ...), so
    that a drift in the machine's speed reaches all of them alike: name -> summary."""
    times = {name: [] for name in steppers}
    for r in range(rounds):
        n = steps * (r + 1) // rounds - steps * r // rounds
        for name, stepper in steppers.items():
            times[name] += stepper.times(n)
    return {name: steppers[name].summary(t) for name, t in times.items()}


def bert_config(size: str, vocab: int, seq: int, dtype: str = "float32", sets=()) -> tuple:
    """(BertConfig of the named size as configs/pretrain.py builds it, the fields that `sets`
    ("key=value" strings, typed by common.parse_arg) changed)."""
    from bert_jax.model import BertConfig  # noqa: PLC0415
    from configs import common  # noqa: PLC0415

    model = common.model_config(size)
    model.update(vocab_size=vocab, dtype=dtype)
    model.max_position_embeddings = max(model.max_position_embeddings, seq)
    settable = {k: v for k, v in model.items() if k not in ("size", "vocab_size", "dtype")}
    fields = common.parse_arg(",".join(sets), **settable)
    fields = {k: v for k, v in fields.items() if v != settable[k]}
    model.update(fields)
    return BertConfig.from_dict({k: v for k, v in model.items() if k != "size"}), fields


def random_batch(rng, vocab: int, seq: int, batch: int, predictions: int) -> dict:
    """Random full-length pairs with `predictions` distinct masked positions each."""
    import numpy as np  # noqa: PLC0415

    low = min(1000, vocab // 10)  # past [PAD]/[UNK]/[CLS]/[SEP]/[MASK] and the unused slots
    ids = rng.integers(low, vocab, (batch, seq)).astype(np.int32)
    positions = np.sort(np.argsort(rng.random((batch, seq - 1)), 1)[:, :predictions] + 1, 1)
    return {
        "input_ids": ids,
        "input_mask": np.ones_like(ids),
        "segment_ids": np.repeat((np.arange(seq)[None] >= seq // 2).astype(np.int32), batch, 0),
        "masked_lm_positions": positions.astype(np.int32),
        "masked_lm_ids": rng.integers(low, vocab, (batch, predictions)).astype(np.int32),
        "masked_lm_weights": np.ones((batch, predictions), np.float32),
        "next_sentence_labels": rng.integers(0, 2, batch).astype(np.int32),
    }


def finetune_batch(rng, vocab: int, seq: int, batch: int, *, head: str, labels: int) -> dict:
    """Random full-length pairs with the targets of a fine-tuning head (bert_jax/finetune.py's
    names): a class per row, a tag per token, or an answer span."""
    import numpy as np  # noqa: PLC0415

    b = random_batch(rng, vocab, seq, batch, predictions=1)
    b = {k: b[k] for k in ("input_ids", "input_mask", "segment_ids")}
    if head == "classification":
        b["label"] = rng.integers(0, labels, batch).astype(np.int32)
    elif head == "token":
        b["label"] = rng.integers(0, labels, (batch, seq)).astype(np.int32)
        b["label_weights"] = np.ones((batch, seq), np.float32)
    else:
        width = min(8, seq - 2)  # answers of up to 8 tokens, after [CLS]
        start = rng.integers(1, seq - width, batch)
        b["start_position"] = start.astype(np.int32)
        b["end_position"] = (start + rng.integers(0, width, batch)).astype(np.int32)
    return b


def hf_batch(b: dict) -> dict:
    """The same batch in the form Hugging Face's head reads: labels at every position, a mask
    that is 1 at the masked positions."""
    import numpy as np  # noqa: PLC0415

    labels, label_mask = b["input_ids"].copy(), np.zeros(b["input_ids"].shape, np.float32)
    np.put_along_axis(labels, b["masked_lm_positions"], b["masked_lm_ids"], 1)
    np.put_along_axis(label_mask, b["masked_lm_positions"], 1.0, 1)
    return {"input_ids": b["input_ids"], "input_mask": b["input_mask"],
            "segment_ids": b["segment_ids"], "labels": labels, "label_mask": label_mask,
            "next_sentence_label": b["next_sentence_labels"]}  # fmt: skip


def stepper(step_fn, state, batches: list[dict], compiler_options=None) -> Stepper:
    """`step_fn(state, batch)` jitted with the state donated (and XLA's `compiler_options`, a
    dict), compiled on device batches."""
    import jax  # noqa: PLC0415

    batches = [jax.device_put(b) for b in batches]
    step = jax.jit(step_fn, donate_argnums=0, compiler_options=compiler_options or None)
    return Stepper(step, state, batches)


def _optimizer(config):
    """The optimizer of a configs/ module's config (BERT's AdamW), with a short warmup:
    the schedule is not what is timed."""
    from bert_jax import optim  # noqa: PLC0415

    opt = config.optimizer
    opt.warmup_steps = 10
    return optim.make_optimizer(opt, 1000)[0]


def our_step(config, batches: list[dict], compiler_options=None) -> Stepper:
    import jax  # noqa: PLC0415

    from bert_jax import train  # noqa: PLC0415
    from bert_jax.heads import BertForPreTraining  # noqa: PLC0415
    from configs import pretrain as pretrain_config  # noqa: PLC0415

    model = BertForPreTraining(config)
    run_config = pretrain_config.get_config()
    tx = _optimizer(run_config)
    _, seq = batches[0]["input_ids"].shape
    predictions = batches[0]["masked_lm_positions"].shape[1]
    state = train.init_state(model, tx, jax.random.PRNGKey(0), seq, predictions)
    # As the training loop runs it: the parameter and update norms after every log_every-th step.
    norms_every = run_config.train.log_every
    step = functools.partial(train.train_step, model=model, optimizer=tx, norms_every=norms_every)
    return stepper(step, state, batches, compiler_options)


def our_finetune_step(
    config, batches: list[dict], head: str, labels: int, compiler_options=None
) -> Stepper:
    import jax  # noqa: PLC0415

    from bert_jax import finetune  # noqa: PLC0415
    from configs import finetune as finetune_config  # noqa: PLC0415

    model = finetune.make_model(head, config, labels)
    tx = _optimizer(finetune_config.get_config())
    state = finetune.init_state(model, tx, jax.random.PRNGKey(0), batches[0]["input_ids"].shape[1:])
    step = functools.partial(finetune.train_step, model=model, optimizer=tx, head=head)
    return stepper(step, state, batches, compiler_options)


def _hf_pretraining_loss(out, b):
    """MLM logits at every position, the loss on the masked ones, + NSP."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import optax  # noqa: PLC0415

    logp = jax.nn.log_softmax(out.prediction_logits.astype(jnp.float32))
    mlm = -jnp.take_along_axis(logp, b["labels"][..., None], -1)[..., 0]
    mlm = jnp.sum(mlm * b["label_mask"]) / jnp.sum(b["label_mask"])
    nsp = optax.softmax_cross_entropy_with_integer_labels(
        out.seq_relationship_logits.astype(jnp.float32), b["next_sentence_label"]
    ).mean()
    return mlm + nsp


def _hf_finetune_loss(head: str):
    """The same loss as losses.task_sums for `head` (span: the mean of start and end)."""
    import jax.numpy as jnp  # noqa: PLC0415
    import optax  # noqa: PLC0415

    def xent(logits, labels):
        return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)

    def loss(out, b):
        if head == "span":
            start = xent(out.start_logits, b["start_position"])
            return jnp.mean((start + xent(out.end_logits, b["end_position"])) / 2)
        per_label = xent(out.logits, b["label"])
        if head == "token":
            return jnp.sum(per_label * b["label_weights"]) / jnp.sum(b["label_weights"])
        return jnp.mean(per_label)

    return loss


def hf_step(config, batches: list[dict], head: str = "pretraining", labels: int = 2,
            compiler_options=None) -> Stepper | None:  # fmt: skip
    """Hugging Face's Flax model for `head` (FlaxBertForPreTraining or FINETUNE_HEADS) with the
    same loss, optax AdamW with the same schedule shape; None if transformers<5 is absent."""
    try:
        import transformers  # noqa: PLC0415

        if int(transformers.__version__.split(".")[0]) >= 5:
            return None
    except ImportError:
        return None
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import optax  # noqa: PLC0415

    seq = batches[0]["input_ids"].shape[1]
    name = FINETUNE_HEADS.get(head, "FlaxBertForPreTraining")
    hf = getattr(transformers, name)(
        transformers.BertConfig(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                                num_hidden_layers=config.num_hidden_layers,
                                num_attention_heads=config.num_attention_heads,
                                intermediate_size=config.intermediate_size,
                                max_position_embeddings=max(512, seq), num_labels=labels),
        seed=0, dtype=jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32,
    )  # fmt: skip
    loss_of = _hf_pretraining_loss if head == "pretraining" else _hf_finetune_loss(head)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-4, weight_decay=0.01))
    state = {"params": hf.params, "opt": tx.init(hf.params), "rng": jax.random.PRNGKey(0)}

    def step(state, b):
        rng, dropout = jax.random.split(state["rng"])

        def loss_fn(params):
            out = hf(b["input_ids"], b["input_mask"], b["segment_ids"], params=params,
                     dropout_rng=dropout, train=True)  # fmt: skip
            return loss_of(out, b)

        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        updates, opt = tx.update(grads, state["opt"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates), "opt": opt,
                "rng": rng}, {"loss": loss}  # fmt: skip

    batches = [hf_batch(b) if head == "pretraining" else b for b in batches]
    return stepper(step, state, batches, compiler_options)


TABLE_BEGIN, TABLE_END = "<!-- benchmark table: begin -->", "<!-- benchmark table: end -->"
COLUMNS = (
    ("size", "size"), ("seq", "seq"), ("batch", "batch"), ("dtype", "dtype"),
    ("options", "options"), ("device", "device"), ("host_cpu", "host CPU"),
    ("ours_seqs_per_s", "ours seq/s"),
    ("hf_seqs_per_s", "HF Flax seq/s"), ("speedup_vs_hf", "ours / HF"),
    ("ours_mfu", "ours MFU"), ("hf_mfu", "HF MFU"), ("peak_tflops", "peak TFLOP/s"),
    ("ours_mfu_float32_peak", "ours MFU vs f32 peak"),
    ("ours_compile_s", "compile s"), ("hf_compile_s", "HF compile s"),
    ("ours_device_memory_mb", "memory MB"), ("peak_rss_mb", "host RSS MB"),
)  # fmt: skip


def markdown_table(results: list[dict]) -> str:
    """One row per benchmark result (a JSON line of --output); "-" where a field is absent."""

    def cell(r, key):
        v = r.get(key)
        if key == "options":
            head = [f"head={r['head']}"] if r.get("head") else []
            kept = ["freed memory kept"] if r.get("keep_freed_memory") else []
            options = {**(v or {}), **r.get("compiler_options", {})}
            return ",".join(head + [f"{k}={x}" for k, x in options.items()] + kept) or "default"
        return "-" if v is None else str(v)

    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r, k) for k, _ in COLUMNS) + " |" for r in results]
    return "\n".join(lines)


def replace_block(markdown_file: str, begin: str, end: str, text: str) -> None:
    """Put `text` between the markers `begin` and `end` of `markdown_file` (appended with the
    markers if they are absent)."""
    path = pathlib.Path(markdown_file)
    doc = path.read_text() if path.exists() else ""
    block = f"{begin}\n{text}\n{end}"
    if begin in doc and end in doc:
        head, rest = doc.split(begin, 1)
        doc = head + block + rest.split(end, 1)[1]
    else:
        doc = doc + ("\n" if doc else "") + block + "\n"
    path.write_text(doc)


def write_table(results_file: str, markdown_file: str) -> None:
    """Replace the results table of `markdown_file` with one made from all of `results_file`."""
    with open(results_file) as f:
        results = [json.loads(line) for line in f if line.strip()]
    replace_block(markdown_file, TABLE_BEGIN, TABLE_END, markdown_table(results))


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.table and not FLAGS.output:
        raise app.UsageError("--table needs --output (the JSON lines it is made from).")
    if FLAGS.labels and FLAGS.head not in ("classification", "token"):
        raise app.UsageError(f"--labels is for --head=classification|token (got {FLAGS.head}).")
    if FLAGS.reference_site:
        sys.path.insert(0, FLAGS.reference_site)
    from bert_jax import host_memory  # noqa: PLC0415

    # Both steps run under the same allocator settings (before JAX starts its threads).
    kept = FLAGS.keep_freed_memory and host_memory.keep_freed_memory()
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from bert_jax import parallel  # noqa: PLC0415
    from configs import common  # noqa: PLC0415

    try:
        config, fields = bert_config(FLAGS.size, FLAGS.vocab, FLAGS.seq, FLAGS.dtype, FLAGS.set)
    except ValueError as e:
        raise app.UsageError(f"--set: {e} (and --dtype, --vocab).") from None
    try:  # (the same options for both steps)
        options = parallel.compiler_options(FLAGS.compiler_options)
    except ValueError as e:
        raise app.UsageError(f"--compiler_options: {e}") from None
    preds = FLAGS.predictions or common.max_predictions(FLAGS.seq)
    backend = jax.default_backend()
    # MFU against the peak of the precision each step's matmuls run in (on accelerators bf16;
    # on CPU Hugging Face's follows `dtype`, ours also bf16_matmul), and on CPU also against the
    # float32 peak, the issue's yardstick.
    cpu = backend == "cpu"
    hf_peak_dtype = "float32" if cpu and config.dtype == "float32" else "bfloat16"
    peak_dtype = "bfloat16" if config.bf16_matmul else hf_peak_dtype
    dtypes = {peak_dtype, hf_peak_dtype} | ({"float32"} if cpu else set())
    peaks = {d: matmul_peak(d) for d in dtypes}
    rng = np.random.default_rng(0)
    # Both steps train on these two batches, alternately.
    head, labels = FLAGS.head, FLAGS.labels or DEFAULT_LABELS.get(FLAGS.head, 0)
    if head == "pretraining":
        batches = [random_batch(rng, config.vocab_size, FLAGS.seq, FLAGS.batch, preds)
                   for _ in range(2)]  # fmt: skip
        ours = our_step(config, batches, options)
        flops = flops_per_sequence(config, FLAGS.seq, preds) * FLAGS.batch
        hf_flops = flops_per_sequence(config, FLAGS.seq, FLAGS.seq) * FLAGS.batch
    else:
        batches = [
            finetune_batch(rng, config.vocab_size, FLAGS.seq, FLAGS.batch, head=head, labels=labels)
            for _ in range(2)
        ]
        ours = our_finetune_step(config, batches, head, labels, options)
        flops = hf_flops = (
            finetune_flops_per_sequence(config, FLAGS.seq, head, labels) * FLAGS.batch
        )
    hf = hf_step(config, batches, head, labels, options) if FLAGS.reference else None
    # Both steps compiled, their timed steps alternate: A B A B ...
    timings = alternate(
        {"ours": ours, "hf": hf} if hf else {"ours": ours}, FLAGS.steps, FLAGS.rounds
    )
    ours, hf = timings["ours"], timings.get("hf")
    # The peaks are measured before and after the steps, and the higher one kept.
    peaks = {d: max(p, matmul_peak(d)) for d, p in peaks.items()}
    peak = peaks[peak_dtype]
    result = {
        "size": FLAGS.size, "seq": FLAGS.seq, "batch": FLAGS.batch, "dtype": FLAGS.dtype,
        "options": dict(fields), **({"head": head} if head != "pretraining" else {}),
        **({"compiler_options": options} if options else {}),
        "keep_freed_memory": kept, "backend": backend,
        "device": str(jax.devices()[0].device_kind),
        **({"host_cpu": host_cpu()} if cpu else {}),
        "peak_tflops": round(peak / 1e12, 3), "peak_dtype": peak_dtype,
        "ours_seqs_per_s": round(FLAGS.batch / ours["step_s"], 2),
        "ours_tokens_per_s": round(FLAGS.batch * FLAGS.seq / ours["step_s"]),
        "ours_model_gflop_per_step": round(flops / 1e9, 2),
        "ours_mfu": round(flops / ours["step_s"] / peak, 4),
        **({"float32_peak_tflops": round(peaks["float32"] / 1e12, 3),
            "ours_mfu_float32_peak": round(flops / ours["step_s"] / peaks["float32"], 4)}
           if cpu and peak_dtype != "float32" else {}),
        "ours_compile_s": round(ours["compile_s"], 1),
        "ours_device_memory_mb": ours["device_memory_mb"] and round(ours["device_memory_mb"]),
    }  # fmt: skip
    if hf is not None:
        result.update({
            "hf_transformers": sys.modules["transformers"].__version__,
            "hf_seqs_per_s": round(FLAGS.batch / hf["step_s"], 2),
            "hf_mfu": round(hf_flops / hf["step_s"] / peaks[hf_peak_dtype], 4),
            "hf_compile_s": round(hf["compile_s"], 1),
            "speedup_vs_hf": round(hf["step_s"] / ours["step_s"], 2),
        })  # fmt: skip
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    line = json.dumps(result)
    print(line)
    if FLAGS.output:
        with open(FLAGS.output, "a") as f:
            f.write(line + "\n")
    if FLAGS.table:
        write_table(FLAGS.output, FLAGS.table)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
