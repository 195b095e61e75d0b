"""The fine-tuning loop: task losses, pmap == jit, exact resume, init checkpoints, mocked TFDS
tasks end to end (glue/sst2, glue/stsb, squad/v1.1, squad/v2.0, conll2003), the grid summary."""

import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds

from bert_jax import checkpoints, convert, finetune, finetune_sweep, losses, parallel
from bert_jax.data import samples
from bert_jax.heads import BertForPreTraining
from bert_jax.model import BertConfig
from configs import finetune as finetune_config

TINY = dict(
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=128,
)


@pytest.fixture(scope="module")
def vocab_file():
    return str(samples.fetch("minilm") / "vocab.txt")


def tiny_config(task: str, vocab_file: str, **train):
    config = finetune_config.get_config(f"task={task},size=tiny")
    config.model.update(TINY)
    config.task.vocab_file = vocab_file
    config.task.max_seq_length = 32
    config.train.update(dict(batch_size=8, eval_batch_size=8, num_epochs=1, parallel="jit"))
    config.train.update(train)
    config.optimizer.learning_rate = 1e-3
    return config


# --------------------------------------------------------------------------- losses


def test_task_losses_by_hand():
    batch = {"input_ids": jnp.zeros((2, 4), jnp.int32), "label": jnp.array([1.0, -1.0])}
    sums = losses.task_sums("regression", {"logits": jnp.array([[0.5], [0.0]])}, batch)
    assert float(sums["loss"] / sums["weight"]) == pytest.approx((0.25 + 1.0) / 2)

    logits = jnp.array([[2.0, -1.0], [0.0, 0.0]])
    batch["label"] = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    sums = losses.task_sums("multilabel", {"logits": logits}, batch)
    sig = 1 / (1 + np.exp(-np.array([[2.0, -1.0], [0.0, 0.0]])))
    y = np.array([[1, 0], [0, 1]])
    bce = -(y * np.log(sig) + (1 - y) * np.log(1 - sig)).mean()
    assert float(sums["loss"] / sums["weight"]) == pytest.approx(bce, rel=1e-6)
    assert float(sums["correct"]) == 1.0  # row 0 right at 0.5, row 1 wrong (0.5 is not > 0)

    start = jnp.array([[0.0, 1.0, 0.0]] * 2)
    batch = {
        "input_ids": jnp.zeros((2, 3), jnp.int32),
        "start_position": jnp.array([1, 0]),
        "end_position": jnp.array([1, 1]),
        "example_weights": jnp.array([1.0, 0.0]),  # a padding row counts for nothing
    }
    sums = losses.task_sums("span", {"start_logits": start, "end_logits": start}, batch)
    expect = -np.log(np.exp(1) / (np.exp(1) + 2))
    assert float(sums["loss"] / sums["weight"]) == pytest.approx(expect, rel=1e-6)


# --------------------------------------------------------------------------- parallel


