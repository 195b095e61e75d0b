"""Builds a local corpus into the versioned TFDS dataset `bert_text_corpus/<name>`.

    python -m bert_jax.data.tfds_build --corpus=sample:enwiki --name=enwiki --data_dir=~/tfds

(A separate module: run as __main__, tfds_corpus.py would register its builder a second time.)
"""

from __future__ import annotations

import os

from absl import app, flags

flags.DEFINE_string("corpus", None, "sample:<name> or a corpus file.", required=True)
flags.DEFINE_string("name", None, "Dataset config name, e.g. 'enwiki'.", required=True)
flags.DEFINE_string("data_dir", os.path.expanduser("~/tensorflow_datasets"), "TFDS data_dir.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments {argv[1:]}; use --flag=value.")
    import tensorflow_datasets as tfds

    from bert_jax.data import tfds_corpus

    tfds.disable_progress_bar()
    f = flags.FLAGS
    builder = tfds_corpus.build(f.corpus, f.name, os.path.expanduser(f.data_dir))
    print(f"Built {tfds_corpus.BUILDER_NAME}/{f.name} {builder.version} in {builder.data_dir}.")


if __name__ == "__main__":
    app.run(main)
