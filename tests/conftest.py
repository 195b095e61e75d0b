"""Test set-up: 8 fake CPU devices for the parallel code (must happen before JAX starts), and a
persistent compilation cache shared by the tests of one run and the processes they start (many
compile the same tiny models)."""

import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Keep TensorFlow off the (fake) accelerators and from grabbing all cores' threads.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# JAX reads these when it is imported, here and in subprocesses (the CLI and launcher tests).
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "bert_jax_xla_cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
