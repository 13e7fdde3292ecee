#!/usr/bin/env bash
# GPU benchmarks in one go (minutes): AST-B eager FP32/FP16 vs ONNX Runtime's CUDA provider
# (bench_gpu.py; the ORT rows only where onnxruntime-gpu is installed), then the Triton kernels of
# ASSA and the partial convolution against their eager versions with bytes moved against the GPU's
# copy bandwidth (bench_kernels.py), at 256, 512 and 1024. Appends a section with the GPU's name to
# benchmarks/RESULTS.md.
#
#   bash benchmarks/gpu.sh [--sizes 256,512,1024] [--runs 10] [--no-results]
#
# Exits 2 with a message when no CUDA GPU is visible (nvidia-smi / torch.cuda), before measuring anything.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
sizes=256,512,1024
runs=10
write=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --sizes) sizes="${2:?--sizes needs a value}"; shift 2 ;;
    --runs) runs="${2:?--runs needs a value}"; shift 2 ;;
    --no-results) write=0; shift ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
py="${PYTHON:-python3}"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
if ! "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu.sh: no CUDA GPU visible to PyTorch here (torch.cuda.is_available() is False); nothing measured" >&2
  exit 2
fi
gpu="$("$py" -c 'import torch; print(torch.cuda.get_device_name())')"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
echo "== $gpu: whole model, eager vs ONNX Runtime CUDA" >&2
timeout 1800 "$py" "$here/bench_gpu.py" --sizes "$sizes" --runs "$runs" --out-md "$out/model.md" | tee "$out/model.log"
echo "== $gpu: Triton kernels vs eager" >&2
if "$py" -c 'import triton' 2>/dev/null; then
  timeout 1800 "$py" "$here/bench_kernels.py" --sizes "$sizes" --dtypes fp16,fp32 --batch 1 --reps 50 | tee "$out/kernels.log"
else
  echo "triton is not installed (pip install -e '.[kernels]'): kernel rows skipped" | tee "$out/kernels.log"
fi
if [[ $write == 1 ]]; then
  {
    echo
    echo "## GPU: $gpu (benchmarks/gpu.sh, $(date -u +%Y-%m-%d))"
    echo
    echo "driver: $(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1 || echo unknown);" \
         "$("$py" -c 'import torch, importlib.util as u; import sys; ort = u.find_spec("onnxruntime"); print(f"torch {torch.__version__}" + (f", onnxruntime {__import__("onnxruntime").__version__}" if ort else ""))')"
    echo
    cat "$out/model.md"
    echo
    echo '```'
    cat "$out/kernels.log"
    echo '```'
  } >> "$here/RESULTS.md"
  echo "gpu.sh: appended to $here/RESULTS.md" >&2
fi
