#!/usr/bin/env bash
# Every GPU check of this project in one run on a lent GPU machine (docs/benchmarks.md):
#   1. tests/gpu: data on the device, no host sync per step, bf16 + channels_last,
#      torch.compile without fallback, a whole job on CUDA;
#   2. bench/retrain_throughput.py on cuda (bf16, batch 512; resnet20, vgg19, resnet50)
#      and one real 50-epoch SILO cycle, extrapolated to the paper's job.
# It uses that machine's python3 and torch; pydantic, which its image lacks, comes from
# the wheels in .whl/ that scripts/gpu-wheels fetches here. Logs go to $OUT (or
# /tmp/silo-gpu-check). Through the device tool:
#   run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=540)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/silo-gpu-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD:$PWD/tests"  # silo_core from this tree; tests/ for data_files
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/silo-site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/silo-site:$PYTHONPATH"
fi
python3 - <<'PY' | tee "$out/gpu.txt" || exit 1
import torch
assert torch.cuda.is_available(), "CUDA is not available here"
props = torch.cuda.get_device_properties(0)
print(f"{props.name}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs; "
      f"torch {torch.__version__}, CUDA {torch.version.cuda}")
PY
status=0
# --confcutdir: tests/conftest.py sets up databases, which this check needs none of.
python3 -m pytest -p no:cacheprovider --confcutdir=tests/gpu tests/gpu 2>&1 \
    | tee "$out/tests.log" || status=1
python3 bench/retrain_throughput.py --device cuda --batch-size 512 \
    --models resnet20,vgg19,resnet50 --paper-job 50 2>&1 | tee "$out/throughput.log" || status=1
exit "$status"
