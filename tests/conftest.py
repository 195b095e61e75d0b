"""Test set-up: 8 fake CPU devices for the parallel code (must happen before JAX starts)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Keep TensorFlow off the (fake) accelerators and from grabbing all cores' threads.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
