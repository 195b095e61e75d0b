"""Metric writers: one JSONL file and TensorBoard event files in the workdir (process 0 only)."""

from __future__ import annotations

import json
import os

import jax


class MetricWriter:
    """Writes scalars to `workdir/metrics.jsonl` and TensorBoard events under `workdir/tensorboard`.

    Each JSONL line is {"step": int, "split": "train"|"eval", <name>: float, ...}. Other processes
    of a multi-host run write nothing. A run (re)started at `start_step` first drops the lines
    it will write again: those past it, which an interrupted run wrote after its last checkpoint,
    and at step 0 all of them (the step-0 evaluation included).
    """

    def __init__(self, workdir: str, start_step: int | None = None):
        self.enabled = jax.process_index() == 0
        if not self.enabled:
            return
        import tensorflow as tf  # noqa: PLC0415 (TF is heavy; only process 0 needs the writer)

        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, "metrics.jsonl")
        if start_step is not None:
            _drop_lines_after(path, start_step)
        self._jsonl = open(path, "a")
        self._tf = tf
        self._tb = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, split: str, scalars: dict[str, float]):
        if not self.enabled:
            return
        scalars = {k: float(v) for k, v in scalars.items()}
        self._jsonl.write(json.dumps({"step": int(step), "split": split, **scalars}) + "\n")
        self._jsonl.flush()
        with self._tb.as_default(step=int(step)):
            for name, value in scalars.items():
                self._tf.summary.scalar(f"{split}/{name}", value)
        self._tb.flush()

    def close(self):
        if self.enabled:
            self._jsonl.close()
            self._tb.close()


def _drop_lines_after(path: str, step: int) -> None:
    """Rewrites `path` (atomically) with its lines of steps 1..`step` only; a torn last line
    goes too."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        try:
            if 0 < json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):  # cut short by the kill: nothing to keep
            continue
    if len(kept) < len(lines):
        with open(path + ".tmp", "w") as f:
            f.writelines(kept)
        os.replace(path + ".tmp", path)
