"""Data: sample corpora, pre-training instances, tf.data pipelines."""
