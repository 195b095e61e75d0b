"""Reliability: verified checkpoints with fallback, non-finite steps skipped, SIGTERM saves,
bad batches and unwritable or full disks refused early; and the fault-injection script
(kill -9 and SIGTERM of real runs, resumed bitwise equal)."""

import functools
import glob
import json
import os
import pathlib
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bert_jax import checkpoints, inputs, losses, train
from bert_jax.heads import BertForPreTraining
from bert_jax.model import BertConfig

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))
import fault_injection  # noqa: E402


def _state(seed=0):
    k = jax.random.PRNGKey(seed)
    return {
        "step": jnp.array(7, jnp.int32),
        "params": {"w": jax.random.normal(k, (64, 300)), "b": jnp.zeros((300,), jnp.bfloat16)},
        "rng": k,
    }


def _saved(tmp_path, steps=(5, 10, 15)):
    messages = []
    ckpt = checkpoints.Checkpointer(str(tmp_path / "ckpt"), save_every=5, keep=10,
                                    log=messages.append)  # fmt: skip
    for s in steps:
        ckpt.save(s, {**_state(s), "step": jnp.array(s)}, force=True)
    ckpt.close()
    return tmp_path / "ckpt", messages


def _restore(directory, like=None):
    messages = []
    ckpt = checkpoints.Checkpointer(str(directory), save_every=5, keep=10, log=messages.append)
    state = ckpt.restore(checkpoints.abstract_like(like or _state()))
    ckpt.close()
    return state, messages


@pytest.mark.parametrize("kind", fault_injection.CORRUPTIONS)
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(kind, tmp_path):
    directory, _ = _saved(tmp_path)
    fault_injection.corrupt(directory, kind)
    state, messages = _restore(directory)
    expected = {**_state(15), "step": jnp.array(15)} if kind == "leftover temp dir" else None
    if expected is None:  # the damaged step 15 (or a bad step 20) is skipped
        newest_good = 10 if kind in ("truncated file", "flipped bytes") else 15
        expected = {**_state(newest_good), "step": jnp.array(newest_good)}
        assert any("is corrupt" in m for m in messages), messages
        assert glob.glob(str(tmp_path / "ckpt_corrupt" / "*"))  # kept for inspection
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(expected),
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)


def test_no_good_checkpoint_starts_afresh_loudly_and_mismatch_is_an_error(tmp_path):
    directory, _ = _saved(tmp_path, steps=(5,))
    fault_injection.corrupt(directory, "flipped bytes")
    state, messages = _restore(directory)
    assert state is None and any("starting from the beginning" in m for m in messages)
    _saved(tmp_path, steps=(5,))
    other = {
        **_state(),
        "params": {"w": jnp.zeros((64, 301)), "b": jnp.zeros((300,), jnp.bfloat16)},
    }
    with pytest.raises(checkpoints.CheckpointMismatchError, match=r"float32\[64, 300\] in the "):
        _restore(tmp_path / "ckpt", other)
    cast = {**_state(), "params": {"w": jnp.zeros((64, 300)), "b": jnp.zeros((300,), jnp.float32)}}
    with pytest.raises(checkpoints.CheckpointMismatchError, match=r"bfloat16\[300\] in the"):
        _restore(tmp_path / "ckpt", cast)  # Orbax alone would cast silently


def test_a_machine_error_on_restore_is_raised_and_moves_nothing(tmp_path):
    """Out of memory on the device while restoring is not a corrupt checkpoint: raised, with
    every step left where it is (it used to set each step aside and start from step 0)."""
    directory, _ = _saved(tmp_path)
    ckpt = checkpoints.Checkpointer(str(directory), save_every=5, keep=10, log=print)

    def out_of_memory(*args, **kwargs):
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 1.2 GiB")

    ckpt.manager.restore = out_of_memory
    with pytest.raises(jax.errors.JaxRuntimeError, match="RESOURCE_EXHAUSTED"):
        ckpt.restore(checkpoints.abstract_like(_state()))
    ckpt.close()
    assert sorted(os.listdir(directory)) == ["10", "15", "5"]
    assert not (tmp_path / "ckpt_corrupt").exists()
    wrapped = ValueError("Encountered error while reading array")
    wrapped.__cause__ = ValueError("UNAVAILABLE: gs://bucket/ckpt/15: connection reset")
    assert checkpoints.is_machine_error(wrapped)  # a storage outage, under Orbax's wrapper
    assert not checkpoints.is_machine_error(ValueError("OUT_OF_RANGE: Requested byte range"))


