#!/usr/bin/env bash
# The GPU checks of the distillation and task bundles, one command, no network: about 6 minutes on one H100/H200.
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine (DEVICE=cuda)
#   DEVICE=cpu QUICK=1 bash benchmarks/gpu_check.sh   # its CPU path, tiny sizes (what CI and a laptop can run)
#
# Prints one table (markdown) and writes the raw rows to $OUT (default /tmp/gpu_check):
#   1. distillation iteration img/s and per part, peak GPU memory, MFU (benchmarks/distillation_throughput.py)
#   2. the real `monai.bundle run configs/train.json` over epochs of a phantom pool decoded to uint8 shards
#   3. coreset stages (features, quality, clustering, selection) samples/s on >= 200K pool rows and the
#      projection to 2.2M images, said to be linear extrapolation (benchmarks/coreset_scale.py)
#   4. task bundles' train.json on CUDA, and both multi_gpu_train.json configs under torchrun (1 process per GPU)
# Packages the GPU image lacks (monai, pytorch-ignite, pydicom) travel as wheels in .whl/, prepared on a machine
# with network by `bash benchmarks/gpu_wheels.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
OUT=${OUT:-/tmp/gpu_check}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TINYUSFM_CACHE="$OUT/cache"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ "$QUICK" = 1 ]; then
  SIZE=64; BATCHES="4"; STEPS=2; POOL=16; BBATCH=4; WORKERS=0; EPOCHS=2; ROWS=2048; TASK_EPOCHS=1
else
  SIZE=224; BATCHES="128 256"; STEPS=10; POOL=4096; BBATCH=256; WORKERS=14; EPOCHS=4; ROWS=204800; TASK_EPOCHS=1
fi
log() { echo "== $*" >&2; }
t0=$(date +%s)
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true

log "1-2. distillation iteration and the real bundle"
$PY benchmarks/distillation_throughput.py --device "$DEVICE" --batch $BATCHES --image-size $SIZE --steps $STEPS \
  --warmup 3 --bundle --bundle-pool $POOL --bundle-batch $BBATCH --bundle-workers $WORKERS --bundle-epochs $EPOCHS \
  --json "$OUT/throughput.json" | tee "$OUT/throughput.md"

log "3. coreset stages at scale"
$PY benchmarks/coreset_scale.py --device "$DEVICE" --rows $ROWS --image-size $SIZE --json "$OUT/coreset.json" \
  | tee "$OUT/coreset.md"

log "4. task bundles and multi-GPU configs"
RUNS="$OUT/bundles"; rm -rf "$RUNS"; mkdir -p "$RUNS"
cp -r bundles/busi_classification bundles/busi_segmentation bundles/tinyusfm_distillation "$RUNS"/
status="$OUT/bundle_runs.tsv"; : > "$status"
run_bundle() {  # name, then the command; records seconds and exit status
  local name=$1; shift
  local s=$(date +%s)
  if "$@" > "$OUT/$name.log" 2>&1; then echo -e "$name\tok\t$(( $(date +%s) - s ))" >> "$status"
  else echo -e "$name\tFAILED\t$(( $(date +%s) - s ))" >> "$status"; tail -20 "$OUT/$name.log" >&2; fi
}
TINY=(--image_size $SIZE --max_epochs $TASK_EPOCHS --batch_size 16 --num_workers 2)
for task in busi_classification busi_segmentation; do
  run_bundle "$task-train" $PY -m monai.bundle run --config_file "$RUNS/$task/configs/train.json" "${TINY[@]}"
done
run_bundle "busi_segmentation-multi_gpu" $PY -m torch.distributed.run --standalone --nproc_per_node=1 -m monai.bundle run \
  --config_file "['$RUNS/busi_segmentation/configs/train.json','$RUNS/busi_segmentation/configs/multi_gpu_train.json']" \
  "${TINY[@]}" --resume False
echo "{\"phantom_pool_size\": $POOL, \"image_size\": $SIZE, \"batch_size\": $BBATCH, \"max_epochs\": 1}" > "$OUT/d.json"
run_bundle "distillation-multi_gpu" $PY -m torch.distributed.run --standalone --nproc_per_node=1 -m monai.bundle run \
  --config_file "['$RUNS/tinyusfm_distillation/configs/train.json','$RUNS/tinyusfm_distillation/configs/multi_gpu_train.json']" \
  --args_file "$OUT/d.json"

$PY - "$OUT" "$status" "$(( $(date +%s) - t0 ))" <<'PY'
import json, sys
out, status, seconds = sys.argv[1], sys.argv[2], sys.argv[3]
rows = json.load(open(f"{out}/throughput.json"))
core = json.load(open(f"{out}/coreset.json"))
print("\n## GPU check summary (benchmarks/gpu_check.sh)\n")
print("| check | result |")
print("|---|---|")
for r in rows:
    if r["mode"] == "bundle":
        print(f"| `monai.bundle run train.json` (pool {r['pool']}, batch {r['batch']}, {r['workers']} workers) | "
              f"{r['images_per_s']:.0f} img/s over epochs 2..{r['epochs']} |")
    else:
        extra = f", MFU {100 * r['mfu']:.0f} %" if r.get("mfu") else ""
        print(f"| {r['mode']} (batch {r['batch']}, {r['device']}, AMP {r['amp']}) | {r['images_per_s']:.0f} img/s, "
              f"{r['ms_per_step']:.1f} ms/step, peak {r['peak_mib']:.0f} MiB{extra} |")
for stage, rate in core["stages_per_s"].items():
    print(f"| coreset {stage} ({core['rows']:,} rows) | {rate:,.0f} samples/s |")
print(f"| coreset of {core['budget']:.0%} of 2.2M images, projected (linear in N from {core['rows']:,} rows) | "
      f"{core['projected_2p2m_s'] / 60:.1f} min |")
failed = []
for line in open(status):
    name, result, secs = line.rstrip("\n").split("\t")
    print(f"| {name} | {result} ({secs} s) |")
    failed += [name] if result != "ok" else []
print(f"\nwhole check: {seconds} s")
if failed:  # the table is printed either way; the exit status says whether every run passed
    sys.exit(f"failed: {', '.join(failed)} (logs in {out})")
PY
