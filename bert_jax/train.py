"""BERT pre-training: a pure train step, its jit and pmap wrappers, and the training loop.

The state is a plain dict {"step", "params", "opt_state", "rng"}: everything a bitwise resume needs
(the data position is a pure function of data.seed and step, see `inputs.train_batches`).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from bert_jax import checkpoints, inputs, losses, optim, parallel
from bert_jax.data import packing
from bert_jax.heads import BertForPreTraining
from bert_jax.model import IMPLEMENTATION_FIELDS, BertConfig, check_attention_backend
from bert_jax.writers import MetricWriter

State = dict[str, Any]
Batch = dict[str, jax.Array]
MODEL_INPUTS = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions")


# --------------------------------------------------------------------------- the pure functions


def init_state(
    model: BertForPreTraining,
    tx: optax.GradientTransformation,
    rng: jax.Array,
    max_seq_length: int,
    max_predictions_per_seq: int,
    *,
    mesh: Mesh | None = None,
) -> State:
    """Fresh parameters and optimizer state, built inside one jit (never op by op on the host);
    with a `mesh`, directly in their shardings (the full state never sits on one device)."""

    def init(rng):
        init_rng, state_rng = jax.random.split(rng)
        ids_1xS = jnp.zeros((1, max_seq_length), jnp.int32)
        pos_1xP = jnp.zeros((1, max_predictions_per_seq), jnp.int32)
        params = model.init(init_rng, ids_1xS, ids_1xS, ids_1xS, pos_1xP)["params"]
        return {
            "step": jnp.zeros((), jnp.int32),
            "params": params,
            "opt_state": tx.init(params),
            "rng": state_rng,
        }

    if mesh is None:
        return jax.jit(init)(rng)
    return parallel.sharded_init(init, rng, mesh)[0]


def model_outputs(model: BertForPreTraining, params, batch: Batch, **kwargs) -> dict:
    """The pre-training heads' outputs. A causal (left-to-right) model reads the unmasked tokens
    and scores every position; a bidirectional one scores only the masked positions (and, with
    model.fused_mlm_loss, returns their cross-entropy rather than logits)."""
    if model.config.causal:
        inputs = (losses.unmasked_input_ids(batch), batch["input_mask"], batch["segment_ids"])
    else:
        inputs = tuple(batch[k] for k in MODEL_INPUTS)
        kwargs = dict(kwargs, masked_lm_ids=batch["masked_lm_ids"])
    if packing.is_packed(batch):
        kwargs = dict(kwargs, position_ids=batch["position_ids"],
                      next_sentence_positions=batch["next_sentence_positions"])  # fmt: skip
    return model.apply({"params": params}, *inputs, **kwargs)


def dropout_rng(state: State, config: BertConfig, axis_name: str | None = None) -> jax.Array:
    """The step's dropout key: fold_in(rng, step) (and the device index under pmap), as a key
    of config.dropout_rng's generator."""
    rng = jax.random.fold_in(state["rng"], state["step"])
    if axis_name is not None:
        rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
    if config.dropout_rng == "rbg":
        rng = jax.random.wrap_key_data(jax.random.bits(rng, (4,), jnp.uint32), impl="rbg")
    return rng