def test_when_no_step_reads_nothing_is_moved_and_the_error_says_what_to_do(tmp_path):
    """A read failure is set aside only once an older step has read (then it is the step's
    fault); when none reads, it may be the machine's: the error, with everything in place."""
    directory, _ = _saved(tmp_path, steps=(5,))
    fault_injection.corrupt(directory, "truncated file")
    with pytest.raises(checkpoints.CheckpointReadError, match=r"step 5: its arrays cannot be"):
        _restore(directory)
    assert os.listdir(directory) == ["5"] and not (tmp_path / "ckpt_corrupt").exists()
    os.rename(directory / "5", tmp_path / "moved_away")  # what the message tells the user
    state, messages = _restore(directory)
    assert state is None and not any("corrupt" in m for m in messages)
    # A corrupt step among unreadable ones is set aside, and the error says so.
    other = tmp_path / "other"
    other.mkdir()
    directory, _ = _saved(other)
    for step, kind in ((15, "truncated file"), (10, "flipped bytes"), (5, "truncated file")):
        fault_injection.corrupt(directory, kind, step=step)
    with pytest.raises(checkpoints.CheckpointReadError, match=r"steps \[10\] were corrupt"):
        _restore(directory)
    assert sorted(os.listdir(directory)) == ["15", "5"]


def test_hosts_agree_to_set_aside_a_step_another_host_could_not_read(tmp_path, monkeypatch):
    """On several hosts, a step that reads here but not on another host is set aside by all of
    them, and all restore the same older step."""
    from jax.experimental import multihost_utils

    directory, _ = _saved(tmp_path)
    gathered, barriers = [], []

    def allgather(outcome):  # the other host fails on step 15 (its fingerprint differs)
        gathered.append(int(outcome))
        return np.array([int(outcome), 2 if len(gathered) == 1 else 0], np.int32)

    monkeypatch.setattr(checkpoints, "_hosts", lambda: 2)
    monkeypatch.setattr(multihost_utils, "process_allgather", allgather)
    monkeypatch.setattr(multihost_utils, "sync_global_devices", barriers.append)
    state, messages = _restore(directory)
    assert gathered == [0, 0]  # step 15 read here; step 10 too
    assert int(state["step"]) == 10 and barriers == ["quarantine checkpoint 15"]
    assert any("another host could not read it" in m for m in messages), messages
    assert sorted(os.listdir(directory)) == ["10", "5"]
    # A machine error on the other host: this one stops too, moving nothing.
    monkeypatch.setattr(multihost_utils, "process_allgather", lambda o: np.array([int(o), 3]))
    with pytest.raises(RuntimeError, match="another host failed to restore checkpoint"):
        _restore(directory)
    assert sorted(os.listdir(directory)) == ["10", "5"]


def test_fingerprint_sees_one_flipped_bit_and_moved_values():
    state = _state()
    base = checkpoints.fingerprint(state)
    w = np.asarray(state["params"]["w"]).copy()
    w.view(np.uint32)[3, 4] ^= 1
    assert checkpoints.fingerprint({**state, "params": {**state["params"], "w": w}}) != base
    swapped = np.asarray(state["params"]["w"]).copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    assert checkpoints.fingerprint({**state, "params": {**state["params"], "w": swapped}}) != base


def _tiny_step(tx):
    """(jitted train step, initial state, a batch, the batch poisoned with NaN weights) of a
    one-layer model."""
    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16)  # fmt: skip
    model = BertForPreTraining(config)
    state = train.init_state(model, tx, jax.random.PRNGKey(0), 16, 3)
    rng = np.random.default_rng(0)
    batch = {
        "input_ids": rng.integers(5, 40, (4, 16)).astype(np.int32),
        "input_mask": np.ones((4, 16), np.int32), "segment_ids": np.zeros((4, 16), np.int32),
        "masked_lm_positions": np.tile(np.arange(1, 4, dtype=np.int32), (4, 1)),
        "masked_lm_ids": rng.integers(5, 40, (4, 3)).astype(np.int32),
        "masked_lm_weights": np.ones((4, 3), np.float32),
        "next_sentence_labels": np.zeros(4, np.int32),
    }  # fmt: skip
    step = jax.jit(functools.partial(train.train_step, model=model, optimizer=tx))
    poisoned = {**batch, "masked_lm_weights": np.full((4, 3), np.nan, np.float32)}
    return step, state, batch, poisoned


