#!/bin/bash
# Multi30k on one GPU, in two calls of the device tool (each under its 10-minute limit):
#
#   bash configs/multi30k_device.sh train SECONDS   # trains every run below side by side; a run
#                                                   # stopped by the time limit saves (SIGTERM) and
#                                                   # resumes where it stopped on the next call
#   bash configs/multi30k_device.sh decode          # val and test BLEU, greedy and beam
#
# M30K names the data folder (default ../shared/data/multi30k); logs and hypotheses go to
# $OUT (default /tmp/multi30k_out). Runs differ from configs/multi30k_attention.flags only by
# the flags in RUNS; val BLEU (never test) chooses the run and the length penalty.
set -u
export TF_FORCE_GPU_ALLOW_GROWTH=true  # runs share the GPU: each takes only what it needs
M30K=${M30K:-../shared/data/multi30k}
OUTDIR=${OUT:-/tmp/multi30k_out}
mkdir -p "$OUTDIR"
declare -A RUNS=(
  [luong_2x512]=""
  [bahdanau_1x512]="--attention=bahdanau --num_layers=1 --keep_prob=0.6"
)
DATA_FLAGS=(
  "--data=$M30K/train.lc.norm.tok.en|$M30K/train.lc.norm.tok.de"
  "--val_data=$M30K/val.lc.norm.tok.en|$M30K/val.lc.norm.tok.de"
)

train() {
  local seconds=$1
  for name in "${!RUNS[@]}"; do
    # shellcheck disable=SC2086
    timeout -s TERM "$seconds" python3 train.py --flagfile=configs/multi30k_attention.flags \
      "${DATA_FLAGS[@]}" --workdir="workdir_multi30k/$name" ${RUNS[$name]} \
      >> "$OUTDIR/train_$name.log" 2>&1 &
  done
  wait
  for name in "${!RUNS[@]}"; do
    echo "== $name"; grep -E "^(model|val|done|stopped|[0-9]+/)" "$OUTDIR/train_$name.log" | tail -6
  done
}

decode_one() {  # NAME SPLIT BEAM ALPHA
  local name=$1 split=$2 beam=$3 alpha=$4
  local tag="$name.$split.b$beam.a$alpha"
  python3 train.py --flagfile=configs/multi30k_attention.flags "${DATA_FLAGS[@]}" \
    --workdir="workdir_multi30k/$name" --mode=decode --batch_size=128 \
    --beam_width="$beam" --length_penalty="$alpha" \
    --decode_input="$M30K/$split.lc.norm.tok.en" --decode_reference="$M30K/$split.lc.norm.tok.de" \
    --decode_output="$OUTDIR/$tag.de" > "$OUTDIR/decode_$tag.log" 2>&1
  echo "$tag $(grep -o 'BLEU = [0-9.]*' "$OUTDIR/decode_$tag.log" || tail -1 "$OUTDIR/decode_$tag.log")"
}

decode() {
  for name in "${!RUNS[@]}"; do
    for split in val test_2016_flickr; do
      decode_one "$name" "$split" 1 0 &
      for alpha in 0.6 1.0; do decode_one "$name" "$split" 10 "$alpha" & done
    done
  done
  wait
}

"$@" | tee -a "$OUTDIR/summary.txt"
