#!/bin/bash
# Trains one Multi30k recipe with several seeds side by side on one GPU, then decodes each run.
#
#   bash configs/multi30k_seeds.sh [SECONDS] [SEED ...]
#
# SECONDS (default 900) bounds each run's training: the run is sent SIGTERM then, saves and
# stops. SEEDs default to 1 2 3. Each run decodes val and test_2016_flickr as the flagfile's
# comment documents (beam 10, length penalty 1.0, over the mean of the 5 best checkpoints).
# It prints the validation curves side by side (val loss per epoch, one column a seed) and a
# summary: each seed's steps, wall time, best val loss, val and test BLEU, then their mean
# and spread (max - min). Environment:
#   M30K      the Multi30k folder (default ../shared/data/multi30k)
#   FLAGFILE  the recipe (default configs/multi30k_bpe.flags)
#   ROOT      where the workdirs and logs go (default workdir_multi30k_seeds)
#   EXTRA     flags added to every training, e.g. a dry run on a CPU:
#             EXTRA="--hidden_size=16 --embedding_size=16 --max_steps=40"
#   DECODE    flags added to every decoding (default none)
#   PYTHON    the interpreter (default python3)
set -u
export TF_FORCE_GPU_ALLOW_GROWTH=true  # the runs share the GPU: each takes only what it needs
SECONDS_EACH=${1:-900}
shift || true
[[ $# -gt 0 ]] && SEEDS=("$@") || SEEDS=(1 2 3)
M30K=${M30K:-../shared/data/multi30k}
FLAGFILE=${FLAGFILE:-configs/multi30k_bpe.flags}
ROOT=${ROOT:-workdir_multi30k_seeds}
PYTHON=${PYTHON:-python3}
mkdir -p "$ROOT/logs"
VAL=("--val_data=$M30K/val.lc.norm.tok.en|$M30K/val.lc.norm.tok.de")
SUBWORDS=$(sed -n 's/^--data=//p' "$FLAGFILE" | grep -v '|')  # a prepared folder, not SOURCE|TARGET

if [[ -n "$SUBWORDS" && ! -f "$SUBWORDS/report.json" ]]; then  # the recipe's SentencePiece folder
  "$PYTHON" train.py --flagfile="$FLAGFILE" --mode=prepare --input_format=parallel \
    --input="$M30K/train.lc.norm.tok.en" --target_input="$M30K/train.lc.norm.tok.de" \
    --output_dir="$SUBWORDS" --tokenizer=sentencepiece --val_fraction=0 --test_fraction=0 || exit 1
fi
DATA=()
[[ -z "$SUBWORDS" ]] && DATA=("--data=$M30K/train.lc.norm.tok.en|$M30K/train.lc.norm.tok.de")

for seed in "${SEEDS[@]}"; do
  (
    start=$(date +%s)
    # shellcheck disable=SC2086
    timeout -s TERM "$SECONDS_EACH" "$PYTHON" train.py --flagfile="$FLAGFILE" --mode=train \
      "${DATA[@]}" "${VAL[@]}" --workdir="$ROOT/seed$seed" --seed="$seed" ${EXTRA:-} \
      > "$ROOT/logs/train_seed$seed.log" 2>&1
    echo $(( $(date +%s) - start )) > "$ROOT/logs/wall_seed$seed"
  ) &
done
wait

bleu() {  # the BLEU a decode log reports, or "-"
  grep -o 'BLEU = [0-9.]*' "$1" 2>/dev/null | tail -1 | awk '{print $3}' | grep . || echo -
}

for seed in "${SEEDS[@]}"; do
  for split in val test_2016_flickr; do
    # shellcheck disable=SC2086
    "$PYTHON" train.py --flagfile="$FLAGFILE" "${DATA[@]}" "${VAL[@]}" \
      --workdir="$ROOT/seed$seed" --mode=decode --batch_size=128 --beam_width=10 \
      --length_penalty=1.0 --average_checkpoints=5 --decode_input="$M30K/$split.lc.norm.tok.en" \
      --decode_reference="$M30K/$split.lc.norm.tok.de" ${DECODE:-} \
      --decode_output="$ROOT/logs/seed$seed.$split.de" > "$ROOT/logs/decode_seed$seed.$split.log" 2>&1
  done
done

echo "validation loss per epoch:"
for seed in "${SEEDS[@]}"; do
  sed -n 's/^validation after epoch \([0-9]*\): loss=\([0-9.]*\).*/\1 \2/p' \
    "$ROOT/logs/train_seed$seed.log" > "$ROOT/logs/curve_seed$seed"
done
awk -v seeds="${SEEDS[*]}" '
  BEGIN { n = split(seeds, s, " "); printf "%6s", "epoch"; for (i = 1; i <= n; i++) printf " %9s", "seed " s[i]; print "" }
  { split(FILENAME, parts, "curve_seed"); loss[parts[2], $1] = $2; if ($1 > last) last = $1 }
  END { for (e = 1; e <= last; e++) { printf "%6d", e; for (i = 1; i <= n; i++) printf " %9s", ((s[i], e) in loss) ? loss[s[i], e] : "-"; print "" } }
' "${SEEDS[@]/#/$ROOT/logs/curve_seed}"

echo
echo "summary ($FLAGFILE${EXTRA:+ + $EXTRA}, ${SECONDS_EACH} s each):"
printf "%6s %8s %8s %9s %8s %9s\n" seed steps wall_s best_val val_bleu test_bleu
for seed in "${SEEDS[@]}"; do
  log="$ROOT/logs/train_seed$seed.log"
  steps=$(grep -oE '(done|stopped by signal [0-9]+) at step [0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
  best=$(awk '{print $2}' "$ROOT/logs/curve_seed$seed" | sort -g | head -1)
  printf "%6s %8s %8s %9s %8s %9s\n" "$seed" "${steps:--}" "$(cat "$ROOT/logs/wall_seed$seed" 2>/dev/null || echo -)" \
    "${best:--}" "$(bleu "$ROOT/logs/decode_seed$seed.val.log")" \
    "$(bleu "$ROOT/logs/decode_seed$seed.test_2016_flickr.log")"
done | tee "$ROOT/logs/summary.txt"
awk '
  { for (c = 4; c <= 6; c++) if ($c != "-") { v = $c + 0; sum[c] += v; n[c]++
      if (!(c in lo) || v < lo[c]) lo[c] = v; if (!(c in hi) || v > hi[c]) hi[c] = v } }
  END { printf "%6s %8s %8s", "mean", "", ""; for (c = 4; c <= 6; c++) printf " %9s", n[c] ? sprintf("%.3f", sum[c] / n[c]) : "-"; print ""
        printf "%6s %8s %8s", "spread", "", ""; for (c = 4; c <= 6; c++) printf " %9s", n[c] ? sprintf("%.3f", hi[c] - lo[c]) : "-"; print "" }
' "$ROOT/logs/summary.txt"
