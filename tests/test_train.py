"""The train step: overfitting, pmap == jit, losses and optimizer pieces, config files."""

import dataclasses
import functools
import glob
import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from bert_jax import losses, optim, parallel, train
from bert_jax.heads import BertForPreTraining
from bert_jax.model import BertConfig

CFG = BertConfig(
    vocab_size=64,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=32,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)
S, P = 16, 4


def fake_batch(batch=8, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, CFG.vocab_size, (batch, S)).astype(np.int32)
    lengths = rng.integers(S // 2, S + 1, batch)
    mask = (np.arange(S)[None] < lengths[:, None]).astype(np.int32)
    pos = np.sort(
        np.stack([rng.choice(np.arange(1, S // 2), P, replace=False) for _ in range(batch)]), axis=1
    ).astype(np.int32)
    n_real = rng.integers(1, P + 1, batch)  # a varying number of real predictions per example
    weights = (np.arange(P)[None] < n_real[:, None]).astype(np.float32)
    return {
        "input_ids": ids * mask,
        "input_mask": mask,
        "segment_ids": np.zeros_like(ids),
        "masked_lm_positions": pos * (weights > 0),
        "masked_lm_ids": np.take_along_axis(ids, pos, 1) * (weights > 0),
        "masked_lm_weights": weights,
        "next_sentence_labels": rng.integers(0, 2, batch).astype(np.int32),
    }


def opt_config(**kw):
    c = ml_collections.ConfigDict(
        dict(
            name="adamw",
            learning_rate=1e-3,
            warmup_steps=0,
            b1=0.9,
            b2=0.999,
            eps=1e-6,
            weight_decay=0.01,
            grad_clip_norm=1.0,
            grad_accum_steps=1,
        )
    )
    c.update(kw)
    return c


def setup(total_steps=100, **opt_kw):
    model = BertForPreTraining(CFG)
    tx, _ = optim.make_optimizer(opt_config(**opt_kw), total_steps)
    state = train.init_state(model, tx, jax.random.PRNGKey(0), S, P)
    return model, tx, state


def test_overfits_a_fixed_batch():
    model, tx, state = setup(total_steps=10_000, learning_rate=3e-3)
    step = jax.jit(functools.partial(train.train_step, model=model, optimizer=tx))
    batch = fake_batch()
    first = None
    for _ in range(150):
        state, m = step(state, batch)
        first = first if first is not None else float(m["loss"])
    last = float(m["loss"])
    assert last < 0.1 * first, (first, last)
    assert int(state["step"]) == 150


def _copy_task_batch(rng, batch=32, mask_id=3):
    """Sequences whose second half repeats the first; masked tokens sit in the second half, so
    only attention to the matching position in the first half can predict them."""
    half = rng.integers(5, CFG.vocab_size, (batch, S // 2))
    ids = np.concatenate([half, half], 1).astype(np.int32)
    pos = np.sort(
        np.stack([rng.choice(np.arange(S // 2, S), P, replace=False) for _ in range(batch)]), 1
    ).astype(np.int32)
    labels = np.take_along_axis(ids, pos, 1)
    np.put_along_axis(ids, pos, mask_id, 1)
    return {
        "input_ids": ids,
        "input_mask": np.ones_like(ids),
        "segment_ids": np.zeros_like(ids),
        "masked_lm_positions": pos,
        "masked_lm_ids": labels,
        "masked_lm_weights": np.ones(pos.shape, np.float32),
        "next_sentence_labels": np.zeros(batch, np.int32),
    }


def test_learns_a_task_only_context_solves():
    """Fresh batches every step (no memorising): the masked LM must learn to read other
    positions. Unigram guessing scores 1/59; this model leaves that plateau near step 300."""
    model, tx, state = setup(total_steps=10_000, learning_rate=3e-3)
    step = jax.jit(functools.partial(train.train_step, model=model, optimizer=tx))
    rng = np.random.default_rng(0)
    accuracy, hidden = [], []
    for _ in range(500):
        state, m = step(state, _copy_task_batch(rng))
        accuracy.append(float(m["mlm_accuracy"]))
        hidden.append(float(m["mlm_hidden_accuracy"]))
    assert np.mean(accuracy[:50]) < 0.1, accuracy[:50]
    assert np.mean(accuracy[-20:]) > 0.95, accuracy[-20:]
    assert hidden == accuracy  # every target is behind [MASK]: all of them are hidden


def test_pmap_step_equals_jit_step_on_8_devices():
    assert jax.local_device_count() == 8, "tests/conftest.py should create 8 fake CPU devices"
    model, tx, state = setup()
    batch = fake_batch(batch=16)
    steps = (
        functools.partial(train.train_step, model=model, optimizer=tx),
        functools.partial(train.eval_step, model=model),
    )
    jit_par = parallel.Parallel("jit", *steps)
    pmap_par = parallel.Parallel("pmap", *steps)
    s_jit, m_jit = jit_par.train(jax.tree_util.tree_map(jnp.copy, state), batch)
    s_pmap, m_pmap = pmap_par.train(pmap_par.put_state(state), pmap_par.put_batch(batch))
    s_pmap, m_pmap = pmap_par.get_state(s_pmap), pmap_par.get_metrics(m_pmap)
    for a, b in zip(
        jax.tree_util.tree_leaves(s_jit["params"]),
        jax.tree_util.tree_leaves(s_pmap["params"]),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    # The update moved the params (so the comparison above is not of two untouched copies).
    moved = [
        np.abs(np.asarray(a) - np.asarray(b)).max()
        for a, b in zip(
            jax.tree_util.tree_leaves(s_jit["params"]),
            jax.tree_util.tree_leaves(state["params"]),
            strict=True,
        )
    ]
    assert max(moved) > 1e-4
    np.testing.assert_allclose(m_jit["loss"], m_pmap["loss"], rtol=1e-6)
    np.testing.assert_allclose(m_jit["mlm_accuracy"], m_pmap["mlm_accuracy"], rtol=1e-6)


def test_compiler_options_are_parsed_checked_and_reach_the_step(tmp_path):
    opts = parallel.compiler_options(
        " xla_cpu_prefer_vector_width=512,xla_cpu_enable_fast_math=false"
    )
    assert opts == {"xla_cpu_prefer_vector_width": 512, "xla_cpu_enable_fast_math": False}
    assert parallel.compiler_options("") == {}
    with pytest.raises(ValueError, match="'xla_cpu_prefer_vector_width' is not name=value"):
        parallel.compiler_options("xla_cpu_prefer_vector_width")
    # A misspelt option fails when parsed, naming XLA's reason, before a run writes anything.
    with pytest.raises(ValueError, match="XLA rejects it.*xla_cpu_prefer_vector_widht"):
        parallel.compiler_options("xla_cpu_prefer_vector_widht=512")
    from configs import pretrain

    config = pretrain.get_config("size=tiny,demo")
    config.train.compiler_options = "xla_cpu_no_such_option=1"
    with pytest.raises(ValueError, match="train.compiler_options="):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()

    model, tx, state = setup()
    batch = fake_batch()
    steps = (
        functools.partial(train.train_step, model=model, optimizer=tx),
        functools.partial(train.eval_step, model=model),
    )
    # The options reach XLA when the step compiles (an unchecked bad one fails there) ...
    bad = parallel.Parallel("jit", *steps, compiler_options={"xla_cpu_no_such_option": 1})
    with pytest.raises(Exception, match="xla_cpu_no_such_option"):
        bad.train(jax.tree_util.tree_map(jnp.copy, state), batch)
    # ... a good one compiles the same step, which computes the same update ...
    plain, wide = (
        parallel.Parallel("jit", *steps),
        parallel.Parallel("jit", *steps, compiler_options=opts),
    )
    s_plain, m_plain = plain.train(jax.tree_util.tree_map(jnp.copy, state), batch)
    s_wide, m_wide = wide.train(jax.tree_util.tree_map(jnp.copy, state), batch)
    np.testing.assert_allclose(m_wide["loss"], m_plain["loss"], rtol=1e-6)
    for a, b in zip(
        jax.tree_util.tree_leaves(s_wide), jax.tree_util.tree_leaves(s_plain), strict=True
    ):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    # ... and pmap, which takes no compile options, says so.
    with pytest.raises(ValueError, match="needs train.parallel='jit' or 'mesh'"):
        parallel.Parallel("pmap", *steps, compiler_options=opts)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"dropout_rng": "rbg"},
        {"dropout_rng": "hash"},
        {"dropout_rng": "hash", "scan_layers": True},
    ],
    ids=str,
)
def test_dropout_rng_depends_on_step_not_on_call(options):
    """Same state and batch -> same result (pure); the next step draws a different mask; for
    every dropout generator, with the layers unrolled or scanned."""
    cfg = BertConfig(
        **{
            **CFG.__dict__,
            "hidden_dropout_prob": 0.5,
            "attention_probs_dropout_prob": 0.5,
            **options,
        }
    )
    model = BertForPreTraining(cfg)
    tx, _ = optim.make_optimizer(opt_config(), 100)
    state = train.init_state(model, tx, jax.random.PRNGKey(0), S, P)
    step = jax.jit(functools.partial(train.train_step, model=model, optimizer=tx))
    batch = fake_batch()
    _, m1 = step(state, batch)
    _, m2 = step(state, batch)
    assert float(m1["loss"]) == float(m2["loss"])
    shifted = {**state, "step": state["step"] + 1}
    _, m3 = step(shifted, batch)
    assert float(m3["loss"]) != float(m1["loss"])
    without = BertForPreTraining(dataclasses.replace(cfg, hidden_dropout_prob=0.0,
                                                     attention_probs_dropout_prob=0.0))  # fmt: skip
    step0 = jax.jit(functools.partial(train.train_step, model=without, optimizer=tx))
    assert float(step0(state, batch)[1]["loss"]) != float(m1["loss"])  # dropout did something


def test_loss_sums_hand_checked():
    # Two positions, vocab 3: logits chosen so that probabilities are known in closed form.
    logits = jnp.log(jnp.array([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]]))
    labels = jnp.array([[0, 1]])
    s, w = losses.weighted_cross_entropy(logits, labels, jnp.array([[1.0, 1.0]]))
    np.testing.assert_allclose(s, -np.log(0.5) - np.log(0.1), rtol=1e-6)
    assert float(w) == 2.0
    s, w = losses.weighted_cross_entropy(logits, labels, jnp.array([[1.0, 0.0]]))
    np.testing.assert_allclose(s / w, -np.log(0.5), rtol=1e-6)
    hits, w = losses.weighted_correct(logits, labels, jnp.array([[1.0, 1.0]]))
    assert (float(hits), float(w)) == (1.0, 2.0)  # position 2 predicts 2, label 1


def test_weighted_correct_equals_argmax_hits_and_counts_ties_as_hits():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 6, 50)).astype(np.float32)
    labels = rng.integers(0, 50, (4, 6))
    labels[:, :3] = logits[:, :3].argmax(-1)  # half of them right
    weights = rng.random((4, 6)).astype(np.float32)
    hits, w = losses.weighted_correct(jnp.asarray(logits), jnp.asarray(labels), weights)
    want = np.sum((logits.argmax(-1) == labels) * weights)
    np.testing.assert_allclose(float(hits), want, rtol=1e-6)
    np.testing.assert_allclose(float(w), weights.sum(), rtol=1e-6)
    tie = jnp.array([[[1.0, 3.0, 3.0]]])  # argmax says 1; label 2 shares the largest logit
    assert float(losses.weighted_correct(tie, jnp.array([[2]]), jnp.ones((1, 1)))[0]) == 1.0


def test_hidden_accuracy_counts_only_what_context_must_predict():
    """Three masked positions: [MASK] (id 4), kept (the answer is visible), a random token.
    The model copies what it sees: right at the kept one only. mlm_accuracy 1/3 hides that
    the two predictions context must make are both wrong."""
    ids = np.array([[2, 4, 7, 9, 3]])
    batch = {
        "input_ids": ids,
        "masked_lm_positions": np.array([[1, 2, 3, 0]]),
        "masked_lm_ids": np.array([[8, 7, 6, 0]]),
        "masked_lm_weights": np.array([[1.0, 1.0, 1.0, 0.0]]),
        "next_sentence_labels": np.array([0]),
    }
    copy_logits = jax.nn.one_hot(losses.visible_tokens(batch), 16)  # [1, 4, 16]
    outputs = {"mlm_logits": copy_logits, "nsp_logits": jnp.zeros((1, 2))}
    sums = losses.pretraining_sums(outputs, batch)
    assert float(sums["mlm_hidden_weight"]) == 2.0  # [MASK] and the random 9; not the kept 7
    m = losses.pretraining_metrics(sums)
    np.testing.assert_allclose(m["mlm_accuracy"], 1 / 3, rtol=1e-6)
    assert float(m["mlm_hidden_accuracy"]) == 0.0
    # Predicting the answers everywhere: both accuracies 1.
    outputs["mlm_logits"] = jax.nn.one_hot(batch["masked_lm_ids"], 16)
    m = losses.pretraining_metrics(losses.pretraining_sums(outputs, batch))
    assert float(m["mlm_accuracy"]) == 1.0 and float(m["mlm_hidden_accuracy"]) == 1.0


def test_schedule_and_decay_mask():
    sched = optim.bert_schedule(1e-4, warmup_steps=10, total_steps=100)
    np.testing.assert_allclose(sched(0), 0.0)
    np.testing.assert_allclose(sched(5), 0.5e-4, rtol=1e-6)
    np.testing.assert_allclose(sched(10), 1e-4 * 0.9, rtol=1e-6)  # original: decay from step 0
    np.testing.assert_allclose(sched(100), 0.0)
    _, _, state = setup()
    mask = optim.decay_mask(state["params"])
    assert mask["bert"]["encoder"]["layer_0"]["attention"]["self"]["query"]["kernel"]
    assert mask["bert"]["embeddings"]["word_embeddings"]["embedding"]
    assert not mask["bert"]["encoder"]["layer_0"]["attention"]["self"]["query"]["bias"]
    assert not mask["bert"]["embeddings"]["LayerNorm"]["scale"]
    assert not mask["cls"]["predictions"]["output_bias"]


def test_weight_decay_skips_layernorm_and_bias():
    """With zero gradients, AdamW only decays: LayerNorm/bias stay, kernels shrink."""
    _, tx, state = setup(total_steps=100, learning_rate=1e-1, weight_decay=0.5)
    params = state["params"]
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, state["opt_state"], params)
    # Step 0 of the schedule has lr 0 only with warmup; here warmup=0 so lr = 0.1 * (1 - 0).
    new = optax.apply_updates(params, updates)
    ln = "bert", "embeddings", "LayerNorm", "scale"
    k = "bert", "encoder", "layer_0", "intermediate", "dense", "kernel"
    get = lambda t, path: functools.reduce(lambda d, key: d[key], path, t)  # noqa: E731
    np.testing.assert_array_equal(get(new, ln), get(params, ln))
    np.testing.assert_allclose(get(new, k), get(params, k) * (1 - 0.1 * 0.5), rtol=1e-6)


@pytest.mark.parametrize("finite", [True, False])
def test_update_if_finite_updates_or_keeps_everything(finite):
    """One optax step and the norm of the change it made, or (a non-finite gradient) the old
    params and optimizer state and norm 0."""
    _, tx, state = setup(total_steps=100, learning_rate=1e-2)
    params = state["params"]
    grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.3), params)
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    want = optax.apply_updates(params, updates) if finite else params
    want_state = opt_state if finite else state["opt_state"]
    got, got_state, norm = jax.jit(optim.update_if_finite, static_argnums=0)(
        tx, jnp.asarray(finite), grads, state["opt_state"], params
    )
    for a, b in zip(jax.tree_util.tree_leaves((got, got_state)),
                    jax.tree_util.tree_leaves((want, want_state)), strict=True):  # fmt: skip
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(norm, optax.tree.norm(updates) if finite else 0.0, rtol=1e-4)


def test_norms_every_computes_the_norms_only_after_every_kth_step():
    """With norms_every=3 the steps are those of norms_every=1 (same params, same loss and
    gradient norm); param_norm and update_norm are NaN after steps 1, 2, 4, 5 and, after steps
    3 and 6, the norms of the params and of the change the step made."""
    model, tx, state = setup(total_steps=100, learning_rate=1e-2)
    steps = {k: jax.jit(functools.partial(train.train_step, model=model, optimizer=tx,
                                          norms_every=k)) for k in (1, 3)}  # fmt: skip
    states = dict.fromkeys(steps, state)
    for n in range(1, 7):
        before = states[1]["params"]
        metrics = {}
        for k, step in steps.items():
            states[k], metrics[k] = step(states[k], fake_batch(seed=n))
        for a, b in zip(*(jax.tree_util.tree_leaves(states[k]) for k in steps), strict=True):
            np.testing.assert_array_equal(a, b)
        for key in ("loss", "grad_norm", "mlm_accuracy"):
            assert float(metrics[1][key]) == float(metrics[3][key]), key
        change = optax.tree.norm(jax.tree_util.tree_map(jnp.subtract, states[1]["params"], before))
        np.testing.assert_allclose(metrics[1]["update_norm"], change, rtol=1e-5)
        np.testing.assert_allclose(metrics[1]["param_norm"], optax.tree.norm(states[1]["params"]))
        for key in ("param_norm", "update_norm"):
            if n % 3:
                assert np.isnan(metrics[3][key]), (n, key)
            else:
                assert float(metrics[3][key]) == float(metrics[1][key]), (n, key)


def test_window_mean_averages_a_metric_over_the_steps_that_have_it():
    monitor = train.StepMonitor(limit=3, log=print)
    for step, norm in enumerate([np.nan, 2.0, np.nan, 4.0]):
        monitor.add({"loss": float(step), "param_norm": norm, "skipped": 0.0}, step)
    assert monitor.window_mean() == {"loss": 1.5, "param_norm": 3.0, "skipped": 0.0}
    monitor.add({"loss": 1.0, "param_norm": np.nan, "skipped": 0.0}, 5)
    assert monitor.window_mean() == {"loss": 1.0, "skipped": 0.0}  # none had it: left out


@pytest.mark.parametrize("scale", [0.5, 3.0], ids=["below max_norm", "above"])
def test_clip_by_global_norm_is_berts(scale):
    """t * max_norm / max(norm, max_norm): the gradients themselves below the threshold, and
    optax's clipping (a global norm of max_norm) up to rounding above it."""
    grads = {"a": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(4)}
    grads = jax.tree_util.tree_map(lambda t: t * scale / optax.tree.norm(grads), grads)
    got, _ = optim.clip_by_global_norm(1.0).update(grads, optax.EmptyState())
    want, _ = optax.clip_by_global_norm(1.0).update(grads, optax.EmptyState())
    for a, b, g in zip(*map(jax.tree_util.tree_leaves, (got, want, grads)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
        if scale < 1:
            np.testing.assert_array_equal(a, g)
    np.testing.assert_allclose(optax.tree.norm(got), min(scale, 1.0), rtol=1e-6)


CONFIG_FILES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "configs", "*.py")))


@pytest.mark.parametrize(
    "path",
    [p for p in CONFIG_FILES if not p.endswith(("__init__.py", "common.py", "finetune.py"))],
)
@pytest.mark.parametrize("arg", ["size=tiny,demo", "size=base", "size=large,seq=512"])
def test_every_pretraining_config_builds(path, arg):
    spec = importlib.util.spec_from_file_location("cfg", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg)
    fields = {k: v for k, v in config.model.items() if k != "size"}
    fields["vocab_size"] = fields["vocab_size"] or 30522
    model = BertForPreTraining(BertConfig.from_dict(fields))
    tx, _ = optim.make_optimizer(config.optimizer, config.train.num_train_steps)
    s, p = config.data.max_seq_length, config.data.max_predictions_per_seq
    # Shapes only: builds the full state abstractly, even for BERT-large, in milliseconds.
    abstract = jax.eval_shape(lambda: train.init_state(model, tx, jax.random.PRNGKey(0), s, p))
    n = sum(x.size for x in jax.tree_util.tree_leaves(abstract["params"]))
    expected = {"tiny": 4.4e6, "base": 110e6, "large": 335e6}[arg.split(",")[0].split("=")[1]]
    assert abs(n - expected) / expected < 0.05, n


def test_config_arg_typos_are_errors():
    from configs import pretrain

    with pytest.raises(ValueError, match="unknown config arg"):
        pretrain.get_config("sise=base")
    with pytest.raises(ValueError, match="size="):
        pretrain.get_config("size=huge")
    with pytest.raises(ValueError, match="demo='ture'.*true or false"):
        pretrain.get_config("size=tiny,demo=ture")  # was silently False
    assert pretrain.get_config("size=tiny,demo=no").data.corpus == ""


@pytest.mark.parametrize(
    "override, expected",
    [
        ("--config.train.learning_rate=1e-3", "Did you mean --config.optimizer.learning_rate?"),
        ("--config.optimizer.lerning_rate=1e-3", "Did you mean --config.optimizer.learning_rate?"),
        ("--config.data.max_seq_lenght=64", "Did you mean --config.data.max_seq_length"),
        ("--config.nope.nothing=1", "--config.nope.nothing: no such field"),
        ("--config.model.size=base", "the size is the config argument"),  # was ignored
    ],
)
def test_a_misplaced_or_misspelt_override_names_the_field(override, expected):
    from bert_jax import config_overrides

    argv = ["main", "--config=configs/pretrain.py:size=tiny,demo", "--workdir=w", override]
    assert expected in config_overrides.unknown_override(argv)
    ok = ["main", "--config=configs/pretrain.py:size=tiny", "--config.optimizer.learning_rate=1"]
    assert config_overrides.unknown_override(ok + ["--noconfig.data.next_sentence"]) is None


def test_main_reports_config_mistakes_in_one_line(tmp_path):
    def run(*args):
        cmd = [sys.executable, "-m", "bert_jax.main", f"--workdir={tmp_path / 'w'}", *args]
        return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)

    r = run("--config=configs/pretrain.py:size=tiny,demo", "--config.train.learning_rate=1e-3")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: --config.train.learning_rate: no such field in configs/pretrain.py:size=tiny,"
        "demo. Did you mean --config.optimizer.learning_rate? The fields and their comments are "
        "in the config file."
    ]
    r = run("--config=configs/pretrain.py:size=tiny,dmo")
    assert r.returncode == 2 and "unknown config arg 'dmo'" in r.stderr
    # Process flags without a coordinator: every process would train alone (it used to).
    r = run("--config=configs/pretrain.py:size=tiny,demo", "--num_processes=2", "--process_id=1")
    assert r.returncode != 0 and "--coordinator_address" in r.stdout + r.stderr
    assert not (tmp_path / "w").exists()


