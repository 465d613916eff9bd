#!/usr/bin/env bash
# Every accelerator figure of issue 21 in one command, under 8 minutes on one GPU; ends with one
# JSON summary line (also $OUT/summary.json). Stages run most important first, each under its own
# time limit and all under DEADLINE seconds (470): a stage that would pass it is skipped and named.
#
#   bash tools/device_check.sh [--torch-ref PATH] [--torch-python PY] [--data FILE] [--out DIR] [--quick]
#
# --torch-ref (or $TORCH_REF): the PyTorch reference, ../shared/bench/torch_reference.py by default
# (a GPU machine may hold only the checkout: carry it). --data (or $MI): the Musical Instruments
# file. --quick: tiny sizes, a dry run of the script itself on any machine (CPU included).
# JSON lines of each stage go to $OUT/results.jsonl, everything else to $OUT/log.txt.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/device-check}; QUICK=""; TORCH_REF=${TORCH_REF:-../shared/bench/torch_reference.py}
PY=${PY:-python3}; TORCH_PY=${TORCH_PY:-$PY}
MI=${MI:-../shared/data/amazon-musical-instruments/reviews_Musical_Instruments_5.json.gz}
while [ $# -gt 0 ]; do
  case $1 in
    --torch-ref) TORCH_REF=$2; shift 2 ;;
    --torch-python) TORCH_PY=$2; shift 2 ;;
    --data) MI=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    *) echo "error: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"; LOG=$OUT/log.txt; RES=$OUT/results.jsonl; : > "$RES"; : > "$LOG"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:${PYTHONPATH:-}
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$OUT/jax-cache}
export JAXREVIEWS_TORCH_REFERENCE=$(cd "$(dirname "$TORCH_REF")" 2>/dev/null && pwd)/$(basename "$TORCH_REF")
T0=$(date +%s)
stage() { # name seconds command...: the command's JSON lines tagged with the stage
  local name=$1 t=$2; shift 2
  local s; s=$(date +%s); local left=$(( ${DEADLINE:-470} - (s - T0) ))
  [ "$t" -gt "$left" ] && t=$left
  if [ "$t" -lt 20 ]; then echo "=== [$name] skipped: out of time" | tee -a "$LOG"
    echo "{\"stage\": \"$name\", \"skipped\": true}" >> "$RES"; return 99; fi
  echo "=== [$name] +$((s-T0))s: $*" | tee -a "$LOG"
  timeout -k 5 "$t" "$@" > "$OUT/.stage" 2>&1; local rc=$?
  cat "$OUT/.stage" >> "$LOG"
  grep -E '^\{' "$OUT/.stage" | sed "s/^/{\"stage\": \"$name\", \"rc\": $rc, \"rec\": /; s/\$/}/" >> "$RES"
  echo "{\"stage\": \"$name\", \"rc\": $rc, \"seconds\": $(( $(date +%s)-s ))}" >> "$RES"
  echo "=== [$name] rc=$rc $(( $(date +%s)-s ))s" | tee -a "$LOG"; tail -3 "$OUT/.stage"
}
nvidia-smi -L >> "$LOG" 2>&1
$PY -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())" 2>&1 | tee -a "$LOG"
W=$(mktemp -d)
B=256; K=1,4,16; RUN="--config.train.epochs=5"; TP=(--torch-python "$(command -v "$TORCH_PY")")
if [ -n "$QUICK" ]; then B=8; K=1,2; RUN="--config.data.synthetic_size=tiny --config.train.epochs=1"
  zcat -f "$MI" | head -300 > "$W/mi.json"; MI=$W/mi.json; fi
REAL=(--data "$MI" --format amazon --compare --repeats 1 --pipeline_passes 2 "${TP[@]}")
stage smoke 90 $PY -m experiments.train --config=experiments/configs/han_upa.py:tiny --workdir="$W/tiny"
stage real-cnn 70 $PY tools/bench.py --model cnn "${REAL[@]}"
stage real-bilstm 80 $PY tools/bench.py --model bilstm "${REAL[@]}"
stage real-han_upa 90 $PY tools/bench.py --model han_upa "${REAL[@]}"
stage default-run 150 $PY -m experiments.train --workdir="$W/default" $RUN
cp "$W/default/results.json" "$OUT/default-run-results.json" 2>/dev/null
cp "$W/default/model.json" "$OUT/default-run-model.json" 2>/dev/null
# The same command again on the cache the default run filled: compile time on a warm cache.
stage default-run-warm 90 $PY -m experiments.train --workdir="$W/warm" $RUN
cp "$W/warm/results.json" "$OUT/warm-run-results.json" 2>/dev/null
stage members-han_upa 100 $PY tools/bench.py --model han_upa --num_seeds $K
stage fixed-han_upa-f32 50 $PY tools/bench.py --model han_upa --batch $B --compare "${TP[@]}"
stage fixed-han_upa-bf16 40 $PY tools/bench.py --model han_upa --batch $B --dtype bfloat16
stage fixed-cnn-bf16 40 $PY tools/bench.py --model cnn --batch $B --dtype bfloat16
# compilation.autotune_level=0 against XLA's default: compile and step time, an empty cache each.
stage default-run-autotune0 120 $PY -m experiments.train --workdir="$W/autotune0" $RUN \
  --config.compilation.autotune_level=0 --config.compilation.cache_dir="$W/cache-autotune0"
