#!/usr/bin/env bash
# The Python module on a CUDA machine (docs/python.md "Speed"): builds it in
# an existing CUDA build tree, then writes to OUT_DIR
#   devices.json     diffuse.devices()
#   cuda_vs_cpu.txt  the demo model through Python on cuda (fp16) and cpu (fp32): same seed, image difference
#   bench_cuda.json  python/bench_python.py --device cuda (Python loop against `diffuse bench`)
#   log.txt          what ran, and why something did not
#
#   python/tools/gpu_check.sh BUILD_DIR OUT_DIR
set -uo pipefail
build=$1
out=$2
mkdir -p "$out"
exec > >(tee "$out/log.txt") 2>&1
py=$(sed -n 's/^DIFFUSE_PYTHON_EXECUTABLE:FILEPATH=//p' "$build/CMakeCache.txt")
[ -n "$py" ] || { cmake -S . -B "$build" >/dev/null; py=$(sed -n 's/^DIFFUSE_PYTHON_EXECUTABLE:FILEPATH=//p' "$build/CMakeCache.txt"); }
echo "python: ${py:-none}"
cmake --build "$build" --target diffuse diffuse_python 2>&1 | tail -3
ls "$build"/python/diffuse/_diffuse*.so || { echo "the module was not built (see cmake's 'Python module:' line)"; exit 0; }
export PYTHONPATH=$build/python
"$py" -c 'import json, diffuse; print(json.dumps(diffuse.devices(), indent=1))' > "$out/devices.json"
"$py" - > "$out/cuda_vs_cpu.txt" <<'PY'
import numpy as np, diffuse
kw = dict(num_inference_steps=20, generator=1, num_images_per_prompt=2, output_type="np")
prompt = "a red circle on the left, on a blue background"
gpu = diffuse.Pipeline.from_pretrained(device="cuda")
cpu = diffuse.Pipeline.from_pretrained(device="cpu")
a, b = gpu(prompt, **kw), cpu(prompt, **kw)
print("cuda", gpu.info["dtype"], "vs cpu fp32: image max abs", float(np.abs(a.images - b.images).max()),
      "mean abs", float(np.abs(a.images - b.images).mean()))
print("cuda infotext:", a.infotext)
PY
"$py" python/bench_python.py --diffuse "$build/diffuse" --device cuda --steps 30 --images 4 --rounds 5 --json \
  > "$out/bench_cuda.json"
echo "done"
