"""Metric writers: one JSONL file and TensorBoard event files in the workdir (process 0 only)."""

from __future__ import annotations

import json
import os

import jax


class MetricWriter:
    """Writes scalars to `workdir/metrics.jsonl` and TensorBoard events under `workdir/tensorboard`.

    Each JSONL line is {"step": int, "split": "train"|"eval", <name>: float, ...}. Other processes
    of a multi-host run write nothing.
    """

    def __init__(self, workdir: str):
        self.enabled = jax.process_index() == 0
        if not self.enabled:
            return
        import tensorflow as tf  # noqa: PLC0415 (TF is heavy; only process 0 needs the writer)

        os.makedirs(workdir, exist_ok=True)
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
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