cp "$W/autotune0/results.json" "$OUT/autotune0-run-results.json" 2>/dev/null
# encoder.unroll (nn.scan's unroll factor) on the BiLSTM's real lengths: the default 1 against 4 and 8.
stage unroll-bilstm 90 bash -c 'for u in 1 4 8; do "$0" tools/bench.py --model bilstm --data "$1" --format amazon \
  --pipeline_passes 1 --set encoder.unroll=$u; done' "$PY" "$MI"
# compilation.command_buffers=loops (while loops in CUDA graphs) on the same BiLSTM pass.
stage command-buffers-bilstm 60 env XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL" \
  $PY tools/bench.py --model bilstm --data "$MI" --format amazon --pipeline_passes 1
rm -rf "$W" "$OUT/.stage"
# One summary line: the figures the issue names, from the stages' JSON.
$PY - "$RES" "$OUT" "$(( $(date +%s) - T0 ))" <<'EOF' | tee "$OUT/summary.json"
import json, os, sys
results, out, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3])
records = [json.loads(line) for line in open(results) if line.strip()]
summary = {"seconds": seconds, "skipped": [r["stage"] for r in records if r.get("skipped")],
           "failed": sorted({r["stage"] for r in records if r.get("rc")})}
for r in records:
    rec, stage = r.get("rec", {}), r["stage"]
    if stage.startswith("real-") and "ratio" in rec:
        summary[stage] = {k: rec[k] for k in ("jax_docs_per_s", "torch_docs_per_s", "ratio", "compile_s")}
    elif stage.startswith("real-") and "input_pipeline_overhead" in rec:
        summary.setdefault(stage + "-input", {k: rec.get(k) for k in (
            "input_pipeline_overhead", "steps_per_transfer", "layout", "docs_per_s_batches_on_device")})
    elif stage == "members-han_upa" and "step_time_fit" in rec:
        summary["members_fit"] = rec["step_time_fit"]
    elif stage == "members-han_upa" and "model_docs_per_s" in rec:
        summary.setdefault("members_model_docs_per_s", {})[rec["num_seeds"]] = rec["model_docs_per_s"]
    elif stage == "command-buffers-bilstm" and "docs_per_s" in rec:
        summary["command_buffers_loops_bilstm_docs_per_s"] = rec["docs_per_s"]
    elif stage == "unroll-bilstm" and "docs_per_s" in rec:
        unroll = dict(item.split("=", 1) for item in rec.get("set", [])).get("encoder.unroll", "1")
        summary.setdefault("unroll_bilstm_docs_per_s", {})[unroll] = rec["docs_per_s"]
    elif stage.startswith("fixed-") and "docs_per_s" in rec:
        summary.setdefault(stage, {}).update({k: rec[k] for k in ("docs_per_s", "mfu", "ratio") if k in rec})
def run_figures(run):
    return {"compile_s": run["compile"]["seconds"], "programs": run["compile"]["programs"],
            "eval_s": run["eval_seconds"], "checkpoint_s": run["checkpoint_seconds"], "train_s": run["train_seconds"], "docs_per_s": run["docs_per_s"],
            "test_accuracy": run["test"]["accuracy"]}
path = os.path.join(out, "warm-run-results.json")
if os.path.exists(path):
    summary["default_run_warm_compile_s"] = json.load(open(path))["compile"]["seconds"]
path = os.path.join(out, "autotune0-run-results.json")
if os.path.exists(path):
    summary["default_run_autotune0"] = run_figures(json.load(open(path)))
path = os.path.join(out, "default-run-results.json")
if os.path.exists(path):
    run = json.load(open(path))
    summary["default_run"] = {**run_figures(run),
                              "eval_docs_per_s": (run.get("accounting") or {}).get("eval_docs_per_s")}
    model = os.path.join(out, "default-run-model.json")
    if os.path.exists(model):
        summary["default_run"]["auto"] = json.load(open(model)).get("auto")
print(json.dumps(summary))
EOF