def train_step(
    state: State,
    batch: Batch,
    *,
    model: BertForPreTraining,
    optimizer: optax.GradientTransformation,
    next_sentence: bool = True,
    axis_name: str | None = None,
    norms_every: int = 1,
) -> tuple[State, dict[str, jax.Array]]:
    """One optimizer step on the masked-LM + NSP loss. Pure: same inputs, same outputs.

    With `axis_name` (inside pmap) each device holds a slice of the global batch; the loss
    denominators are the *global* numbers of masked tokens and examples (psum), and gradients are
    summed, so the update equals the single-device update on the whole batch.
    `next_sentence=False` (data without NSP) leaves the NSP head out of the loss; a causal model
    (model.config.causal) is trained as a left-to-right LM instead of a masked LM.
    The metrics `param_norm` and `update_norm` cost a pass over the parameters each (~3% of a
    BERT-mini step on CPU): they are computed after steps whose number is a multiple of
    `norms_every`, NaN after the others (the loop passes train.log_every).
    """
    rng = dropout_rng(state, model.config, axis_name)

    def psum(x):
        return x if axis_name is None else jax.lax.psum(x, axis_name)

    def loss_fn(params):
        outputs = model_outputs(model, params, batch, deterministic=False, rngs={"dropout": rng})
        sums = losses.pretraining_sums(
            outputs, batch, causal=model.config.causal, next_sentence=next_sentence
        )
        mlm_weight = jnp.maximum(psum(sums["mlm_weight"]), 1e-8)
        nsp_weight = jnp.maximum(psum(sums["nsp_weight"]), 1e-8)
        return sums["mlm_loss"] / mlm_weight + sums["nsp_loss"] / nsp_weight, sums

    grads, sums = jax.grad(loss_fn, has_aux=True)(state["params"])
    grads, sums = psum(grads), psum(sums)
    metrics = losses.pretraining_metrics(sums)
    metrics["grad_norm"] = optax.tree.norm(grads)
    # A non-finite loss or gradient skips the update: params and optimizer state stay as they
    # were (the loop counts skipped steps and stops after train.max_skipped_steps in a row;
    # accumulating, optim.update_if_finite adds zeros to the window instead).
    finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
    norms_now = norms_every == 1 or (state["step"] + 1) % norms_every == 0
    params, opt_state, metrics["update_norm"] = optim.update_if_finite(
        optimizer, finite, grads, state["opt_state"], state["params"], with_norm=norms_now
    )
    metrics["skipped"] = 1.0 - finite.astype(jnp.float32)
    # Sequences trained on: the rows, or the instances of packed rows (data/packing.py).
    rows = batch["input_ids"].shape[0]
    metrics["sequences"] = psum(jnp.sum(batch.get("next_sentence_weights", jnp.ones(rows))))
    metrics["param_norm"] = optim.norm_if(norms_now, lambda: optax.tree.norm(params))
    new_state = {
        "step": state["step"] + 1,
        "params": params,
        "opt_state": opt_state,
        "rng": state["rng"],
    }
    return new_state, metrics


def eval_step(
    params,
    batch: Batch,
    *,
    model: BertForPreTraining,
    next_sentence: bool = True,
    axis_name: str | None = None,
):
    """Loss/accuracy sums on one batch (no dropout); padding examples carry example_weights 0."""
    outputs = model_outputs(model, params, batch)
    sums = losses.pretraining_sums(
        outputs, batch, causal=model.config.causal, next_sentence=next_sentence
    )
    return sums if axis_name is None else jax.lax.psum(sums, axis_name)


# --------------------------------------------------------------------------- the loop


# Fields of the `model` section that still apply on top of an init checkpoint's architecture.
RUN_FIELDS = ("hidden_dropout_prob", "attention_probs_dropout_prob", *IMPLEMENTATION_FIELDS)


def model_config(
    config: ml_collections.ConfigDict, vocab_file: str, init: BertConfig | None = None
) -> BertConfig:
    """BertConfig from the `model` section; vocab_size 0 is read from the vocab file.

    With an init checkpoint (`init`), the architecture is the checkpoint's own; only the
    RUN_FIELDS (dropout, compute dtype and the other implementation choices) are taken from
    the config.
    """
    fields = {k: v for k, v in config.model.items() if k != "size"}
    if init is not None:
        fields = {**dataclasses.asdict(init), **{k: fields[k] for k in RUN_FIELDS}}
    vocab_in_file = inputs.count_vocab(vocab_file) if vocab_file else None
    if not fields["vocab_size"]:
        if vocab_in_file is None:
            raise ValueError("model.vocab_size=0 needs data.vocab_file (or data.dir) to count it.")
        fields["vocab_size"] = vocab_in_file
    elif vocab_in_file is not None and fields["vocab_size"] < vocab_in_file:
        raise ValueError(
            f"model.vocab_size={fields['vocab_size']} is smaller than the {vocab_in_file} "
            f"tokens of {vocab_file}; token ids would fall outside the embedding table. "
            "Set it to 0 (auto)."
        )
    return BertConfig.from_dict(fields)