def test_a_non_finite_micro_batch_keeps_the_accumulation_windows_in_step():
    """grad_accum_steps=2: a NaN micro-batch adds zeros to its window; the updates still come
    at steps 2 and 4 (the window counter used to stop, every later update coming one step late
    and the last window never applied)."""
    tx = optax.MultiSteps(optax.adamw(1e-2), every_k_schedule=2)
    step, state, batch, poisoned = _tiny_step(tx)
    bias = []
    for i, b in enumerate([batch, poisoned, batch, batch]):
        state, m = step(state, b)
        assert float(m["skipped"]) == (i == 1)
        bias.append(np.asarray(state["params"]["cls"]["predictions"]["output_bias"]))
    assert int(state["opt_state"].gradient_step) == 2 and int(state["opt_state"].mini_step) == 0
    assert np.isfinite(bias[-1]).all()
    changed = [not np.array_equal(a, b) for a, b in zip(bias, bias[1:], strict=False)]
    assert changed == [True, False, True]  # updates after steps 2 and 4 only


def test_non_finite_steps_are_skipped_and_counted():
    step, state, batch, poisoned = _tiny_step(optax.adamw(1e-2))
    after, m = step(state, poisoned)
    assert float(m["skipped"]) == 1.0 and not np.isfinite(float(m["loss"]))
    for key in ("params", "opt_state"):
        leaves = jax.tree_util.tree_leaves(state[key]), jax.tree_util.tree_leaves(after[key])
        for a, b in zip(*leaves, strict=True):
            np.testing.assert_array_equal(a, b)
    assert int(after["step"]) == 1  # the data position moves on
    after2, m2 = step(after, batch)
    assert float(m2["skipped"]) == 0.0
    assert not np.array_equal(after2["params"]["cls"]["predictions"]["output_bias"],
                              after["params"]["cls"]["predictions"]["output_bias"])  # fmt: skip

    log = []
    monitor = train.StepMonitor(limit=3, log=log.append)
    monitor.add({"loss": 1.0, "grad_norm": 1.0, "skipped": 0.0}, 1)
    for s in (2, 3):
        monitor.add({"loss": np.nan, "grad_norm": np.nan, "skipped": 1.0}, s)
    assert "2 in a row" in log[-1]
    monitor.add({"loss": 2.0, "grad_norm": 1.0, "skipped": 0.0}, 4)  # the streak resets
    assert monitor.window_mean()["loss"] == 1.5  # skipped steps are left out of the means
    for s in (5, 6):
        monitor.add({"loss": np.nan, "grad_norm": np.nan, "skipped": 1.0}, s)
    with pytest.raises(FloatingPointError, match="3 consecutive steps up to step 7"):
        monitor.add({"loss": np.inf, "grad_norm": np.nan, "skipped": 1.0}, 7)


def _batch(vocab=100, seq=16, n=4):
    return {
        "input_ids": np.full((n, seq), 7), "input_mask": np.ones((n, seq), int),
        "segment_ids": np.zeros((n, seq), int), "masked_lm_positions": np.ones((n, 3), int),
        "masked_lm_ids": np.full((n, 3), 9), "next_sentence_labels": np.zeros((n, 1), int),
    }  # fmt: skip


@pytest.mark.parametrize(
    "field, index, value, message",
    [
        ("input_ids", (2, 5), 100, r"input_ids\[2, 5\] = 100 is outside \[0, 100\)"),
        ("input_ids", (0, 0), -3, r"input_ids\[0, 0\] = -3"),
        ("masked_lm_positions", (1, 2), 16, r"masked_lm_positions\[1, 2\] = 16 .* \[0, 16\)"),
        ("masked_lm_ids", (3, 0), 250, "another vocabulary"),
        ("segment_ids", (0, 3), 2, "type_vocab_size=2 segments"),
        ("next_sentence_labels", (1, 0), 2, "labels are 0 or 1"),
        ("input_mask", (1, 4), 0, r"input_mask\[1\] has a 1 at position 5 after a 0 at 4"),
    ],
)
def test_bad_batches_are_refused_naming_the_value(field, index, value, message):
    batch = _batch()
    inputs.check_batch(batch, 100, "ok")
    batch[field][index] = value
    with pytest.raises(ValueError, match=message):
        inputs.check_batch(batch, 100, "training batch of step 3")


