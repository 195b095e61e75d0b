#!/usr/bin/env bash
# Issue 9's GPU figures in one call of a lent machine (at most ~8 minutes): the pre-training step of
# BERT-base, seq 128, bfloat16, on one GPU, with the levers that matter there, each run a JSON
# line in $OUT/gpu.jsonl and all of them a table in $OUT/gpu.md (MFU against the bf16 matmul
# peak measured in the same run, and against the chip's nominal dense bf16 peak).
#
# The device image has JAX with CUDA but not ml_collections; carry its wheel. Here, once:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl ml_collections==1.1.0
# then run `bash experiments/gpu_check.sh` there with carry=[".whl"] and a 540 s limit (a run that
# would end past BUDGET seconds, default 480, is skipped; the summary is always written).
# Off a GPU it runs the same runs with attention=dot (cuDNN needs a GPU); to check the script
# itself on a CPU: SIZE=tiny BATCH=8 STEPS=2 bash experiments/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu_check}
mkdir -p "$out"
rm -f "$out/gpu.jsonl"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>/dev/null
# Versions, devices, and this repo's modules imported: an incompatibility shows in seconds.
python3 -c "import jax, flax, optax, orbax.checkpoint as o, ml_collections
from bert_jax import train, finetune
print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__,
      'orbax', o.__version__, jax.devices())" || exit 1
# cuDNN's attention checked against XLA's first (experiments/gpu_check.py): "dot" if it fails.
attention=$(python3 experiments/gpu_check.py attention)
echo "attention for the fast runs: $attention"
size=${SIZE:-base}
batch=${BATCH:-256}
steps=${STEPS:-20}
fast="attention_probs_dropout_prob=0,dropout_rng=rbg"

run() {  # one benchmark process: its arguments are added to the common ones
  if ((SECONDS + ${PER_RUN:-90} > ${BUDGET:-480})); then
    echo "== skipped ($SECONDS s used): $*"
    return
  fi
  echo "== $*"
  timeout "${PER_RUN:-90}" python3 experiments/benchmark.py --size="$size" --seq=128 \
    --batch="$batch" --steps="$steps" --rounds=1 --dtype=bfloat16 --noreference \
    --output="$out/gpu.jsonl" "$@" 2>&1 | grep -v "^[IW][0-9]\{4\} " | tail -4
}

run --set="attention=$attention,$fast"                         # cuDNN attention, no attn dropout
run --set="attention=dot,$fast"                                # XLA's attention, the same model
run --set="attention=$attention,$fast,fused_qkv=true"          # + one QKV matmul
run --set="attention=$attention,$fast" --batch=$((batch * 2))  # a larger batch
run --set=dropout_rng=rbg                         # the paper's model: attention dropout, einsum
run --set="attention=$attention,$fast,scan_layers=true"        # nn.scan over the layers
python3 experiments/gpu_check.py summary "$out"
