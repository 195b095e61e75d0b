r"""BERT pre-training (masked LM + next-sentence prediction).

Paper recipe (BERT-base, phase 1 at sequence length 128):

  python -m bert_jax.main --config=configs/pretrain.py:size=base --workdir=runs/base \
      --config.data.train_files='gs://my-bucket/bert_data/train-*.tfrecord' \
      --config.data.eval_files='gs://my-bucket/bert_data/eval.tfrecord' \
      --config.data.vocab_file=vocab.txt

The built-in demo (BERT-tiny on the Wikipedia sample; prepares its data itself):

  python -m bert_jax.main --config=configs/pretrain.py:size=tiny,demo --workdir=runs/demo

`arg` keys: size (tiny|mini|small|medium|base|large), seq (128|512), demo (flag). Every field below
can be overridden, e.g. --config.train.batch_size=256 --config.optimizer.learning_rate=2e-4.
"""

from __future__ import annotations

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, size="base", seq=128, demo=False)
    config = ml_collections.ConfigDict()

    config.model = common.model_config(arg.size)
    # Start from these weights (a Hugging Face dir, a Google TF checkpoint, or a bert-jax workdir
    # or export; see `python -m bert_jax.convert`). Its architecture replaces the sizes in
    # `model` (dropout and dtype still apply) and its vocab.txt is used unless data.vocab_file is
    # set. A checkpoint in --workdir takes precedence: rerunning resumes rather than restarts.
    config.init_checkpoint = ""

    config.data = ml_collections.ConfigDict()
    # If set, `prepare` builds the data below from this corpus first (a no-op when already built):
    # "sample:enwiki" (the Wikipedia sample), a MediaWiki .xml(.bz2) dump, or a text file with one
    # sentence per line and blank lines between documents. Empty: use existing TFRecords.
    config.data.corpus = ""
    # Output directory of `prepare` (vocab.txt, train-*.tfrecord, eval.tfrecord, stats.json).
    config.data.dir = ""
    # WordPiece size `prepare` trains when it builds the vocabulary.
    config.data.vocab_size = 8192
    # Copies of the corpus, each with other masks (dupe_factor of create_pretraining_data.py).
    config.data.dupe_factor = 5
    # TFRecords in the original create_pretraining_data.py format (glob); default: in data.dir.
    config.data.train_files = ""
    config.data.eval_files = ""
    # vocab.txt matching the TFRecords; default: data.dir/vocab.txt.
    config.data.vocab_file = ""
    # Must equal the lengths the TFRecords were written with (phase 1: 128/20; phase 2: 512/80).
    config.data.max_seq_length = arg.seq
    config.data.max_predictions_per_seq = common.max_predictions(arg.seq)
    # Records held in the shuffle buffer.
    config.data.shuffle_buffer = 10_000
    # Seed of the data order (shuffling); the order is a pure function of it and the step.
    config.data.seed = 0
    # Masked-LM recipe (used by `prepare`, and by the pipeline with dynamic_masking).
    # Share of WordPiece tokens predicted (paper: 15%).
    config.data.masked_lm_prob = 0.15
    # What a predicted token shows, MASK/SAME/RND percent; paper Table 8 also tries 100/0/0,
    # 80/0/20, 80/20/0, 0/20/80 and 0/0/100.
    config.data.masking_split = "80/10/10"
    # Whole-word masking: "none"; "wordpiece" (a word's ## pieces are masked together);
    # "segmented" (space-separated words of a pre-segmented corpus, e.g. sample:peoples_daily).
    config.data.whole_word_mask = "none"
    # Sentence pairs with next-sentence prediction (BERT). False: single segments packed with
    # whole sentences across documents, NSP labels 0 (BERT Table 5 "No NSP", RoBERTa).
    config.data.next_sentence = True
    # Chance that a document gets a shorter random target length (original short_seq_prob).
    config.data.short_seq_prob = 0.1
    # Mask in the input pipeline, a fresh mask per epoch (prepare writes unmasked records; the
    # mask is a pure function of data.seed and the step). False: static masks x dupe_factor.
    config.data.dynamic_masking = False
    # Lowercase and strip accents when tokenizing (an uncased vocab).
    config.data.lowercase = True
    # Training TFRecord files `prepare` writes (= shards made in parallel; output depends on it).
    config.data.num_train_files = 4
    # Sequence packing: train on rows holding up to this many whole instances each (attention
    # block-diagonal, positions and NSP per instance), made once from the training files into
    # packed<K>/ beside them (data/packing.py); fills the padding the recipe leaves. 0: off.
    config.data.pack_sequences = 0
    # Two-phase pre-training (paper: 90% of steps at seq 128, the rest at 512): from this step
    # on, train on the phase-2 data (0: a single phase). The learning-rate schedule runs on.
    config.data.phase2_step = 0
    # Where `prepare` writes phase-2 data (from data.corpus, with phase 1's vocab.txt).
    config.data.phase2_dir = ""
    # Phase-2 TFRecords (glob); default: in data.phase2_dir.
    config.data.phase2_train_files = ""
    config.data.phase2_eval_files = ""
    # Phase-2 lengths (the paper's 512 / 80).
    config.data.phase2_max_seq_length = 512
    config.data.phase2_max_predictions_per_seq = 80

    config.optimizer = ml_collections.ConfigDict()
    # "adamw" (optax's, with bias correction), "bert_adamw" (the original BERT's update: no bias
    # correction, smaller early steps) or "lamb" (You et al., 2019, for large batches).
    config.optimizer.name = "adamw"
    # Peak learning rate, reached after warmup_steps, then linear decay to 0 at num_train_steps.
    config.optimizer.learning_rate = 1e-4
    config.optimizer.warmup_steps = 10_000
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    # BERT's epsilon (1e-6, not optax's default 1e-8).
    config.optimizer.eps = 1e-6
    # Decoupled weight decay; LayerNorm parameters and biases are excluded.
    config.optimizer.weight_decay = 0.01
    # Clip gradients to this global norm (0 disables).
    config.optimizer.grad_clip_norm = 1.0
    # Accumulate gradients over this many steps before an update (optax.MultiSteps).
    config.optimizer.grad_accum_steps = 1

    config.train = ml_collections.ConfigDict()
    # Global batch in sequences (split across devices and hosts).
    config.train.batch_size = 256
    # Schedule length; the learning rate reaches 0 here.
    config.train.num_train_steps = 1_000_000
    # Stop this invocation at this step (0: at num_train_steps); rerunning the command continues.
    config.train.stop_at_step = 0
    # "auto" (several processes: mesh; one: pmap on several local devices, else jit), "pmap",
    # "jit" (both within one process), or "mesh": one jit over a
    # (data, fsdp, tensor) mesh of every device of every host, parameters and optimizer state
    # sharded by the rules in bert_jax/parallel.py (FSDP over fsdp, Megatron-style over tensor).
    config.train.parallel = "auto"
    # Mesh axis sizes for parallel="mesh"; their product is the device count (-1: the rest).
    config.train.mesh_data = -1
    config.train.mesh_fsdp = 1
    config.train.mesh_tensor = 1
    # XLA compile options for the train and eval steps, "name=value,..." (parallel 'jit' or
    # 'mesh'). On a CPU with AVX-512, "xla_cpu_prefer_vector_width=512" makes the bf16 step ~2%
    # faster (docs/benchmarks.md).
    config.train.compiler_options = ""
    # Batches read, checked and copied to the devices ahead of the step that trains on them, in
    # a background thread (0: each batch when its step starts).
    config.train.prefetch_batches = 2
    # Progress line, JSONL and TensorBoard every this many steps.
    config.train.log_every = 100
    # Evaluate on data.eval_files every this many steps (and at the start and the end).
    config.train.eval_every = 10_000
    # Evaluation batches per evaluation (0: the whole eval set).
    config.train.eval_batches = 100
    config.train.eval_batch_size = 256
    # Checkpoint every this many steps (and at the end); keep this many newest.
    config.train.checkpoint_every = 10_000
    config.train.keep_checkpoints = 3
    # Seed of parameter init and dropout (data order has its own seed, data.seed).
    config.train.seed = 0
    # A step with a non-finite loss or gradient is skipped (no update); this many in a row stop
    # the run with an error.
    config.train.max_skipped_steps = 10

    if arg.demo:
        # BERT-tiny on the gensim Wikipedia sample, a few minutes on two CPU cores.
        config.data.corpus = "sample:enwiki"
        config.data.dir = f"data/enwiki_{arg.seq}"
        config.data.shuffle_buffer = 2_000
        config.train.batch_size = 64
        config.train.num_train_steps = 600
        config.train.log_every = 50
        config.train.eval_every = 200
        config.train.eval_batches = 0
        config.train.eval_batch_size = 128
        config.train.checkpoint_every = 200
        # A tiny model wants a larger learning rate and a short warmup.
        config.optimizer.learning_rate = 2e-3
        config.optimizer.warmup_steps = 60
    return config