def test_config_mistakes_are_found_before_any_data_is_read(tmp_path):
    from configs import pretrain

    config = pretrain.get_config("size=tiny")
    for field, value, message in [
        ("optimizer.name", "adam", "optimizer.name='adam'; use one of"),
        ("train.parallel", "dp", "train.parallel='dp'; use 'auto', 'jit', 'pmap' or 'mesh'"),
    ]:
        bad = config.copy_and_resolve_references()
        section, name = field.split(".")
        bad[section][name] = value
        bad.data.train_files = str(tmp_path / "absent-*")  # never reached
        with pytest.raises(ValueError, match=message):
            train.train_and_evaluate(bad, str(tmp_path / "w"), log=lambda line: None)
        assert not (tmp_path / "w").exists()


def test_grad_accumulation_schedule_runs_over_updates():
    # 40 train steps with k=4 are 10 updates: warmup 8 steps = 2 updates, and the rate reaches
    # 0.1 at the last update (it would still be ~75% of the peak if it counted micro-steps).
    cfg = opt_config(grad_accum_steps=4, warmup_steps=8, grad_clip_norm=0.0, learning_rate=1.0)
    tx, schedule = optim.make_optimizer(cfg, 40)
    params = {"w": jnp.ones(())}
    state = tx.init(params)
    for step in range(40):
        updates, state = tx.update({"w": jnp.ones(())}, state, params)
        if step % 4 == 3:  # an update: Adam's step on a constant gradient is -lr (+ decay lr*w)
            assert -float(updates["w"]) == pytest.approx(float(schedule(step)) * 1.01, abs=1e-4)
        else:
            assert float(updates["w"]) == 0.0
    expected = [0.0, 0.5, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    assert [float(schedule(s)) for s in range(3, 40, 4)] == pytest.approx(expected, abs=1e-6)


def test_options_the_existing_data_would_ignore_are_refused(tmp_path):
    """Without data.corpus the records are used as they are: a masking split given on the
    command line that they were not made with used to be ignored silently."""
    from bert_jax import inputs
    from configs import pretrain

    args = {"masking_split": "100/0/0", "next_sentence": False, "dynamic_masking": False,
            "whole_word_mask": "none", "masked_lm_prob": 0.15, "short_seq_prob": 0.1,
            "lowercase": True}  # fmt: skip
    (tmp_path / "stats.json").write_text(json.dumps({"args": args}))
    config = pretrain.get_config("size=tiny")
    config.data.dir = str(tmp_path)
    config.data.next_sentence = False
    inputs.resolve_data(config)  # the defaults take the data as it is (100/0/0 here)
    for key, value, built in [("masking_split", "80/0/20", "100/0/0"),
                              ("next_sentence", True, False),  # NSP on single segments
                              ("whole_word_mask", "wordpiece", "none")]:  # fmt: skip
        bad = config.copy_and_resolve_references()
        bad.data[key] = value
        with pytest.raises(ValueError, match=rf"prepared with {key}={built!r}.*data.{key}="):
            inputs.resolve_data(bad)
    args["dynamic_masking"] = True  # unmasked records: the pipeline masks with the config's split
    (tmp_path / "stats.json").write_text(json.dumps({"args": args}))
    config.data.masking_split = "80/0/20"
    inputs.resolve_data(config)


def test_data_prepared_with_another_vocabulary_is_refused(tmp_path):
    """Continuing from released weights on a data.dir prepared with its own trained vocab used
    to train silently on ids that name other tokens in the checkpoint's vocabulary."""
    from bert_jax import inputs
    from configs import pretrain

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "stats.json").write_text(json.dumps({"args": {}}))
    (tmp_path / "data" / "vocab.txt").write_text("[PAD]\n[UNK]\nthe\n")
    (tmp_path / "ckpt_vocab.txt").write_text("[PAD]\n[UNK]\na\n")
    (tmp_path / "copy.txt").write_text("[PAD]\n[UNK]\nthe\n")
    config = pretrain.get_config("size=tiny")
    config.data.dir = str(tmp_path / "data")
    with pytest.raises(ValueError, match=r"data was prepared with its vocab.txt, but .*ckpt_vo"):
        inputs.resolve_data(config, init_vocab_file=str(tmp_path / "ckpt_vocab.txt"))
    config.data.vocab_file = str(tmp_path / "ckpt_vocab.txt")  # the same, given explicitly
    with pytest.raises(ValueError, match=r"the records' ids would name other tokens"):
        inputs.resolve_data(config)
    config.data.vocab_file = str(tmp_path / "copy.txt")  # the same tokens: fine
    assert inputs.resolve_data(config).data.vocab_file == str(tmp_path / "copy.txt")
    config.data.vocab_file = ""
    resolved = inputs.resolve_data(config)  # the data's own
    assert resolved.data.vocab_file == str(tmp_path / "data" / "vocab.txt")


