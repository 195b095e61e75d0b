"""Test set-up: 8 fake CPU devices for the parallel code (must happen before JAX starts), and a
persistent compilation cache shared by the tests of one run (many compile the same tiny models)."""

import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Keep TensorFlow off the (fake) accelerators and from grabbing all cores' threads.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import jax  # noqa: E402

jax.config.update(
    "jax_compilation_cache_dir",
    os.environ.get(
        "BERT_JAX_TEST_CACHE", os.path.join(tempfile.gettempdir(), "bert_jax_xla_cache")
    ),
)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
