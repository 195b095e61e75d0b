"""Metric writers: one JSONL file and TensorBoard event files in the workdir (process 0 only).

Files go through tf.io.gfile, so a gs:// workdir (a TPU pod's) is written where Orbax writes its
checkpoints, not to a local folder named "gs:".
"""

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

        tf.io.gfile.makedirs(workdir)
        path = os.path.join(workdir, "metrics.jsonl")
        if start_step is not None:
            _drop_lines_after(path, start_step)
        # (On GCS an append re-uploads the file at each flush: fine for a few thousand lines.)
        self._jsonl = tf.io.gfile.GFile(path, "a")
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
    from tensorflow.io import gfile  # noqa: PLC0415

    if not gfile.exists(path):
        return
    with gfile.GFile(path) as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        try:
            if 0 < json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):  # cut short by the kill: nothing to keep
            continue
    if len(kept) < len(lines):
        with gfile.GFile(path + ".tmp", "w") as f:
            f.write("".join(kept))
        gfile.rename(path + ".tmp", path, overwrite=True)  # (os.replace locally: atomic)