def test_one_row_arrays_and_predictions_on_padding_are_refused():
    """A one-row weights or labels array would be broadcast over the batch in the loss; a
    scored prediction at a padding position reads no token."""
    batch = _batch()
    batch["masked_lm_weights"] = np.ones((4, 3), np.float32)
    inputs.check_batch(batch, 100, "ok")
    for name in ("masked_lm_weights", "next_sentence_labels"):
        short = {**batch, name: batch[name][:1]}
        with pytest.raises(ValueError, match=rf"{name} has 1 rows, input_ids 4"):
            inputs.check_batch(short, 100, "batch")
    batch["input_mask"][2, 5:] = 0
    batch["masked_lm_positions"][2, 1] = 7
    with pytest.raises(ValueError, match=r"masked_lm_positions\[2, 1\] = 7 has weight 1.0 but is"):
        inputs.check_batch(batch, 100, "batch")
    batch["masked_lm_weights"][2, 1] = 0.0  # unscored (the records' own padding predictions)
    inputs.check_batch(batch, 100, "ok")


def test_padding_at_the_end_and_empty_rows_pass_the_batch_check():
    batch = _batch()
    batch["input_mask"][1, 9:] = 0
    batch["input_mask"][2] = 0
    inputs.check_batch(batch, 100, "ok")


def test_unwritable_workdir_and_full_disk_fail_at_start(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="cannot write to the workdir"):
        checkpoints.check_writable(str(blocker / "run"))
    directory, _ = _saved(tmp_path, steps=(5,))
    before = sorted(os.listdir(directory))
    Usage = type("Usage", (), {"free": 1000})
    monkeypatch.setattr(checkpoints.shutil, "disk_usage", lambda path: Usage)
    with pytest.raises(OSError, match="only 0 MB are free .* existing checkpoints are kept"):
        checkpoints.check_room(str(directory), _state())
    assert sorted(os.listdir(directory)) == before


def test_sigterm_sets_a_flag_instead_of_killing():
    with train.SignalFlag(signal.SIGTERM) as flag:
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag.raised
    assert signal.getsignal(signal.SIGTERM) is not flag._handle


def test_kill_9_and_sigterm_of_real_runs_resume_bitwise(tmp_path):
    """The fault-injection script, small: one kill -9 while a checkpoint is written, one SIGTERM;
    both runs resumed must end bitwise equal to the uninterrupted run."""
    out = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "fault_injection.py"), "--seeds=1",
         "--kills=1", "--checks=kill,sigterm", f"--workdir={tmp_path}"],
        capture_output=True, text=True, cwd=REPO, timeout=900, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["resumes_bitwise_equal"] == "1 of 1" and summary["kills_survived"] == 1
    assert summary["sigterm_saved_and_resumed_bitwise"] is True


def test_segments_beyond_the_models_table_are_refused():
    """A model with one segment row (type_vocab_size=1) reads row 0 for every segment without
    an error (flax broadcasts a one-row table); pairs would silently lose their segment."""
    batch = _batch()
    batch["segment_ids"][:, :] = 0
    inputs.check_batch(batch, 100, "ok", type_vocab_size=1)
    batch["segment_ids"][1, 6] = 1
    with pytest.raises(ValueError, match=r"segment_ids\[1, 6\] = 1 is outside \[0, 1\).*pairs"):
        inputs.check_batch(batch, 100, "batch", type_vocab_size=1)
    inputs.check_batch(batch, 100, "ok")  # two segments by default


def test_an_ignored_label_out_of_range_adds_nothing_to_the_loss():
    """Hugging Face marks ignored labels -100; with weight 0 they must not turn the sum NaN."""
    logits = jnp.log(jnp.array([[[0.5, 0.5], [0.25, 0.75], [0.5, 0.5]]]))
    for ignored in (-100, 7, -1):
        labels = jnp.array([[0, 1, ignored]])
        loss, weight = losses.weighted_cross_entropy(logits, labels, jnp.array([[1.0, 1.0, 0.0]]))
        assert float(loss) == pytest.approx(np.log(2) + np.log(4 / 3)) and float(weight) == 2.0


def test_a_resumed_run_does_not_log_its_steps_twice(tmp_path):
    """A run killed after logging step 6 but checkpointing step 4 logs steps 5-6 again when
    resumed: metrics.jsonl held both lines (and a torn last one)."""
    from bert_jax.writers import MetricWriter

    rows = [{"step": s, "split": "train", "loss": 10.0 - s} for s in (2, 4, 6)]
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 8, "spl'
    (tmp_path / "metrics.jsonl").write_text(text)
    writer = MetricWriter(str(tmp_path), start_step=4)
    writer.write(6, "train", {"loss": 3.5})
    writer.close()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in lines] == [(2, 8.0), (4, 6.0), (6, 3.5)]
    MetricWriter(str(tmp_path)).close()  # no start step (a reader, a fine-tuning run): kept
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3
    MetricWriter(str(tmp_path), start_step=0).close()  # killed before its first checkpoint
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").open()] == []
