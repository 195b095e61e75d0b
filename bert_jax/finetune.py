"""Fine-tuning: a pure train step per task head, jit/pmap, per-epoch dev evaluation, predictions.

A deliberate sibling of train.py (same state dict, same Parallel wrapper, same Orbax resume),
not a subclass. One call of `finetune` is one run: one task, one hyper-parameter point, one
seed, in one workdir; `bert_jax.finetune_sweep` runs a grid of them. Tasks plug in through
`bert_jax.data.tasks.registry` (examples -> features -> metrics; contracts in tasks/common.py).

Data order: the training rows are shuffled per epoch by a pure function of (seed, epoch), and an
epoch is `len(train) // batch_size` steps: the last `len(train) % batch_size` rows of each epoch's
permutation (other rows each epoch) are left out of it, so that every epoch ends on a step, where it
is evaluated and checkpointed, and a run killed mid-epoch resumes exactly at the step it saved.
(The original run_classifier.py evaluates only at the end and runs int(N * epochs / batch)
steps over a repeated dataset, batches crossing epochs: at most num_epochs - 1 steps more
than here; it matters only when the training set is a few batches.)
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from bert_jax import checkpoints, heads, inputs, losses, optim, parallel, train
from bert_jax.data.tasks import common, registry
from bert_jax.model import BertConfig
from bert_jax.pretrained import BertTokenizer
from bert_jax.writers import MetricWriter

State = dict[str, Any]
Batch = dict[str, jax.Array]
TARGETS = ("label", "label_weights", "start_position", "end_position")


# --------------------------------------------------------------------------- the pure functions


def make_model(
    head: str, config: BertConfig, num_labels: int, head_input: heads.HeadInput | None = None
):
    """The Flax module of a head: classification/regression/multilabel share the pooled head.

    `head_input`: the encoder layers the head reads, a frozen encoder, a BiLSTM (config.head)."""
    head_input = head_input or heads.HeadInput()
    if head == "choice":
        if not head_input.is_default:
            raise ValueError("the multiple-choice head takes no config.head options.")
        return heads.BertForMultipleChoice(config)
    if head in ("classification", "multilabel", "regression"):
        n = 1 if head == "regression" else num_labels
        return heads.BertForSequenceClassification(config, n, head_input)
    if head == "token":
        return heads.BertForTokenClassification(config, num_labels, head_input)
    if head == "span":
        return heads.BertForQuestionAnswering(config, head_input)
    raise ValueError(f"head={head!r}; use one of {common.HEADS}.")


def head_input(config: ml_collections.ConfigDict) -> heads.HeadInput:
    """config.head as a HeadInput (configs written before config.head existed: the default)."""
    return heads.HeadInput(**config.get("head", {}))


def init_state(model, tx, rng: jax.Array, input_shape: tuple[int, ...]) -> State:
    """Fresh parameters and optimizer state, built inside one jit."""
    init_rng, state_rng = jax.random.split(rng)

    def init(rng):
        ids = jnp.zeros((1, *input_shape), jnp.int32)
        params = model.init(rng, ids, ids, ids)["params"]
        return {
            "step": jnp.zeros((), jnp.int32),
            "params": params,
            "opt_state": tx.init(params),
            "rng": state_rng,
        }

    return jax.jit(init)(init_rng)


def train_step(
    state: State, batch: Batch, *, model, optimizer, head: str, axis_name: str | None = None
) -> tuple[State, dict[str, jax.Array]]:
    """One optimizer step on the head's loss; the mean is over the global batch (psum'ed)."""
    rng = train.dropout_rng(state, model.config, axis_name)

    def psum(x):
        return x if axis_name is None else jax.lax.psum(x, axis_name)

    def loss_fn(params):
        outputs = model.apply(
            {"params": params},
            *(batch[k] for k in common.MODEL_INPUTS),
            deterministic=False,
            rngs={"dropout": rng},
        )
        sums = losses.task_sums(head, outputs, batch)
        return sums["loss"] / jnp.maximum(psum(sums["weight"]), 1e-8), sums

    grads, sums = jax.grad(loss_fn, has_aux=True)(state["params"])
    grads, sums = psum(grads), psum(sums)
    metrics = losses.task_metrics(sums)
    metrics["grad_norm"] = optax.tree.norm(grads)
    # As in pre-training: a non-finite loss or gradient leaves params and optimizer state as
    # they were (the loop stops with an error if a log step's loss is non-finite).
    finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
    params, opt_state, metrics["update_norm"] = optim.update_if_finite(
        optimizer, finite, grads, state["opt_state"], state["params"]
    )
    new_state = {**state, "step": state["step"] + 1, "params": params, "opt_state": opt_state}
    return new_state, metrics


def predict_step(params, batch: Batch, *, model, axis_name: str | None = None):
    """The head's outputs (no dropout) for one batch; rows stay where they are."""
    del axis_name  # nothing to aggregate: every row's outputs go back to the host
    return model.apply({"params": params}, *(batch[k] for k in common.MODEL_INPUTS))