def test_pmap_step_equals_jit_step():
    config = BertConfig(vocab_size=50, **TINY)
    model = finetune.make_model("classification", config, 3)
    tx = optax.adamw(1e-2)
    state = finetune.init_state(model, tx, jax.random.PRNGKey(0), (16,))
    rng = np.random.default_rng(0)
    batch = {
        "input_ids": rng.integers(1, 50, (16, 16)).astype(np.int32),
        "input_mask": np.ones((16, 16), np.int32),
        "segment_ids": np.zeros((16, 16), np.int32),
        "label": rng.integers(0, 3, 16).astype(np.int32),
    }
    # Dropout differs per device under pmap; compare without it.
    config0 = BertConfig(
        vocab_size=50, hidden_dropout_prob=0, attention_probs_dropout_prob=0, **TINY
    )
    model = finetune.make_model("classification", config0, 3)
    steps = (
        functools.partial(finetune.train_step, model=model, optimizer=tx, head="classification"),
        functools.partial(finetune.predict_step, model=model),
    )
    jit_par, pmap_par = parallel.Parallel("jit", *steps), parallel.Parallel("pmap", *steps)
    assert pmap_par.n == 8
    s1, m1 = jit_par.train(jax.tree_util.tree_map(jnp.copy, state), batch)
    s8, m8 = pmap_par.train(pmap_par.put_state(state), pmap_par.put_batch(batch))
    s8 = pmap_par.get_state(s8)
    assert float(pmap_par.get_metrics(m8)["loss"]) == pytest.approx(float(m1["loss"]), abs=1e-6)
    leaves = jax.tree_util.tree_leaves
    for a, b in zip(leaves(s1["params"]), leaves(s8["params"]), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    features = {k: v for k, v in batch.items()}
    out1 = finetune.predict(jit_par, s1["params"], features, 8)
    out8 = finetune.predict(pmap_par, pmap_par.put_state(s1)["params"], features, 8)
    np.testing.assert_allclose(out1["logits"], out8["logits"], atol=1e-5)


def _padded_batch(head: str, rng, *, batch=4, seq=64, longest=20, vocab=50):
    """Rows of 5..`longest` real tokens padded to `seq`, with the head's targets."""
    shape = (batch, 3, seq) if head == "choice" else (batch, seq)
    lengths = rng.integers(min(5, longest), longest + 1, shape[:-1])
    lengths.flat[0] = longest
    mask = (np.arange(seq) < lengths[..., None]).astype(np.int32)
    out = {
        "input_ids": (rng.integers(1, vocab, shape) * mask).astype(np.int32),
        "input_mask": mask,
        "segment_ids": np.zeros(shape, np.int32),
    }
    if head == "token":
        out["label"] = (rng.integers(0, 3, shape) * mask).astype(np.int32)
        out["label_weights"] = mask.astype(np.float32)
    elif head == "span":
        out["start_position"] = rng.integers(0, 5, batch).astype(np.int32)
        out["end_position"] = out["start_position"] + 2
    else:
        out["label"] = rng.integers(0, 3, batch).astype(np.int32)
    return out


def test_span_batches_keep_their_padding():
    """The span loss normalises over every position (run_squad.py), padding included."""
    batch = _padded_batch("span", np.random.default_rng(0))
    assert finetune.trim_padding(batch) is batch


@pytest.mark.parametrize("head", ["classification", "token", "choice"])
def test_trimmed_padding_trains_like_full_padding(head):
    """A batch of rows up to 20 tokens long, padded to 64, is cut to 32; the train step's loss
    and update are the same as on the full padding (no dropout: the masks differ in shape)."""
    rng = np.random.default_rng(0)
    batch = _padded_batch(head, rng)
    trimmed = finetune.trim_padding(batch)
    assert trimmed["input_ids"].shape[-1] == 32
    for k, v in trimmed.items():
        cut = k in ("input_ids", "input_mask", "segment_ids") or head == "token"
        assert v.shape == (batch[k][..., :32].shape if cut else batch[k].shape), k
    for longest, length in ((3, 16), (17, 32), (33, 64), (64, 64)):
        cut = finetune.trim_padding(_padded_batch(head, rng, longest=longest))
        assert cut["input_ids"].shape[-1] == length, (longest, length)

    config = BertConfig(vocab_size=50, hidden_dropout_prob=0, attention_probs_dropout_prob=0,
                        **TINY)  # fmt: skip
    model = finetune.make_model(head, config, 3)
    tx = optax.sgd(1.0)  # the update is the gradient (Adam's first step would amplify ~0 noise)
    state = finetune.init_state(model, tx, jax.random.PRNGKey(0), batch["input_ids"].shape[1:])
    step = jax.jit(functools.partial(finetune.train_step, model=model, optimizer=tx, head=head))
    s_full, m_full = step(jax.tree_util.tree_map(jnp.copy, state), batch)
    s_cut, m_cut = step(state, trimmed)
    assert float(m_cut["loss"]) == pytest.approx(float(m_full["loss"]), rel=1e-5)
    leaves = jax.tree_util.tree_leaves
    for a, b in zip(leaves(s_full["params"]), leaves(s_cut["params"]), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("head", ["classification", "token", "choice"])
def test_trimmed_prediction_matches_full_padding(head):
    """Rows of mixed lengths (batches cut to 16, 32 or 64): the same outputs, in row order; token
    logits come back at full length (zeros past the cut, never read: label_weights are 0)."""
    rng = np.random.default_rng(1)
    parts = [_padded_batch(head, rng, longest=n) for n in (12, 30, 64, 7)]
    features = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    config = BertConfig(vocab_size=50, **TINY)
    model = finetune.make_model(head, config, 3)
    tx = optax.sgd(1.0)
    state = finetune.init_state(model, tx, jax.random.PRNGKey(0), features["input_ids"].shape[1:])
    par = parallel.Parallel(
        "jit",
        functools.partial(finetune.train_step, model=model, optimizer=tx, head=head),
        functools.partial(finetune.predict_step, model=model),
    )
    full = finetune.predict(par, state["params"], features, 4)
    cut = finetune.predict(par, state["params"], features, 4, trim=True)
    assert full["logits"].shape == cut["logits"].shape
    if head == "token":
        real = features["input_mask"] > 0
        np.testing.assert_allclose(cut["logits"][real], full["logits"][real], atol=1e-5)
        assert not cut["logits"][:4, 16:].any()  # the first batch's rows were cut to 16
    else:
        np.testing.assert_allclose(cut["logits"], full["logits"], atol=1e-5)


# --------------------------------------------------------------------------- whole runs


def _sample_text_config(vocab_file, tmp_path, n=96):
    """A small real-text task: the first Rotten Tomatoes snippets as a CSV."""
    from bert_jax.data.tasks import classify

    train_ex, _, names = classify.rotten_tomatoes()
    path = tmp_path / "rt.csv"
    with open(path, "w") as f:
        f.write("text,label\n")
        for e in train_ex[:n]:
            f.write('"{}",{}\n'.format(e.text_a.replace('"', '""'), names[e.label]))
    config = tiny_config("text", vocab_file)
    config.task.train_file = str(path)
    return config


def test_resume_after_stop_is_exact(vocab_file, tmp_path):
    config = _sample_text_config(vocab_file, tmp_path)
    config.train.num_epochs = 2
    straight = finetune_sweep.run(config, str(tmp_path / "a"), log=lambda s: None)
    config.train.stop_at_step = 13  # mid-epoch (9 steps per epoch)
    config.train.prefetch_batches = 0  # (the straight run prefetches 2: same batches)
    stopped = finetune_sweep.run(config, str(tmp_path / "b"), log=lambda s: None)
    assert stopped == {"stopped_at_step": 13}
    config.train.stop_at_step = 0
    config.train.prefetch_batches = 2
    resumed = finetune_sweep.run(config, str(tmp_path / "b"), log=lambda s: None)
    a = json.loads((tmp_path / "a" / "results.json").read_text())
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    assert a["history"] == b["history"] and len(a["history"]) == 2
    assert straight["points"].keys() == resumed["points"].keys()

    def final(workdir):
        c = checkpoints.Checkpointer(str(workdir / "checkpoints"), save_every=1, keep=1)
        step = c.latest_step()
        state = c.manager.restore(step)
        c.close()
        return step, state

    (step_a, state_a), (step_b, state_b) = final(tmp_path / "a"), final(tmp_path / "b")
    assert step_a == step_b == 18
    for x, y in zip(
        jax.tree_util.tree_leaves(state_a), jax.tree_util.tree_leaves(state_b), strict=True
    ):
        np.testing.assert_array_equal(x, y)
    # The best dev model, predictions and TensorBoard/JSONL logs are in the workdir.
    for name in ("best", "predictions/dev.tsv", "metrics.jsonl", "history.json", "config.json"):
        assert (tmp_path / "b" / name).exists(), name


def test_init_checkpoint_encoder_is_loaded_and_heads_fresh(vocab_file, tmp_path):
    config = BertConfig(vocab_size=30522, **TINY)
    params = BertForPreTraining(config).init(jax.random.PRNGKey(1), jnp.zeros((1, 8), jnp.int32))[
        "params"
    ]
    convert.save_hf(params, config, tmp_path / "hf", vocab_file=vocab_file)
    ft = _sample_text_config(vocab_file, tmp_path)
    ft.init_checkpoint = str(tmp_path / "hf")
    ft.optimizer.learning_rate = 0.0  # no update: the final encoder is the loaded one
    lines = []
    finetune_sweep.run(ft, str(tmp_path / "run"), log=lines.append)
    assert any(line == "initialised fresh: classifier" for line in lines), lines
    c = checkpoints.Checkpointer(str(tmp_path / "run" / "checkpoints"), save_every=1, keep=1)
    state = c.manager.restore(c.latest_step())
    c.close()
    ft.reinit_pooler = True  # the pooler is not taken from the checkpoint
    assert "pooler" not in finetune.setup(ft, log=lambda s: None).init_params["bert"]
    loaded = jax.tree_util.tree_leaves(params["bert"])
    for x, y in zip(loaded, jax.tree_util.tree_leaves(state["params"]["bert"]), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("task", sorted(finetune_config.TASKS))
def test_every_task_config_builds(task):
    from bert_jax.data.tasks import registry

    config = finetune_config.get_config(f"task={task},grid")
    assert len(finetune_sweep.points(config)) == 18 and config.sweep.seeds == (0, 1, 2)
    head = registry.make_task(config.task, tokenizer=None).head
    fields = {k: v for k, v in config.model.items() if k != "size"}
    model = finetune.make_model(head, BertConfig.from_dict({**fields, "vocab_size": 30522}), 3)
    tx = optax.adamw(1e-5)
    shape = (4, 16) if head == "choice" else (16,)
    # Shapes only: the whole BERT-base state, abstractly, in milliseconds.
    abstract = jax.eval_shape(lambda: finetune.init_state(model, tx, jax.random.PRNGKey(0), shape))
    n = sum(x.size for x in jax.tree_util.tree_leaves(abstract["params"]))
    assert abs(n - 109.5e6) / 109.5e6 < 0.01, n


def test_select_last_or_best_epoch():
    history = [{"epoch": 1, "f1": 0.5}, {"epoch": 2, "f1": 0.7}, {"epoch": 3, "f1": 0.6}]
    assert finetune._select(history, "f1", "last")["epoch"] == 3
    assert finetune._select(history, "f1", "best")["epoch"] == 2
    history[1]["f1"] = float("nan")  # e.g. a constant STS-B prediction: never the best
    assert finetune._select(history, "f1", "best")["epoch"] == 3


def test_grid_points_and_summary(vocab_file, tmp_path):
    config = _sample_text_config(vocab_file, tmp_path, n=48)
    config.sweep.learning_rate = (1e-3, 1e-4)
    names = [name for name, _ in finetune_sweep.points(config)]
    assert names == ["bs8_lr0.001_ep1", "bs8_lr0.0001_ep1"]
    config.sweep.learning_rate = (1e-3,)  # one point x two seeds keeps the test short
    config.sweep.seeds = (0, 1)
    summary = finetune_sweep.run(config, str(tmp_path / "grid"), log=lambda s: None)
    name = names[0]
    p = summary["points"][name]
    assert len(p["accuracy"]) == 2
    assert p["mean"] == pytest.approx(np.mean(p["accuracy"]))
    assert p["std"] == pytest.approx(np.std(p["accuracy"], ddof=1))
    for seed in (0, 1):
        assert (tmp_path / "grid" / name / f"seed{seed}" / "results.json").exists()
    assert summary["best_point"] == name
    assert json.loads((tmp_path / "grid" / "summary.json").read_text()) == summary
    results = json.loads((tmp_path / "grid" / "results.json").read_text())
    assert results["best_point"] == name and results["seeds"] == [0, 1]
    assert results["dev"]["accuracy"] == pytest.approx(p["mean"])
    seed_devs = [
        json.loads((tmp_path / "grid" / name / f"seed{s}" / "results.json").read_text())["dev"]
        for s in (0, 1)
    ]
    assert set(results["dev"]) == set(seed_devs[0])  # every dev metric, each a mean over seeds
    for key in results["dev"]:
        assert results["dev"][key] == pytest.approx(np.mean([d[key] for d in seed_devs]))
    best = summary["points"][summary["best_point"]]["best_seed"]
    assert summary["best_model"] == str(
        tmp_path / "grid" / summary["best_point"] / f"seed{best}" / "best"
    )
    assert os.path.isdir(summary["best_model"])
    # A finished grid is not run again.
    lines = []
    assert finetune_sweep.run(config, str(tmp_path / "grid"), log=lines.append) == summary
    assert not any(line.startswith("epoch") for line in lines)


def _conll_rows():
    rng = np.random.default_rng(0)
    words = ["john", "lives", "in", "paris", "with", "acme", "corp", "today", "."]
    rows = []
    for _ in range(24):
        n = int(rng.integers(3, 12))
        rows.append(
            ([str(w) for w in rng.choice(words, n)], [int(x) for x in rng.integers(0, 9, n)])
        )
    return rows


def _mock_conll2003(self, *args, **kwargs):
    import tensorflow as tf

    def generate():
        for tokens, ner in _conll_rows():
            n = len(tokens)
            yield {"tokens": tokens, "pos": [0] * n, "chunks": [0] * n, "ner": ner}

    f = self.info.features
    return tf.data.Dataset.from_generator(generate, output_types=f.dtype, output_shapes=f.shape)


def _mock_squad(self, *args, **kwargs):
    """SQuAD rows whose answers really occur in the context (random mock text would not)."""
    import tensorflow as tf

    v2 = "is_impossible" in self.info.features
    rng = np.random.default_rng(0)
    words = "the cat sat on a mat near paris in 1998 while john read books about rivers".split()

    def generate():
        for i in range(24):
            context = " ".join(rng.choice(words, 40))
            start_word = int(rng.integers(0, 35))
            answer = " ".join(context.split()[start_word : start_word + 2])
            start = len(" ".join(context.split()[:start_word])) + (start_word > 0)
            impossible = v2 and i % 3 == 0
            answers = {"text": [] if impossible else [answer]}
            answers["answer_start"] = [] if impossible else [start]
            row = {"id": f"q{i}", "title": "t", "context": context, "question": "where?"}
            row["answers"] = answers
            if v2:
                row["is_impossible"] = impossible
                row["plausible_answers"] = {"text": [answer], "answer_start": [start]}
            yield row

    f = self.info.features
    return tf.data.Dataset.from_generator(generate, output_types=f.dtype, output_shapes=f.shape)


@pytest.mark.parametrize(
    "task, metric",
    [
        ("sst2", "accuracy"),
        ("stsb", "spearman"),
        ("squad1", "f1"),
        ("squad2", "f1"),
        ("conll2003", "f1"),
    ],
)
def test_mocked_tfds_task_end_to_end(task, metric, vocab_file, tmp_path):
    config = tiny_config(task, vocab_file)
    if task.startswith("squad"):
        config.task.update(max_seq_length=64, doc_stride=16, max_query_length=16)
    mocks = {"conll2003": _mock_conll2003, "squad1": _mock_squad, "squad2": _mock_squad}
    kwargs = {"as_dataset_fn": mocks[task]} if task in mocks else {"num_examples": 16}
    with tfds.testing.mock_data(**kwargs):
        result = finetune_sweep.run(config, str(tmp_path), log=lambda s: None)
    assert result["metric"] == metric
    value = result["points"][next(iter(result["points"]))][metric]
    assert len(value) == 1 and (np.isfinite(value[0]) or task == "stsb")
    results = json.loads((tmp_path / "results.json").read_text())
    assert metric in results["dev"]
    assert os.listdir(tmp_path / "predictions")


def _write_local_task(kind: str, tmp_path) -> str:
    """A small local file in the format of `kind`, from the Rotten Tomatoes snippets."""
    from bert_jax.data.tasks import classify

    train_ex, _, _ = classify.rotten_tomatoes()
    texts = [e.text_a for e in train_ex[:64]]
    rng = np.random.default_rng(0)
    if kind == "multilabel":
        path = tmp_path / "ml.jsonl"
        rows = []
        for t in texts:
            labels = [n for n in ("short", "question", "exclaim") if rng.random() < 0.4]
            rows.append(json.dumps({"text": t, "label": labels}))
        path.write_text("\n".join(rows) + "\n")
    elif kind == "longdoc":
        path = tmp_path / "docs.csv"
        with open(path, "w") as f:
            f.write("text,label\n")
            for i in range(0, 64, 4):  # four snippets per document: several windows each
                doc = " ".join(texts[i : i + 4]).replace('"', '""')
                f.write(f'"{doc}",{["neg", "pos"][i % 8 == 0]}\n')
    else:  # swag: the official CSV layout, endings taken from other snippets
        path = tmp_path / "swag.csv"
        header = ",video-id,fold-ind,startphrase,sent1,sent2,gold-source,"
        header += "ending0,ending1,ending2,ending3,label\n"
        with open(path, "w") as f:
            f.write(header)
            for i in range(48):
                ends = [texts[(i + k) % 64].replace('"', '""') for k in range(1, 5)]
                sent1 = texts[i].replace('"', '""')
                cells = [str(i), f"v{i}", "0", f'"{sent1} It"', f'"{sent1}"', "It", "gold"]
                cells += [f'"{e}"' for e in ends] + [str(i % 4)]
                f.write(",".join(cells) + "\n")
    return str(path)


@pytest.mark.parametrize(
    "task, metric",
    [("multilabel", "micro_f1"), ("longdoc", "accuracy"), ("swag", "accuracy")],
)
def test_local_file_task_end_to_end(task, metric, vocab_file, tmp_path):
    config = tiny_config(task, vocab_file)
    config.task.train_file = _write_local_task(task, tmp_path)
    if task == "longdoc":
        config.task.update(max_seq_length=24, window_stride=8)
    result = finetune_sweep.run(config, str(tmp_path / "run"), log=lambda s: None)
    assert result["metric"] == metric
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert 0.0 <= results["dev"][metric] <= 1.0
    (pred,) = os.listdir(tmp_path / "run" / "predictions")
    lines = (tmp_path / "run" / "predictions" / pred).read_text().splitlines()
    n_dev = {"multilabel": 13, "longdoc": 3, "swag": 10}[task]  # 20% held out
    assert len(lines) == n_dev + 1  # a header and one line per dev example
    if task == "multilabel":  # its HF export says what the outputs are and how to score them
        import transformers

        convert.convert(tmp_path / "run", tmp_path / "hf", "hf")
        hf = transformers.AutoConfig.from_pretrained(tmp_path / "hf")
        assert sorted(hf.id2label.values()) == ["exclaim", "question", "short"]
        assert hf.problem_type == "multi_label_classification"


def test_pairs_for_a_model_with_one_segment_are_refused():
    """type_vocab_size=1: flax broadcasts the one segment row over every id, so a pair task's
    segment 1 would silently read segment 0's embedding."""
    one = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                     intermediate_size=8, type_vocab_size=1)  # fmt: skip
    f = {"input_ids": np.ones((2, 6), np.int32), "segment_ids": np.zeros((2, 6), np.int32)}
    finetune._check_features(f, one, "train")  # single texts are fine
    f["segment_ids"][1, 3:] = 1
    with pytest.raises(ValueError, match="train: segment id 1 but the model has type_vocab_size=1"):
        finetune._check_features(f, one, "train")
    finetune._check_features(f, dataclasses.replace(one, type_vocab_size=2), "train")


def test_fine_tuning_refuses_settings_it_would_ignore():
    t = ml_collections.ConfigDict(
        {"num_epochs": 1, "batch_size": 8, "eval_batch_size": 8, "log_every": 1, "select": "last"}
    )
    opt = ml_collections.ConfigDict({"warmup_steps": 0, "grad_accum_steps": 1})
    finetune._check_train_config(t, opt)
    opt.warmup_steps = 100  # overwritten from train.warmup_proportion: it used to be lost
    with pytest.raises(ValueError, match="set --config.train.warmup_proportion"):
        finetune._check_train_config(t, opt)


def test_grid_results_json_is_shaped_like_one_runs():
    """A grid's results.json carries what sweep tables read from one run's: the selection
    metric (cells "dev.{metric}"), the task, and each evaluated split's means over seeds."""
    runs = {
        "bs32_lr5e-05_ep3": {
            s: {
                "task": "conll2003",
                "metric": "f1",
                "select": "last",
                "epoch": 3,
                "dev": {"f1": 0.5 + s / 10, "precision": 0.4, "report": "text"},
                "test": {"f1": 0.3 + s / 10},
                "history": [{"epoch": 3, "step": 30, "f1": 0.5}],
            }
            for s in (0, 1)
        }
    }
    results = finetune_sweep.best_point_results("bs32_lr5e-05_ep3", runs)
    assert results["metric"] == "f1" and results["task"] == "conll2003"
    assert results["select"] == "last" and results["seeds"] == [0, 1]
    assert results["dev"] == {"f1": pytest.approx(0.55), "precision": pytest.approx(0.4)}
    assert results["test"] == {"f1": pytest.approx(0.35)}
    assert "history" not in results
    # What a sweep cell "dev.{metric}" resolves to (experiments/paper_tables.py).
    assert results["dev"][results["metric"]] == pytest.approx(0.55)


def test_a_run_killed_writing_results_or_with_them_truncated_finishes_on_rerun(
    vocab_file, tmp_path, monkeypatch
):
    """results.json is written atomically (a kill mid-write leaves none, not a truncated file);
    an unreadable one (written before that, or damaged) is a run to finish, not a crash: the
    rerun redoes only the final evaluation, from the train state or, once that is deleted
    (train.keep_train_state=False), from best/."""
    config = _sample_text_config(vocab_file, tmp_path, n=48)
    config.train.keep_train_state = False
    workdir = tmp_path / "run"
    results_file = workdir / "results.json"
    real_dump = json.dump

    def killed_writing_results(obj, f, **kwargs):
        if os.path.basename(f.name).startswith("results.json"):
            f.write(json.dumps(obj)[:20])
            f.flush()
            raise KeyboardInterrupt  # the kill, mid-write
        return real_dump(obj, f, **kwargs)

    monkeypatch.setattr(json, "dump", killed_writing_results)
    with pytest.raises(KeyboardInterrupt):
        finetune.finetune(config, str(workdir), log=lambda s: None)
    monkeypatch.setattr(json, "dump", real_dump)
    assert not results_file.exists()  # not a truncated "finished" run

    lines = []
    first = finetune.finetune(config, str(workdir), log=lines.append)
    assert not any(line.startswith(("step ", "epoch ")) for line in lines), lines  # no training
    assert json.loads(results_file.read_text()) == first
    last = {k: v for k, v in first["history"][-1].items() if k not in ("epoch", "step")}
    assert first["dev"] == last and len(first["history"]) == config.train.num_epochs
    assert not (workdir / "checkpoints").exists()  # keep_train_state=False

    results_file.write_text(results_file.read_text()[:50])  # truncated, as the old write left it
    lines = []
    again = finetune.finetune(config, str(workdir), log=lines.append)
    assert any("results.json is unreadable" in line for line in lines), lines
    assert any("redoing the final evaluation" in line for line in lines), lines
    assert not any(line.startswith(("step ", "epoch ")) for line in lines), lines
    assert again["dev"] == first["dev"] and again["history"] == first["history"]
    assert json.loads(results_file.read_text())["dev"] == first["dev"]
    assert (workdir / "predictions" / "dev.tsv").exists()