def _original_bert_update(params, grads_seq, *, lr, warmup, total, wd=0.01, clip=1.0, eps=1e-6):
    """google-research/bert's optimization.py in float64 NumPy: tf.clip_by_global_norm, then
    AdamWeightDecayOptimizer (no bias correction; decay skipped for LayerNorm and bias)."""
    p = {k: np.array(v, np.float64) for k, v in params.items()}  # a copy
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    for step, raw in enumerate(grads_seq):
        norm = np.sqrt(sum(np.sum(np.square(x, dtype=np.float64)) for x in raw.values()))
        g = {k: np.asarray(x, np.float64) * clip / max(norm, clip) for k, x in raw.items()}
        rate = lr * step / warmup if step < warmup else lr * max(0.0, 1 - step / total)
        for k, x in p.items():
            m[k] = 0.9 * m[k] + 0.1 * g[k]
            v[k] = 0.999 * v[k] + 0.001 * g[k] ** 2
            update = m[k] / (np.sqrt(v[k]) + eps)
            if "LayerNorm" not in k and not k.endswith("bias"):
                update += wd * x
            np.subtract(x, rate * update, out=x)
    return p


def test_bert_adamw_is_the_original_update():
    """optax's adamw corrects the moment bias (its early steps up to ~6x larger here); the
    `bert_adamw` option is the original's, step for step."""
    rng = np.random.default_rng(0)
    params = {"dense/kernel": rng.normal(size=(4, 3)), "dense/bias": rng.normal(size=3),
              "LayerNorm/scale": rng.normal(size=3)}  # fmt: skip
    grads = [{k: rng.normal(size=x.shape) * 0.3 for k, x in params.items()} for _ in range(12)]
    want = _original_bert_update(params, grads, lr=1e-2, warmup=3, total=12)
    moved = max(np.max(np.abs(want[k] - params[k])) for k in params)
    for name, close in (("bert_adamw", True), ("adamw", False)):
        tx, _ = optim.make_optimizer(opt_config(name=name, learning_rate=1e-2, warmup_steps=3), 12)
        ours = {k: jnp.asarray(x, jnp.float32) for k, x in params.items()}
        state = tx.init(ours)
        for g in grads:
            updates, state = tx.update({k: jnp.asarray(x, jnp.float32) for k, x in g.items()},
                                       state, ours)  # fmt: skip
            ours = optax.apply_updates(ours, updates)
        err = max(np.max(np.abs(np.asarray(ours[k]) - want[k])) for k in params)
        print(f"\n{name}: max |ours - original BERT| {err:.2e} (params moved {moved:.2e})")
        assert (err < 1e-6 * max(1.0, moved) + 1e-6) == close, (name, err, moved)


