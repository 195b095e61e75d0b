"""Task adapters: the one interface the fine-tuning loop uses, over the task modules.

`make_task(config.task, tokenizer)` returns an object with
  name, head, metric (the dev metric that selects the best model), num_labels,
  load() -> {split: examples}  ("train" and "dev" always; more dev/test splits where they exist),
  featurize(split, examples) -> features,
  evaluate(split, examples, features, outputs) -> {metric: value},
  write_predictions(split, examples, features, outputs, out_dir),
  has_labels(split) -> bool.
`config.task.kind` picks the adapter (see configs/finetune.py for the task table).
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import numpy as np
from absl import logging

from bert_jax.data import samples
from bert_jax.data.tasks import classify, common, glue, metrics, ner, squad, squad_eval, swag


def _holdout(examples: list, fraction: float) -> tuple[list, list]:
    train_idx, dev_idx = common.holdout_split(len(examples), fraction, seed=0)
    return [examples[i] for i in train_idx], [examples[i] for i in dev_idx]


def _need_file(cfg, field: str) -> str:
    path = cfg[field]
    if not path:
        raise ValueError(
            f"task {cfg.name!r} reads local files: set --config.task.{field}=<path> "
            f"(or --config.task.source for tasks with a built-in/TFDS source)."
        )
    return path


class Task:
    """Shared defaults; subclasses fill in the task module calls."""

    head = "classification"
    metric = "accuracy"

    def __init__(self, cfg, tokenizer):
        self.cfg, self.tokenizer, self.name = cfg, tokenizer, cfg.name
        self.num_labels = 0

    def has_labels(self, split: str) -> bool:
        return not split.startswith("test")

    @property
    def class_names(self) -> list[str] | None:
        """The name of each output class, in logit order (an export's id2label); None where
        the outputs are not classes (spans, choices, a regression)."""
        return None


class GlueTask(Task):
    def __init__(self, cfg, tokenizer):
        super().__init__(cfg, tokenizer)
        self.glue = glue.get_task(cfg.name)
        self.head, self.metric = self.glue.head, self.glue.metric
        self.num_labels = max(1, len(self.glue.label_names))

    @property
    def class_names(self) -> list[str] | None:
        return list(self.glue.label_names) or None

    def load(self) -> dict[str, list]:
        source = self.cfg.source or "tfds"
        out = {}
        for split in self.glue.splits:
            try:
                out[split] = glue.load(self.glue, split, source, self.cfg.data_dir or None)
            except (FileNotFoundError, ConnectionError) as e:
                # Unlabelled splits only feed leaderboard files, and MNLI's AX is a TFDS dataset
                # of its own (glue/ax): a copy without them must still fine-tune offline.
                if self.has_labels(split):
                    raise
                why = str(e)
                if isinstance(e, ConnectionError):  # from common.tfds_examples: not prepared
                    name = self.glue.splits[split].tfds_name or self.glue.tfds_name
                    why = (
                        f"TFDS {name} is not prepared and the network is unreachable; for the "
                        f"file run `tfds build {name} --data_dir=<dir>` and set TFDS_DATA_DIR=<dir>"
                    )
                logging.warning(
                    "GLUE %s: skipped unlabelled split %r, so no leaderboard file %s (%s).",
                    self.name,
                    split,
                    self.glue.submission_files.get(split),
                    why,
                )
        if "dev" not in out and "dev_matched" in out:  # MNLI selects on matched dev
            out["dev"] = out.pop("dev_matched")
        return out

    def has_labels(self, split: str) -> bool:
        # The diagnostic set (AX, predicted with the MNLI model) is a leaderboard file too.
        return not (split.startswith("test") or split == "diagnostic")

    def featurize(self, split, examples):
        return glue.featurize(self.glue, examples, self.tokenizer, self.cfg.max_seq_length)

    def evaluate(self, split, examples, features, outputs):
        return glue.evaluate(self.glue, examples, outputs["logits"])

    def write_predictions(self, split, examples, features, outputs, out_dir):
        if not self.has_labels(split):
            glue.write_test_predictions(self.glue, examples, outputs["logits"], out_dir)
        else:
            _write_rows(
                os.path.join(out_dir, f"{split}.tsv"),
                [e.guid for e in examples],
                outputs["logits"],
                self.glue.label_names,
            )


class TextTask(Task):
    """Single texts or pairs from the built-in samples or CSV/TSV/JSONL files."""

    multilabel = False
    label_names: list[str] | None = None  # read from the data by `load`

    @property
    def class_names(self) -> list[str] | None:
        return self.label_names

    def load(self) -> dict[str, list]:
        c = self.cfg
        if c.source == "sample" and not c.train_file:
            reader = {"rotten_tomatoes": classify.rotten_tomatoes, "chnsenti": classify.chnsenti}
            if c.name not in reader:
                raise ValueError(f"no built-in sample for task {c.name!r}; set task.train_file.")
            train, dev, self.label_names = reader[c.name](dev_fraction=c.dev_fraction, seed=0)
            out = {"train": train, "dev": dev}
        else:
            kwargs = dict(
                text_a=c.text_a, text_b=c.text_b or None, label=c.label, multilabel=self.multilabel
            )
            train, self.label_names = classify.read_table(_need_file(c, "train_file"), **kwargs)
            kwargs["label_names"] = self.label_names
            if c.dev_file:
                dev, _ = classify.read_table(c.dev_file, **kwargs)
            else:
                train, dev = _holdout(train, c.dev_fraction)
            out = {"train": train, "dev": dev}
            if c.test_file:
                out["test"], _ = classify.read_table(c.test_file, **{**kwargs, "label": None})
        self.num_labels = len(self.label_names)
        return out

    def featurize(self, split, examples):
        return classify.featurize(
            examples, self.tokenizer, self.cfg.max_seq_length, self.num_labels, self.multilabel
        )

    def _logits(self, examples, features, outputs):
        return outputs["logits"]

    def evaluate(self, split, examples, features, outputs):
        return classify.evaluate(
            examples, self._logits(examples, features, outputs), self.label_names
        )

    def write_predictions(self, split, examples, features, outputs, out_dir):
        os.makedirs(out_dir, exist_ok=True)
        classify.write_predictions(
            os.path.join(out_dir, f"{split}.tsv"),
            examples,
            self._logits(examples, features, outputs),
            self.label_names,
        )


class MultilabelTask(TextTask):
    head, metric, multilabel = "multilabel", "micro_f1", True

    def evaluate(self, split, examples, features, outputs):
        """Scores at threshold 0.5 (what selects the model) and with per-label thresholds
        tuned on this split (`*_tuned`: optimistic on dev; apply them to test)."""
        logits = outputs["logits"]
        m = classify.evaluate_multilabel(examples, logits, 0.5)
        self.thresholds = metrics.tune_thresholds(features["label"], classify.sigmoid(logits))
        tuned = classify.evaluate_multilabel(examples, logits, self.thresholds)
        return {**m, **{f"{k}_tuned": v for k, v in tuned.items()}}

    def write_predictions(self, split, examples, features, outputs, out_dir):
        os.makedirs(out_dir, exist_ok=True)
        thresholds = getattr(self, "thresholds", 0.5)
        classify.write_predictions(
            os.path.join(out_dir, f"{split}.tsv"),
            examples,
            outputs["logits"],
            self.label_names,
            multilabel=True,
            thresholds=thresholds,
        )


class LongDocTask(TextTask):
    """Documents longer than one sequence: windows are classified, their logits pooled."""

    def featurize(self, split, examples):
        c = self.cfg
        return classify.featurize_windows(
            examples,
            self.tokenizer,
            c.max_seq_length,
            c.window_stride or (c.max_seq_length - 2) // 2,
            self.num_labels,
            max_windows=c.max_windows or None,
        )

    def _logits(self, examples, features, outputs):
        return classify.pool_windows(
            outputs["logits"], features["example_index"], len(examples), self.cfg.window_pool
        )


class NerTask(Task):
    head, metric = "token", "f1"
    labels: list[str] | None = None  # the tags, read from the data by `load`

    @property
    def class_names(self) -> list[str] | None:
        return self.labels

    def load(self) -> dict[str, list]:
        c = self.cfg
        if c.train_file or c.source not in ("sample", "tfds"):  # local files win
            out = {"train": ner.read_conll(_need_file(c, "train_file"), c.scheme)}
            if c.dev_file:
                out["dev"] = ner.read_conll(c.dev_file, c.scheme)
            else:
                out["train"], out["dev"] = _holdout(out["train"], c.dev_fraction)
            if c.test_file:
                out["test"] = ner.read_conll(c.test_file, c.scheme)
        elif c.source == "sample":
            every = ner.read_conll(samples.fetch(c.name), scheme=c.scheme)
            train, dev = _holdout(every, c.dev_fraction)
            out = {"train": train, "dev": dev}
        else:
            out = {
                split: ner.tfds_conll2003(split, c.data_dir or None)
                for split in ("train", "dev", "test")
            }
        self.labels = ner.label_list([e for split in out.values() for e in split])
        self.num_labels = len(self.labels)
        return out

    def has_labels(self, split: str) -> bool:
        return True  # CoNLL test files carry gold tags

    def featurize(self, split, examples):
        return ner.featurize(examples, self.tokenizer, self.labels, self.cfg.max_seq_length)

    def evaluate(self, split, examples, features, outputs):
        m = ner.evaluate(examples, features, outputs["logits"], self.labels, self.cfg.scheme)
        return {k: v for k, v in m.items() if np.isscalar(v)}

    def write_predictions(self, split, examples, features, outputs, out_dir):
        os.makedirs(out_dir, exist_ok=True)
        tags = ner.decode(examples, features, outputs["logits"], self.labels)
        ner.write_predictions(os.path.join(out_dir, f"{split}.conll"), examples, tags)


class SwagTask(Task):
    head = "choice"

    def load(self) -> dict[str, list]:
        c = self.cfg
        out = {"train": swag.read_choices(_need_file(c, "train_file"))}
        if c.dev_file:
            out["dev"] = swag.read_choices(c.dev_file)
        else:
            out["train"], out["dev"] = _holdout(out["train"], c.dev_fraction)
        if c.test_file:
            out["test"] = swag.read_choices(c.test_file)
        self.num_labels = len(out["train"][0].endings)
        return out

    def has_labels(self, split: str) -> bool:
        return not split.startswith("test")

    def featurize(self, split, examples):
        return swag.featurize(examples, self.tokenizer, self.cfg.max_seq_length)

    def evaluate(self, split, examples, features, outputs):
        return swag.evaluate(examples, outputs["logits"])

    def write_predictions(self, split, examples, features, outputs, out_dir):
        os.makedirs(out_dir, exist_ok=True)
        swag.write_predictions(os.path.join(out_dir, f"{split}.csv"), examples, outputs["logits"])


class SquadTask(Task):
    head, metric = "span", "f1"

    def __init__(self, cfg, tokenizer):
        super().__init__(cfg, tokenizer)
        self.version_2 = cfg.name == "squad2"
        self.num_labels = 2

    def load(self) -> dict[str, list]:
        c = self.cfg
        if not c.train_file and c.source == "tfds":
            name = "squad/v2.0" if self.version_2 else "squad/v1.1"
            return {
                "train": squad.tfds_squad(name, "train", c.data_dir or None),
                "dev": squad.tfds_squad(name, "validation", c.data_dir or None),
            }
        out = {
            "train": squad.read_squad_json(_need_file(c, "train_file")),
            "dev": squad.read_squad_json(_need_file(c, "dev_file")),
        }
        if c.test_file:
            out["test"] = squad.read_squad_json(c.test_file)
        return out

    def featurize(self, split, examples):
        c = self.cfg
        return squad.featurize(
            examples,
            self.tokenizer,
            max_seq_length=c.max_seq_length,
            doc_stride=c.doc_stride,
            max_query_length=c.max_query_length,
            training=split == "train",
        )

    def _decode(self, examples, features, outputs, threshold: float = 0.0):
        return squad.postprocess(
            examples,
            features,
            outputs["start_logits"],
            outputs["end_logits"],
            n_best_size=self.cfg.n_best_size,
            max_answer_length=self.cfg.max_answer_length,
            version_2=self.version_2,
            null_score_diff_threshold=threshold,
            lowercase=self.tokenizer.lowercase,
        )

    def evaluate(self, split, examples, features, outputs):
        predictions, _, null_odds = self._decode(examples, features, outputs)
        m = dict(squad_eval.evaluate(examples, predictions, version_2=self.version_2))
        if self.version_2:
            # The threshold search wants every question's best span (never null), as
            # evaluate-v2.0.py's find_best_thresh does with --na-prob-file.
            spans, _, null_odds = self._decode(examples, features, outputs, float("inf"))
            best = squad_eval.best_threshold(examples, spans, null_odds)
            m.update(best)
            self.threshold = best["best_f1_thresh"]
        return m

    def write_predictions(self, split, examples, features, outputs, out_dir):
        # SQuAD 2.0: the null-score threshold tuned on dev (as the paper does) is applied.
        threshold = getattr(self, "threshold", 0.0) if self.version_2 else 0.0
        predictions, nbest, null_odds = self._decode(examples, features, outputs, threshold)
        squad.write_predictions(os.path.join(out_dir, split), predictions, nbest, null_odds)


_KINDS = {
    "glue": GlueTask,
    "text": TextTask,
    "multilabel": MultilabelTask,
    "longdoc": LongDocTask,
    "ner": NerTask,
    "swag": SwagTask,
    "squad": SquadTask,
}


def make_task(cfg, tokenizer) -> Task:
    if cfg.kind not in _KINDS:
        raise ValueError(f"task.kind={cfg.kind!r}; use one of {sorted(_KINDS)}.")
    return _KINDS[cfg.kind](cfg, tokenizer)


def _write_rows(path: str, guids: list[str], logits: np.ndarray, label_names) -> None:
    """guid<TAB>prediction: a label name (argmax) or, for one output, the regressed value."""
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    logits = np.asarray(logits)
    with open(path, "w") as f:
        f.write("guid\tprediction\n")
        for guid, row in zip(guids, logits, strict=True):
            value: Any = float(row[0]) if len(row) == 1 else label_names[int(np.argmax(row))]
            f.write(f"{guid}\t{json.dumps(value) if isinstance(value, float) else value}\n")
