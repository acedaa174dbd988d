#!/usr/bin/env bash
# The prepared GPU check, run from the repository root on a CUDA machine with torch, numpy, OpenCV and
# scikit-image installed: training throughput (bf16 vs fp32 eager, same process), the torch metric backend's
# speed and agreement with scikit-image, the metric tests on the GPU backend, and the largest inference tile.
# Logs go to $OUT (default ./gpu_check). The metric parts read ../shared/data like the tests do.
set -uo pipefail
out="${OUT:-gpu_check}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{ nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } \
    2>&1 | tee "$out/device.txt"
python3 benchmarks/bench_train.py --device cuda --seconds 20 2>&1 | tee "$out/bench_train.txt"
python3 benchmarks/bench_metrics.py --torch --repeat 1 2>&1 | tee "$out/bench_metrics.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_metrics.py 2>&1 | tee "$out/test_metrics_cuda.txt"
python3 - <<'EOF' 2>&1 | tee "$out/tiles.txt"
import torch
from realsr_tools.models import create_model
from realsr_tools.stages.score import exact_overlap, largest_tile, tiled_sr

model = create_model("edsr", 4).cuda().eval()
fit = largest_tile(model, budget=int(torch.cuda.mem_get_info()[0] * 0.8), device="cuda")
print("largest tile", fit.tile, "LR px;", round(fit.per_pixel), "bytes per LR pixel")
x = torch.rand(1, 3, 1000, 1500, device="cuda")
with torch.inference_mode():
    whole = model(x)
    torch.cuda.reset_peak_memory_stats()
    tiled = tiled_sr(model, x, scale=4, tile=512, overlap=exact_overlap(model))
print("6000x4000 output", tuple(tiled.shape), f"peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB (tile 512)",
      f"max |tiled - whole| {(tiled - whole).abs().max().item():.2e}")
EOF
timeout 200 python3 benchmarks/bench_train.py --device cuda --seconds 15 --batch 128 --compile 2>&1 \
    | tee "$out/bench_train_compile.txt"
