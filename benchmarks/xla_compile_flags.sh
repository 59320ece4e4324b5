#!/bin/bash
# The first step (trace + XLA compile) of the fastest seed_b256 variant under XLA's autotuning
# options and compile parallelism, one process per setting (XLA reads XLA_FLAGS once per
# process), then with the persistent compilation cache (--xla_cache_dir), cold and warm.
# The traced first step (benchmarks.train_step --profile_first_step) put about half of it in
# XLA's autotuning: Triton GEMM tile search and fusion-emitter autotuning ("autotuner" and
# "autotune-fusion-emitters" in the profile). Turning
# them off may cost step time, which the same lines report.
#
#   bash benchmarks/xla_compile_flags.sh [WORKLOAD] [VARIANT]   # defaults: seed_b256,
#                                                               # engine_xla_bf16_gpuemb
#   PART=flags bash benchmarks/xla_compile_flags.sh   # only the XLA_FLAGS settings
#   PART=cache bash benchmarks/xla_compile_flags.sh   # only the cache runs (each process compiles
#                                                     # for about a minute: split across calls)
#
# JSON lines go to $OUT/xla_compile_flags.jsonl (default /tmp), each tagged with its XLA_FLAGS
# in the `xla_flags` field ("cache cold" / "cache warm" for the cache runs); the table lines
# to stdout.
set -u
WORKLOAD=${1:-seed_b256}
VARIANT=${2:-engine_xla_bf16_gpuemb}
PART=${PART:-all}
case $PART in all|flags|cache) ;; *) echo "PART must be all, flags or cache, not '$PART'" >&2; exit 2;; esac
RESULTS=${OUT:-/tmp}/xla_compile_flags.jsonl
SETTINGS=(
  ""  # XLA's defaults
  "--xla_gpu_enable_triton_gemm=false"  # GEMMs to cuBLAS: no Triton tile search
  "--xla_gpu_experimental_enable_fusion_autotuner=false"  # no fusion-emitter autotuning
  "--xla_gpu_enable_triton_gemm=false --xla_gpu_experimental_enable_fusion_autotuner=false"
  # "--xla_gpu_autotune_level=0" is left out: its untuned GEMM tiles run the step many
  # times slower.
)
measure() {  # TAG [BENCHMARK FLAGS...]: one process; its JSON line tagged xla_flags=TAG
  local tag=$1
  shift
  python3 -m benchmarks.train_step --workloads="$WORKLOAD" --variants="$VARIANT" --steps=30 \
    --xla_autotune --output="$RESULTS.part" "$@" | tail -1  # autotuning exactly as set here
  # shellcheck disable=SC2016
  python3 -c 'import json, sys
for line in open(sys.argv[1]):
  row = json.loads(line); row["xla_flags"] = sys.argv[2]; print(json.dumps(row))' \
    "$RESULTS.part" "$tag" >> "$RESULTS"
  rm -f "$RESULTS.part"
}
if [ "$PART" != cache ]; then
  for setting in "${SETTINGS[@]}"; do
    echo "== XLA_FLAGS=\"$setting\""
    XLA_FLAGS="$setting" measure "$setting"
  done
fi
if [ "$PART" != flags ]; then
  # XLA's defaults again, twice over one persistent cache: the second process loads the step.
  CACHE=$(mktemp -d)
  for run in cold warm; do
    echo "== --xla_cache_dir, $run"
    measure "cache $run" --xla_cache_dir="$CACHE"
  done
  rm -rf "$CACHE"
fi
