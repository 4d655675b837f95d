#!/usr/bin/env bash
# The GPU kit on a lent device machine: install the carried wheels, run benchmarks/gpu_memory.py (~7 min), write
# the fit table to $OUT. Nothing here downloads anything: that machine reaches no network.
#
# WHAT THE MACHINE HAS (/work/.library/device/KINDS.md, nvidia-h200): Python 3.12 with torch 2.11 (CUDA 13),
# transformers 5.17, peft, accelerate 1.15, tokenizers, pyarrow, pandas, xxhash, huggingface_hub, matplotlib, psutil,
# pyyaml; NOT trl, bitsandbytes, datasets, dill, multiprocess. trl 1.16.0 asks for transformers>=4.56.2 and
# accelerate>=1.10.1 (it gates its newer features on the transformers version itself), so transformers and
# accelerate stay the machine's; the kit avoids `activation_checkpointing`, which transformers 5.17 lacks (it uses
# the recipes' `gradient_checkpointing`). `python benchmarks/gpu_memory.py --smoke` passed on the CPU machine with
# transformers 5.17.0, accelerate 1.15.0 and huggingface_hub 1.33.0 put in front of the installed ones. The
# bitsandbytes 0.50.2 wheel holds libbitsandbytes_cuda130.so (CUDA 13). Not checked: the machine's pyarrow/fsspec
# against datasets 5.2.0 (pyarrow>=24, fsspec<=2026.9.0): env.txt lists them, and the import check says.
#
# PREPARE (on the development machine, once, in the ROOT OF THE CHECKOUT THAT THE DEVICE TOOL SENDS: the session's
# own repository, not a helper's worktree; the kit's files must be in that checkout too):
#
#   echo /.whl/ >> .git/info/exclude            # .gitignore already ignores /.whl/; never commit wheels
#   for pkg in trl==1.16.0 bitsandbytes==0.50.2 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19; do
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
#       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$pkg"
#   done
#   du -ch .whl | tail -1                         # ~45 MB (bitsandbytes 43 MB); the tree + wheels must stay < 64 MiB
#
# RUN (one call; the machine's start and the transfers come on top; device time is 15 min per task in all):
#
#   run(command="GPU_KIT_COMMIT=abc1234 bash benchmarks/gpu_kit.sh", carry=[".whl"], timeout_s=600)
#
#   with abc1234 = `git rev-parse --short HEAD` of the checkout sent (the copy there has no .git, so the report
#   takes the commit from GPU_KIT_COMMIT). Rerun only if it failed, and only if the failure came early (the import
#   check below stops within a minute); then give the machine back (give_back).
#   The files come back under the reply's files_at: gpu_memory.md, gpu_memory.json, gpu_memory.png, gpu_kit.log,
#   env.txt. Copy the first three to benchmarks/results/ and update README.md / benchmarks/RESULTS.md and the GPU
#   configs' "not run" notes with the measured figures.
#
# CHECK HERE FIRST (no GPU needed; the same code, tiny shapes, ~33 s of CPU time):
#   OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/gpu_memory.py --smoke --results_dir /tmp/gpu-kit-smoke
#
# Knobs (environment): KIT_BUDGET_S (default 400: the kit's own budget; install ~30 s and the report come on top),
# KIT_ARGS (extra gpu_memory.py flags, e.g. "--archs qwen2.5-1.5b --jobs 3").
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-kit-out}"
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_kit.log") 2>&1
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
start=$(date +%s)

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python3 --version

if ls .whl/*.whl >/dev/null 2>&1; then
  echo "== installing $(ls .whl | tr '\n' ' ')"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD"
else
  echo "no .whl/ folder: using what is installed (carry .whl, see this script's header)"
  export PYTHONPATH="$PWD"
fi

echo "== versions and the import check"
python3 - <<'EOF' | tee "$OUT/env.txt"
import importlib.metadata as md
for name in ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "datasets", "tokenizers",
             "pyarrow", "pandas", "fsspec", "huggingface_hub", "dill", "multiprocess", "xxhash", "matplotlib"):
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name}: MISSING")
import torch, bitsandbytes, datasets, trl, peft, trl_ext  # noqa: E401  fail here, within the first minute
print("cuda", torch.cuda.is_available(), torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF

echo "== the kit (budget ${KIT_BUDGET_S:-400} s) after $(( $(date +%s) - start )) s"
# shellcheck disable=SC2086
python3 benchmarks/gpu_memory.py --results_dir "$OUT" --budget_s "${KIT_BUDGET_S:-400}" ${KIT_ARGS:-}
echo "== done in $(( $(date +%s) - start )) s"