# --------------------------------------------------------------------------- batches


def device_arrays(features: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    """Model inputs and targets of `rows` (metadata such as example_index stays on the host)."""
    keys = [k for k in (*common.MODEL_INPUTS, *TARGETS) if k in features]
    return {k: features[k][rows] for k in keys}


def is_token_task(arrays: dict[str, np.ndarray]) -> bool:
    """The token head's features: the only ones with per-token targets and [N, S, C] logits."""
    return "label_weights" in arrays


def trim_padding(batch: dict[str, np.ndarray], min_length: int = 16) -> dict[str, np.ndarray]:
    """The batch cut to the shortest power of two (>= min_length) that holds its longest row.

    Padding is masked out of attention, pooling and the losses, so only the cost changes; a
    handful of lengths means a handful of compilations. Sequence-shaped arrays are the model
    inputs ([B, S], or [B, C, S] for multiple choice) and the token head's `label` and
    `label_weights`. Span batches stay whole: as in run_squad.py, the start/end softmax runs
    over every position, padding included, so cutting it would change the loss.
    """
    if "start_position" in batch:
        return batch
    seq_len = batch["input_ids"].shape[-1]
    ends = np.where(batch["input_mask"] > 0, np.arange(1, seq_len + 1), 0)  # last real token
    longest = int(np.max(ends, initial=1))
    length = min(seq_len, max(min_length, 1 << (longest - 1).bit_length()))
    if length == seq_len:
        return batch
    keys = set(common.MODEL_INPUTS)
    if is_token_task(batch):
        keys |= {"label", "label_weights"}
    return {k: v[..., :length] if k in keys else v for k, v in batch.items()}


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The training rows of `epoch` in order: a pure function of (n, seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def predict(
    par: parallel.Parallel,
    params,
    features: dict[str, np.ndarray],
    batch_size: int,
    *,
    trim: bool = False,
) -> dict[str, np.ndarray]:
    """Outputs for every row of `features`, in row order. The last batch is padded to the fixed
    shape (one compilation) with copies of row 0 that are dropped again. `trim`: each batch is
    cut as by trim_padding; token logits come back padded with zeros to the full length."""
    n, seq_len = len(features["input_ids"]), features["input_ids"].shape[-1]
    parts = []
    for begin in range(0, n, batch_size):
        rows = np.arange(begin, min(begin + batch_size, n))
        padded = np.concatenate([rows, np.zeros(batch_size - len(rows), np.int64)])
        batch = device_arrays(features, padded)
        out = par.eval(params, par.put_batch(trim_padding(batch) if trim else batch))
        out = jax.device_get(out)
        if par.mode == "pmap":  # [devices, per-device rows, ...] -> [rows, ...]
            out = {k: v.reshape(-1, *v.shape[2:]) for k, v in out.items()}
        if is_token_task(features) and out["logits"].shape[1] < seq_len:  # [B, S', C]
            missing = seq_len - out["logits"].shape[1]
            out["logits"] = np.pad(out["logits"], ((0, 0), (0, missing), (0, 0)))
        parts.append({k: v[: len(rows)] for k, v in out.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


# --------------------------------------------------------------------------- one run


@dataclasses.dataclass
class Setup:
    """What a run needs besides its hyper-parameters: the task, its features and the model."""

    task: Any
    splits: dict[str, list]  # split name -> examples
    features: dict[str, dict[str, np.ndarray]]  # split name -> features
    bert_config: BertConfig
    init_params: dict | None  # encoder weights from config.init_checkpoint, or None
    tokenizer: BertTokenizer
    vocab_file: str
    lowercase: bool
    strip_accents: bool | None = None  # None: with lowercasing (BERT's rule)


def setup(config: ml_collections.ConfigDict, log: Callable[[str], None] = print) -> Setup:
    """Loads the init checkpoint, the tokenizer and the task's data, and featurizes every split.

    Shared by all points of a sweep (featurizing SQuAD once, not once per point)."""
    from bert_jax import convert  # noqa: PLC0415 (pulls in the weight-file readers)

    init = None
    if config.init_checkpoint:
        init = convert.load_pretrained(config.init_checkpoint)
        vocab_file, lowercase = init.vocab_file, init.lowercase
        strip_accents = init.strip_accents  # tokenizer_config.json's, as transformers reads it
        bert_config = dataclasses.replace(
            init.config, **{k: config.model[k] for k in train.RUN_FIELDS}
        )
    else:
        vocab_file, lowercase = config.task.vocab_file, config.task.lowercase
        strip_accents = None  # with lowercasing
        if not vocab_file:
            raise ValueError(
                "init_checkpoint is empty and task.vocab_file is not set: fine-tuning from a "
                "random init needs a vocab.txt (set --config.task.vocab_file)."
            )
        bert_config = None
    if config.task.vocab_file:  # an explicit vocab wins over the checkpoint's own
        vocab_file = config.task.vocab_file
    if vocab_file is None:
        raise FileNotFoundError(
            f"{config.init_checkpoint!r} has no vocab.txt; set --config.task.vocab_file."
        )
    tokenizer = BertTokenizer.from_vocab(
        vocab_file, lowercase=lowercase, strip_accents=strip_accents
    )
    if bert_config is None:
        fields = {k: v for k, v in config.model.items() if k != "size"}
        fields["vocab_size"] = fields["vocab_size"] or tokenizer.vocab_size
        bert_config = BertConfig.from_dict(fields)
    if tokenizer.vocab_size > bert_config.vocab_size:
        raise ValueError(
            f"{vocab_file} has {tokenizer.vocab_size} tokens but the model has vocab_size="
            f"{bert_config.vocab_size}; ids would fall outside the embedding table."
        )
    t0 = time.time()
    task = registry.make_task(config.task, tokenizer)
    splits = task.load()
    if "train" not in splits or "dev" not in splits:
        raise ValueError(
            f"task {config.task.name!r} gave splits {sorted(splits)}; need train, dev."
        )
    limit = config.task.get("train_examples", 0)
    if limit:  # a fixed random subset (the same for every run): learning curves, few-shot
        if not 0 < limit <= len(splits["train"]):
            raise ValueError(f"task.train_examples={limit}; the train split has "
                             f"{len(splits['train'])} examples.")  # fmt: skip
        keep = np.sort(np.random.default_rng(0).permutation(len(splits["train"]))[:limit])
        splits["train"] = [splits["train"][i] for i in keep]
    features = {name: task.featurize(name, ex) for name, ex in splits.items()}
    for name, f in features.items():
        _check_features(f, bert_config, name)
    sizes = ", ".join(
        f"{k} {len(v)} ({len(features[k]['input_ids'])} rows)" for k, v in splits.items()
    )
    took = time.time() - t0
    log(f"task {task.name} ({task.head}, {task.num_labels} labels): {sizes}; {took:.1f}s")
    params = None
    if init is not None:
        encoder = dict(init.params["bert"])
        if config.reinit_pooler:
            encoder.pop("pooler", None)
        params = {"bert": encoder}
    return Setup(
        task,
        splits,
        features,
        bert_config,
        params,
        tokenizer,
        str(vocab_file),
        lowercase,
        strip_accents,
    )


def _check_train_config(t, opt) -> None:
    for name in ("num_epochs", "batch_size", "eval_batch_size", "log_every"):
        if t[name] < 1:
            raise ValueError(f"train.{name}={t[name]}; it must be at least 1.")
    if t.select not in ("last", "best"):
        raise ValueError(f"train.select={t.select!r}; use 'last' or 'best'.")
    if opt.warmup_steps:  # the step count is derived per run: a value here would be ignored
        raise ValueError(
            f"optimizer.warmup_steps={opt.warmup_steps}: fine-tuning warms up over "
            "train.warmup_proportion of its steps (0.1); set --config.train.warmup_proportion."
        )
    if opt.grad_accum_steps != 1:
        # The schedule and the epoch arithmetic count optimizer steps; with accumulation they
        # would count micro-batches. Use a larger train.batch_size (split over devices) instead.
        raise ValueError(
            f"optimizer.grad_accum_steps={opt.grad_accum_steps}: fine-tuning takes 1; raise "
            "train.batch_size instead (it is split across devices)."
        )


def _check_features(f: dict[str, np.ndarray], config: BertConfig, split: str) -> None:
    """Out-of-range ids give NaN embeddings (or, with one segment row, row 0 for every segment)
    without an error from the embedding lookup: refuse them here."""
    ids = f["input_ids"]
    if ids.size and (ids.min() < 0 or ids.max() >= config.vocab_size):
        raise ValueError(
            f"{split}: token ids in [{ids.min()}, {ids.max()}] fall outside the vocab "
            f"[0, {config.vocab_size}); the vocab.txt does not match the model."
        )
    segments = f.get("segment_ids")
    if segments is not None and segments.size and segments.max() >= config.type_vocab_size:
        raise ValueError(
            f"{split}: segment id {segments.max()} but the model has type_vocab_size="
            f"{config.type_vocab_size}; this task's sentence pairs need a model with 2 segments."
        )
    if ids.shape[-1] > config.max_position_embeddings:
        raise ValueError(
            f"{split}: sequences of {ids.shape[-1]} tokens exceed max_position_embeddings="
            f"{config.max_position_embeddings}; lower task.max_seq_length."
        )


def finetune(
    config: ml_collections.ConfigDict,
    workdir: str,
    ready: Setup | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Fine-tunes one point (config.train.*) in `workdir`; rerunning resumes. Returns results:
    the dev metrics of every epoch, the selected epoch (train.select) and its metrics per split."""
    results_file = os.path.join(workdir, "results.json")
    finished = _read_results(results_file, log)
    if finished is not None:
        return finished  # finished before
    ready = ready or setup(config, log)
    task, features, t = ready.task, ready.features, config.train
    _check_train_config(t, config.optimizer)
    trim = t.get("trim_padding", False)  # (configs written before the field: off)
    mode = parallel.resolve(t.parallel, mesh_ok=False)
    options = parallel.compiler_options(t.get("compiler_options", ""))
    n_dev = jax.local_device_count() if mode == "pmap" else 1
    for name in ("batch_size", "eval_batch_size"):
        if t[name] % n_dev:
            raise ValueError(f"train.{name}={t[name]} is not divisible by {n_dev} devices.")
    n_train = len(features["train"]["input_ids"])
    steps_per_epoch = n_train // t.batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"{n_train} training rows make no batch of train.batch_size={t.batch_size}."
        )
    total = steps_per_epoch * t.num_epochs
    opt_cfg = ml_collections.ConfigDict(config.optimizer.to_dict())
    opt_cfg.warmup_steps = int(round(t.warmup_proportion * total))
    tx, schedule = optim.make_optimizer(opt_cfg, total)
    spec = head_input(config)
    if spec.freeze_encoder:  # feature-based: the encoder is neither trained nor decayed
        tx = optim.freeze(tx, "bert")
    model = make_model(task.head, ready.bert_config, task.num_labels, spec)

    os.makedirs(workdir, exist_ok=True)
    _write_config(config, ready, workdir)
    # Resume order: this workdir's newest checkpoint > init_checkpoint's encoder > fresh init.
    input_shape = features["train"]["input_ids"].shape[1:]
    state = init_state(model, tx, jax.random.PRNGKey(t.seed), input_shape)
    ckpt = checkpoints.Checkpointer(
        os.path.join(workdir, "checkpoints"),
        save_every=min(t.checkpoint_every or steps_per_epoch, steps_per_epoch),
        keep=1,
    )
    restored = ckpt.restore(checkpoints.abstract_like(state))
    chosen_dir = os.path.join(workdir, "best")
    if restored is not None:
        state = restored
    elif _trained(workdir, total, chosen_dir):
        # Every epoch is in history.json and the selected model in best/, but results.json is
        # missing or unreadable and the train state was deleted (train.keep_train_state=False):
        # only the final evaluation is left to do, from best/.
        log(f"{workdir}: trained before (history.json, best/); redoing the final evaluation")
        state = {**state, "step": jnp.asarray(total, jnp.int32)}
    elif ready.init_params is not None:
        from bert_jax import convert  # noqa: PLC0415

        params, report = convert.merge_params(state["params"], ready.init_params)
        log(f"initialised fresh: {_fresh_names(report['initialised fresh'])}")
        state = {**state, "params": params, "opt_state": jax.jit(tx.init)(params)}
    else:
        log("no init_checkpoint: every parameter is initialised at random")
    start = int(state["step"])

    par = parallel.Parallel(
        mode,
        functools.partial(train_step, model=model, optimizer=tx, head=task.head),
        functools.partial(predict_step, model=model),
        compiler_options=options,
    )
    state = par.put_state(state)
    writer = MetricWriter(workdir, start)
    history = [h for h in _read_history(workdir) if h["step"] <= start]

    def end_of_epoch(done: int) -> None:
        """Dev metrics of the epoch that ends at `done`; the selected model is kept."""
        dev = _evaluate(ready, par, state["params"], t.eval_batch_size, "dev", trim=trim)
        entry = {"epoch": done // steps_per_epoch, "step": done, **dev}
        history.append(entry)
        writer.write(done, "dev", dev)
        log(f"epoch {entry['epoch']}/{t.num_epochs}  step {done}  dev " + _fmt(dev, task.metric))
        if _select(history, task.metric, t.select) is entry:
            _save_params(chosen_dir, par.get_state(state)["params"], entry)
        _write_history(workdir, history)

    # Each epoch's checkpoint is committed before its evaluation, so the kept model never runs
    # ahead of the checkpoint; a kill in between leaves an epoch to evaluate now.
    if start and start % steps_per_epoch == 0 and all(h["step"] != start for h in history):
        end_of_epoch(start)
    t_start = time.time()
    stop = min(t.stop_at_step or total, total)

    order_of = functools.lru_cache(maxsize=2)(functools.partial(epoch_order, n_train, t.seed))

    def batch_of(step: int):  # runs up to train.prefetch_batches steps ahead
        epoch, offset = divmod(step, steps_per_epoch)
        order = order_of(epoch)  # one permutation per epoch, not per step
        rows = order[offset * t.batch_size : (offset + 1) * t.batch_size]
        batch = device_arrays(features["train"], rows)
        return par.put_batch(trim_padding(batch) if trim else batch)

    batches = inputs.prefetch(iter(range(start, stop)), t.get("prefetch_batches", 0), batch_of)
    try:
        for step in range(start, stop):
            state, metrics = par.train(state, next(batches))
            done = step + 1
            if done % t.log_every == 0 or done % steps_per_epoch == 0:
                m = {k: float(v) for k, v in jax.device_get(par.get_metrics(metrics)).items()}
                if not np.isfinite(m["loss"]):
                    raise FloatingPointError(
                        f"non-finite loss at step {done}; lower optimizer.learning_rate."
                    )
                m["learning_rate"] = float(schedule(step))
                writer.write(done, "train", m)
                rate = (done - start) / (time.time() - t_start)
                log(
                    f"step {done}/{total}  loss {m['loss']:.4f}  {rate:.2f} steps/s  "
                    f"ETA {(total - done) / rate / 60:.1f} min"
                )
            if done % steps_per_epoch == 0:
                ckpt.save(done, par.get_state(state), force=True)
                ckpt.manager.wait_until_finished()
                end_of_epoch(done)
            elif done == stop or ckpt.manager.should_save(done):
                ckpt.save(done, par.get_state(state), force=True)
    finally:
        batches.close()  # stops the prefetch thread
        ckpt.close()
        writer.close()
    if stop < total:
        log(f"stopped at step {stop} of {total} (train.stop_at_step); rerun without it to go on")
        return {"stopped_at_step": stop}

    chosen = _select(history, task.metric, t.select)
    best_params = _restore_params(chosen_dir, par.get_state(state)["params"])
    results = {
        "task": task.name,
        "metric": task.metric,
        "select": t.select,
        "epoch": chosen["epoch"],
        "dev": {k: v for k, v in chosen.items() if k not in ("epoch", "step")},
        "history": history,
        "train_seconds": round(time.time() - t_start, 1),
        "steps": total,
    }
    device_params = par.put_state({"params": best_params})["params"]
    pred_dir = os.path.join(workdir, "predictions")
    # dev first: evaluating it sets what test predictions use (SQuAD 2.0's null threshold,
    # multi-label thresholds), tuned on the selected model's dev outputs.
    for split in sorted(set(ready.splits) - {"train"}, key=lambda s: s != "dev"):
        outputs = predict(par, device_params, features[split], t.eval_batch_size, trim=trim)
        if task.has_labels(split):
            m = task.evaluate(split, ready.splits[split], features[split], outputs)
            results[split] = {k: float(v) for k, v in m.items()}
        task.write_predictions(split, ready.splits[split], features[split], outputs, pred_dir)
    write_json(results_file, results)  # last: its presence means the run is finished
    if not t.keep_train_state:  # params + optimizer moments; the selected model stays in best/
        shutil.rmtree(os.path.join(workdir, "checkpoints"), ignore_errors=True)
    log(f"{t.select} epoch {chosen['epoch']}: dev " + _fmt(results["dev"], task.metric))
    return results


def _select(history: list[dict], metric: str, select: str) -> dict:
    """The epoch whose model a run keeps: the last one (as run_classifier.py / run_squad.py do),
    or the first with the best dev metric (NaN, e.g. a constant regression, ranks last)."""
    if select == "last":
        return history[-1]
    return max(history, key=lambda h: -np.inf if np.isnan(h[metric]) else h[metric])


def _write_config(config: ml_collections.ConfigDict, ready: Setup, workdir: str) -> None:
    """The config as run, with the real architecture, vocab and casing (so that the workdir can
    be an init_checkpoint itself, e.g. MNLI -> RTE) and the task's class names (an export's
    id2label)."""
    saved = ml_collections.ConfigDict(config.to_dict())
    saved.model = dataclasses.asdict(ready.bert_config)
    saved.data = {"vocab_file": os.path.abspath(ready.vocab_file), "lowercase": ready.lowercase}
    if ready.strip_accents is not None:
        saved.data.strip_accents = ready.strip_accents
    names = getattr(ready.task, "class_names", None)
    if names:
        saved.label_names = list(names)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(saved.to_json_best_effort(indent=2))


def _evaluate(
    ready: Setup, par, params, batch_size: int, split: str, *, trim: bool
) -> dict[str, float]:
    outputs = predict(par, params, ready.features[split], batch_size, trim=trim)
    m = ready.task.evaluate(split, ready.splits[split], ready.features[split], outputs)
    return {k: float(v) for k, v in m.items()}


def _fmt(m: dict[str, float], metric: str) -> str:
    rest = "  ".join(f"{k} {v:.4f}" for k, v in m.items() if k != metric and np.isscalar(v))
    return f"{metric} {m[metric]:.4f}  " + rest


def _fresh_names(fresh: list[str]) -> str:
    """Heads by name (classifier, qa_outputs); anything fresh inside the encoder in full."""
    names = sorted({n if n.startswith("bert/") else n.split("/")[0] for n in fresh})
    return ", ".join(names) or "nothing"


def write_json(path: str, obj: Any) -> None:
    """`obj` as JSON at `path`, atomically: a kill mid-write leaves the old file or none, never
    a truncated one (which would read as a finished run that cannot be read)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_results(path: str, log: Callable[[str], None]) -> dict | None:
    """A finished run's results.json, or None when there is none or it cannot be read (e.g. cut
    short by a kill before it was written atomically): the run then resumes, which for a run
    that trained to the end is its final evaluation only."""
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            results = json.load(f)
    except (OSError, ValueError) as e:
        log(f"{path} is unreadable ({e}): not finished; its final evaluation is redone")
        return None
    if not isinstance(results, dict) or "dev" not in results:
        log(f"{path} holds no dev results: not finished; its final evaluation is redone")
        return None
    return results


def _trained(workdir: str, total: int, chosen_dir: str) -> bool:
    """Whether every epoch of the run's `total` steps was evaluated and its selected model saved
    (best/, or best.old/ when a kill interrupted the swap)."""
    history = _read_history(workdir)
    saved = os.path.isdir(chosen_dir) or os.path.isdir(chosen_dir + ".old")
    return bool(history) and history[-1]["step"] == total and saved


def _read_history(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "history.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)


def _write_history(workdir: str, history: list[dict]) -> None:
    write_json(os.path.join(workdir, "history.json"), history)


def _save_params(directory: str, params, entry: dict) -> None:
    """The selected model so far, as an Orbax checkpoint (replacing the previous one)."""
    tmp, old = directory + ".tmp", directory + ".old"
    shutil.rmtree(tmp, ignore_errors=True)
    with ocp.StandardCheckpointer() as saver:
        saver.save(os.path.abspath(tmp), params)
        saver.wait_until_finished()
    with open(os.path.join(tmp, "best.json"), "w") as f:
        json.dump(entry, f, indent=2)
    # Swap by renames, so a kill at any moment leaves a whole model (here or in .old).
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(directory):
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def _restore_params(directory: str, like):
    if not os.path.exists(directory) and os.path.exists(directory + ".old"):
        os.replace(directory + ".old", directory)  # killed in the middle of the swap
    with ocp.StandardCheckpointer() as loader:
        return loader.restore(os.path.abspath(directory), checkpoints.abstract_like(like))