def check_config(config: ml_collections.ConfigDict, n_devices: int):
    """Errors that would otherwise surface late (after compiling) or silently."""
    d, t = config.data, config.train
    if d.max_predictions_per_seq > d.max_seq_length:
        raise ValueError(
            f"data.max_predictions_per_seq={d.max_predictions_per_seq} exceeds "
            f"data.max_seq_length={d.max_seq_length}."
        )
    if d.phase2_step:
        if d.phase2_max_seq_length > config.model.max_position_embeddings:
            raise ValueError(
                f"data.phase2_max_seq_length={d.phase2_max_seq_length} exceeds "
                f"model.max_position_embeddings={config.model.max_position_embeddings}."
            )
        if d.phase2_max_predictions_per_seq > d.phase2_max_seq_length:
            raise ValueError(
                f"data.phase2_max_predictions_per_seq={d.phase2_max_predictions_per_seq} exceeds "
                f"data.phase2_max_seq_length={d.phase2_max_seq_length}."
            )
        if d.phase2_step >= config.train.num_train_steps:
            raise ValueError(
                f"data.phase2_step={d.phase2_step} is not before train.num_train_steps="
                f"{config.train.num_train_steps}: phase 2 would never start. The paper switches "
                "after 90% of the steps."
            )
    if d.max_seq_length > config.model.max_position_embeddings:
        raise ValueError(
            f"data.max_seq_length={d.max_seq_length} exceeds model.max_position_embeddings="
            f"{config.model.max_position_embeddings}."
        )
    for name in ("batch_size", "eval_batch_size"):
        if t[name] % n_devices:
            raise ValueError(
                f"train.{name}={t[name]} is not divisible by the {n_devices} devices; "
                f"use a multiple of {n_devices}."
            )
    for name in ("num_train_steps", "log_every", "eval_every", "checkpoint_every",
                 "keep_checkpoints", "max_skipped_steps"):  # fmt: skip
        if t[name] < 1:
            raise ValueError(f"train.{name}={t[name]}; it must be at least 1.")
    if t.prefetch_batches < 0:
        raise ValueError(f"train.prefetch_batches={t.prefetch_batches}; use 0 (off) or more.")
    optim.make_optimizer(config.optimizer, t.num_train_steps)  # checked before any data
    k = config.optimizer.get("grad_accum_steps", 1)
    if not 0 <= t.stop_at_step <= t.num_train_steps:
        raise ValueError(
            f"train.stop_at_step={t.stop_at_step}; use 0 (run to the end) or a step up to "
            f"train.num_train_steps={t.num_train_steps}."
        )
    for name in ("num_train_steps", "log_every"):
        # The last window must end with the run (else its micro-batches are never applied), and
        # log lines fall on update steps (where the update norm is measured).
        if t[name] % k:
            raise ValueError(
                f"train.{name}={t[name]} is not a multiple of optimizer.grad_accum_steps={k}."
            )
    if d.pack_sequences < 0:
        raise ValueError(f"data.pack_sequences={d.pack_sequences}; use 0 (off) or 2 and more.")
    if d.pack_sequences > 1 and (config.model.causal or d.dynamic_masking):
        raise ValueError(
            f"data.pack_sequences={d.pack_sequences} packs statically masked instances for a "
            "bidirectional model; it cannot be combined with model.causal=True or "
            "data.dynamic_masking=True. Set data.pack_sequences=0."
        )
    # The architecture (heads dividing hidden, dtype, ...) before anything is built; the vocab
    # size may still be 0 here (read from the vocab file later).
    fields = {k: v for k, v in config.model.items() if k != "size"}
    BertConfig.from_dict({**fields, "vocab_size": fields["vocab_size"] or 1})
    check_attention_backend(config.model.attention)


def evaluate(
    par: parallel.Parallel, state: State, batches: Iterator, model_cfg: BertConfig
) -> dict[str, float]:
    """MLM/NSP loss and accuracy over `batches`, aggregated exactly from sums."""
    totals = None
    for i, batch in enumerate(batches):
        inputs.check_batch(
            batch, model_cfg.vocab_size, f"evaluation batch {i}", model_cfg.type_vocab_size
        )
        sums = par.get_metrics(par.eval(state["params"], par.put_batch(batch)))
        totals = sums if totals is None else jax.tree_util.tree_map(jnp.add, totals, sums)
    if totals is None:
        raise ValueError("the evaluation set is empty: check data.eval_files.")
    return {k: float(v) for k, v in losses.pretraining_metrics(jax.device_get(totals)).items()}


