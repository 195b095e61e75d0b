"""bert-jax: BERT pre-training and fine-tuning in JAX/Flax."""
