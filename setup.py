"""bert-jax: BERT pre-training and fine-tuning in JAX/Flax."""

from setuptools import find_packages, setup

# TensorFlow is only used for tf.data / TFRecord / TFDS / TensorBoard; the CPU wheel is enough
# everywhere (JAX does the compute). `tensorflow-cpu` only exists for x86-64 Linux and Windows.
_TF_CPU = "tensorflow-cpu>=2.16,<2.22; platform_machine == 'x86_64' or platform_machine == 'AMD64'"
_TF = "tensorflow>=2.16,<2.22; platform_machine != 'x86_64' and platform_machine != 'AMD64'"

setup(
    name="bert-jax",
    version="0.1.0",
    description="BERT pre-training and fine-tuning in JAX/Flax",
    packages=find_packages(include=["bert_jax", "bert_jax.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.6,<0.11",
        "flax>=0.10,<0.13",
        "optax>=0.2.4,<0.3",
        "orbax-checkpoint>=0.11.20,<0.13",
        "chex>=0.1.88,<0.2",
        "ml-collections>=1.0,<2",
        "absl-py>=2.0",
        "numpy>=1.26",
        _TF_CPU,
        _TF,
        # TensorBoard event files are written through tf.summary, which needs this package.
        "tensorboard>=2.16",
        "tensorflow-datasets>=4.9.6,<4.10",
        "importlib_resources>=6",  # imported by tensorflow-datasets 4.9.x but not declared
        "tokenizers>=0.19,<0.24",
        "blingfire>=0.1.8,<0.2",
        "mwparserfromhell>=0.6.6,<0.8",
        # Reading/writing Hugging Face weight files (numpy API, no torch needed).
        "safetensors>=0.4",
        # TFRecord checksums (CRC-32C in hardware) without importing TensorFlow in data workers.
        "google-crc32c>=1.5",
        # Plots of sweep results (experiments/paper_tables.py).
        "matplotlib>=3.7",
    ],
    extras_require={
        # transformers + torch (CPU) only prove numerical parity in tests, scikit-learn and
        # seqeval the metrics; never a runtime need.
        "test": [
            "pytest>=8",
            "pytest-xdist>=3.6",
            "ruff>=0.6",
            "transformers>=4.45,<6",
            "torch==2.13.0",
            "scikit-learn>=1.3",
            "seqeval==1.2.2",
        ],
    },
)