def _fmt(m: dict[str, float]) -> str:
    return (
        f"loss {m['loss']:.4f}  mlm_acc {m['mlm_accuracy']:.4f} (hidden "
        f"{m.get('mlm_hidden_accuracy', np.nan):.4f})  nsp_acc {m['nsp_accuracy']:.4f}  "
        f"mlm_loss {m['mlm_loss']:.4f}"
    )


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Pre-trains in `workdir`; rerunning with the same workdir resumes. Returns results."""
    t = config.train
    mode = parallel.resolve(t.parallel)
    mesh = parallel.make_mesh(t.mesh_data, t.mesh_fsdp, t.mesh_tensor) if mode == "mesh" else None
    # Config mistakes and an unwritable workdir fail here, before data is prepared or compiled.
    check_config(config, parallel.batch_divisor(mode, mesh))
    options = parallel.compiler_options(t.get("compiler_options", ""))
    checkpoints.check_writable(workdir)
    init = None
    if config.init_checkpoint:
        from bert_jax import convert  # noqa: PLC0415

        init = convert.load_pretrained(config.init_checkpoint)
    config = inputs.resolve_data(config, init.vocab_file if init else None)
    if not config.data.train_files:
        raise ValueError("data.train_files is empty: set it, or data.dir, or data.corpus.")
    model_cfg = model_config(config, config.data.vocab_file, init.config if init else None)
    model = BertForPreTraining(model_cfg)
    end_step = t.stop_at_step or t.num_train_steps
    tx, schedule = optim.make_optimizer(config.optimizer, t.num_train_steps)
    if config.optimizer.warmup_steps >= t.num_train_steps:
        log(
            f"note: optimizer.warmup_steps={config.optimizer.warmup_steps} >= "
            f"train.num_train_steps={t.num_train_steps}: the learning rate never reaches "
            f"optimizer.learning_rate={config.optimizer.learning_rate}."
        )
    d = config.data
    # The workdir's own files go through tf.io.gfile, as Orbax's checkpoints go through epath:
    # a gs:// workdir (a TPU pod's) is a bucket, not a local folder named "gs:".
    from tensorflow.io import gfile  # noqa: PLC0415 (TF is heavy; the data pipeline needs it)

    gfile.makedirs(workdir)
    if jax.process_index() == 0:
        with gfile.GFile(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))

    # Resume order: this workdir's newest checkpoint > config.init_checkpoint > fresh init.
    state = init_state(
        model,
        tx,
        jax.random.PRNGKey(t.seed),
        d.max_seq_length,
        d.max_predictions_per_seq,
        mesh=mesh,
    )
    ckpt = checkpoints.Checkpointer(
        os.path.join(workdir, "checkpoints"),
        save_every=t.checkpoint_every,
        keep=t.keep_checkpoints,
        log=log,
    )
    checkpoints.check_room(ckpt.directory, state)
    restored = ckpt.restore(checkpoints.abstract_like(state))
    if restored is not None:
        state = restored
    elif init is not None:
        state = _from_init_checkpoint(state, init, tx, config.init_checkpoint, log)
    start_step = int(parallel.to_host(state["step"]))
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(state["params"]))
    log(
        f"model: {model_cfg.num_hidden_layers} layers, hidden {model_cfg.hidden_size}, vocab "
        f"{model_cfg.vocab_size}, {n_params / 1e6:.2f}M params; {mode} on {jax.device_count()} "
        f"device(s) of {jax.process_count()} process(es)"
        + (f", mesh {dict(mesh.shape)}" if mesh else "")
        + "; "
        + (
            f"resumed at step {start_step}"
            if start_step
            else f"from {config.init_checkpoint}"
            if init is not None
            else "from scratch"
        )
    )

    nsp = d.next_sentence
    par = parallel.Parallel(
        mode,
        functools.partial(
            train_step, model=model, optimizer=tx, next_sentence=nsp, norms_every=t.log_every
        ),
        functools.partial(eval_step, model=model, next_sentence=nsp),
        mesh=mesh,
        abstract_state=checkpoints.abstract_like(state),
        compiler_options=options,
    )
    state = par.put_state(state)
    writer = MetricWriter(workdir, start_step)
    start_file = os.path.join(workdir, "eval_start.json")
    if start_step == 0 and d.eval_files:
        start_metrics = evaluate(par, state, inputs.eval_batches(config), model_cfg)
        writer.write(0, "eval", start_metrics)
        if jax.process_index() == 0:
            with gfile.GFile(start_file, "w") as f:
                json.dump(start_metrics, f)
        log(f"eval @ step 0: {_fmt(start_metrics)}")

    def prepare(step_and_batch):  # runs up to train.prefetch_batches steps ahead
        step, batch = step_and_batch
        inputs.check_batch(
            batch, model_cfg.vocab_size, f"training batch of step {step}", model_cfg.type_vocab_size
        )
        return par.put_batch(batch)

    batches = inputs.prefetch(
        zip(itertools.count(start_step), inputs.train_batches(config, start_step)),
        t.prefetch_batches,
        prepare,
    )
    pending = None
    monitor = StepMonitor(t.max_skipped_steps, log)
    t_log, step_log = time.time(), start_step  # throughput is measured from here
    last_saved = start_step
    try:
        # One process: SIGTERM is caught here. Several: jax.distributed's own handler and
        # Orbax's preemption policy agree on a step where every host saves (see below).
        flag = SignalFlag(signal.SIGTERM if jax.process_count() == 1 else None)
        with flag as preempted:
            for step in range(start_step, end_step):
                state, metrics = par.train(state, next(batches))
                # Fetch the previous step's metrics only now, while this step runs.
                if pending is not None:
                    monitor.add(jax.device_get(par.get_metrics(pending)), step)
                pending = metrics
                done = step + 1
                if step == start_step:
                    log(f"first step (includes compilation) took {time.time() - t_log:.1f}s")
                    t_log, step_log = time.time(), done  # throughput leaves compilation out
                if done % t.log_every == 0 or done == end_step:
                    monitor.add(jax.device_get(par.get_metrics(pending)), done)
                    pending = None
                    mean = monitor.window_mean()
                    mean.update(skipped_steps=monitor.skipped, learning_rate=float(schedule(step)))
                    speed = ""
                    if done > step_log:  # (none for a line of the first step alone)
                        steps_per_s = (done - step_log) / (time.time() - t_log)
                        mean.update(
                            steps_per_sec=steps_per_s,
                            seqs_per_sec=steps_per_s * mean.get("sequences", np.nan),
                        )
                        eta = (end_step - done) / steps_per_s
                        speed = (
                            f"  {steps_per_s:.2f} steps/s  {mean['seqs_per_sec']:.0f} seq/s  "
                            f"ETA {eta / 60:.1f} min"
                        )
                    writer.write(done, "train", mean)
                    log(f"step {done}/{end_step}  {_fmt(mean)}{speed}")
                    t_log, step_log = time.time(), done
                if d.eval_files and done % t.eval_every == 0 and done != end_step:
                    m = evaluate(par, state, inputs.eval_batches(config, done), model_cfg)
                    writer.write(done, "eval", m)
                    log(f"eval @ step {done}: {_fmt(m)}")
                    t_log, step_log = time.time(), done  # keep evaluation out of the throughput
                if preempted.raised and done != end_step:
                    ckpt.save(done, par.get_state(state), force=True)
                    log(f"SIGTERM: saved step {done}; rerun the same command to resume from it")
                    raise Preempted(done)
                if ckpt.manager.should_save(done) and ckpt.save(done, par.get_state(state)):
                    last_saved = done
                    if ckpt.manager.reached_preemption(done):
                        log(f"preemption: saved step {done} on every host; rerun to resume")
                        raise Preempted(done)

        final_state = par.get_state(state)
        if last_saved != end_step:
            ckpt.save(end_step, final_state, force=True)
    finally:
        batches.close()  # stops the prefetch thread
        ckpt.close()  # waits until the async saves are committed, also when a step raised
    results = {"step": int(parallel.to_host(final_state["step"]))}
    if d.eval_files:
        results["end"] = evaluate(
            par, state, inputs.eval_batches(config, results["step"]), model_cfg
        )
        writer.write(results["step"], "eval", results["end"])
        if gfile.exists(start_file):
            with gfile.GFile(start_file) as f:
                results["start"] = json.load(f)
        log(f"eval @ step {results['step']}: {_fmt(results['end'])}")
        if "start" in results:
            log(_summary(results["start"], results["end"], results["step"]))
    writer.close()
    if jax.process_index() == 0:
        with gfile.GFile(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
    results["state"] = final_state
    return results


def _from_init_checkpoint(state: State, init, tx, path: str, log) -> State:
    """Params from a converted/pre-trained checkpoint; heads it lacks stay freshly initialised."""
    from bert_jax import convert  # noqa: PLC0415

    params, report = convert.merge_params(state["params"], init.params)
    fresh = report.get("initialised fresh", [])
    log(
        f"init_checkpoint {path}: {len(jax.tree_util.tree_leaves(params)) - len(fresh)} tensors "
        f"loaded; initialised fresh: {fresh or 'none'}; unused: {report.get('unused') or 'none'}"
    )
    # The optimizer starts anew: its moments belong to another run (or do not exist). Built in
    # the shardings of the fresh state's (on a mesh, like the params'): left to itself, jit puts
    # the moments, zeros that depend on no input's sharding, whole on one device.
    shardings = jax.tree_util.tree_map(lambda x: x.sharding, state["opt_state"])
    opt_state = jax.jit(tx.init, out_shardings=shardings)(params)
    return {**state, "params": params, "opt_state": opt_state}


def _summary(start: dict[str, float], end: dict[str, float], step: int) -> str:
    rows = [f"{'held-out eval':<19} {'step 0':>10} {f'step {step}':>10}"]
    keys = ("mlm_accuracy", "mlm_hidden_accuracy", "nsp_accuracy", "mlm_loss", "nsp_loss", "loss",
            "mlm_perplexity")  # fmt: skip
    for k in keys:
        if k in start and k in end:  # (an eval_start.json older than some of the metrics)
            rows.append(f"{k:<19} {start[k]:>10.4f} {end[k]:>10.4f}")
    return "\n".join(rows)


class StepMonitor:
    """The host's view of the steps' metrics: the window of finite steps since the last log line,
    and the count of consecutive skipped (non-finite) steps, which stops the run at `limit`."""

    def __init__(self, limit: int, log: Callable[[str], None]):
        self.limit, self.log = limit, log
        self.window: list[dict[str, float]] = []
        self.streak = self.skipped = 0

    def add(self, metrics: dict[str, np.ndarray], step: int) -> None:
        m = {k: float(v) for k, v in metrics.items()}
        if not m.get("skipped"):
            self.streak = 0
            self.window.append(m)
            return
        self.streak += 1
        self.skipped += 1
        self.log(
            f"step {step}: non-finite loss {m['loss']} or gradient norm {m['grad_norm']}; the "
            f"update was skipped ({self.streak} in a row, {self.skipped} in this run)"
        )
        if self.streak >= self.limit:
            raise FloatingPointError(
                f"{self.streak} consecutive steps up to step {step} had a non-finite loss or "
                "gradient (train.max_skipped_steps); no update was applied, so the parameters "
                "and the last checkpoint are intact. Lower optimizer.learning_rate, check the "
                "data, or use model.dtype=float32."
            )

    def window_mean(self) -> dict[str, float]:
        """Means over the finite steps since the last call (NaN if all were skipped). A metric
        some steps leave NaN (train_step's norms) is averaged over the others, and left out
        where none has it."""
        window, self.window = self.window, []
        if not window:
            return dict.fromkeys(("loss", "mlm_accuracy", "nsp_accuracy", "mlm_loss"), np.nan)
        values = {k: [w[k] for w in window if not np.isnan(w[k])] for k in window[0]}
        return {k: float(np.mean(v)) for k, v in values.items() if v}


class Preempted(SystemExit):
    """Raised after the checkpoint of a SIGTERM'd run is saved: exit status 143 (128 + 15), so
    that launchers and schedulers see an unfinished job (and rerun it)."""

    def __init__(self, step: int):
        super().__init__(143)
        self.step = step


class SignalFlag:
    """`with SignalFlag(signal.SIGTERM) as flag:` sets flag.raised when the signal arrives,
    instead of killing the process mid-step; the previous handler is restored on exit."""

    def __init__(self, signum: int | None):
        self.signum, self.raised, self._previous = signum, False, None

    def __enter__(self) -> SignalFlag:
        # (signum None: a flag that is never raised.) Signals reach only the main thread.
        if self.signum is not None and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(self.signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.raised = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(self.signum, self._previous)