@pytest.mark.parametrize(
    "field, value, message",
    [("grad_clip_norm", -1.0, r"optimizer.grad_clip_norm=-1.0; it must be at least 0"),
     ("eps", 0.0, r"optimizer.eps=0.0; it must be positive"),
     ("b2", 1.5, r"optimizer.b2=1.5; it must be in \[0, 1\)"),
     ("warmup_steps", -5, r"optimizer.warmup_steps=-5; it must be at least 0"),
     ("grad_accum_steps", 0, r"optimizer.grad_accum_steps=0; it must be at least 1"),
     ("learning_rate", -1e-4, r"optimizer.learning_rate=-0.0001; it must be at least 0")],
)  # fmt: skip
def test_optimizer_values_that_train_silently_wrong_are_refused(field, value, message):
    """A negative clip norm reversed the gradient (gradient ascent), eps=0 turned the update of
    every zero-gradient parameter into NaN, grad_accum_steps=0 divided by zero."""
    with pytest.raises(ValueError, match=message):
        optim.make_optimizer(opt_config(**{field: value}), 100)


def test_stop_at_step_beyond_the_run_is_refused():
    from configs import pretrain

    config = pretrain.get_config("size=tiny")
    config.train.num_train_steps = 30
    for bad in (-3, 50):  # a checkpoint named -3; 20 steps at learning rate 0
        config.train.stop_at_step = bad
        with pytest.raises(ValueError, match=rf"train.stop_at_step={bad}; use 0 .* up to"):
            train.check_config(config, 1)
    config.train.stop_at_step = 30
    train.check_config(config, 1)
