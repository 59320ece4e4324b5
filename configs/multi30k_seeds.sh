#!/bin/bash
# Trains one Multi30k recipe with several seeds side by side on one GPU, then decodes each run.
#
#   bash configs/multi30k_seeds.sh [SECONDS] [SEED ...]
#
# SECONDS (default 900) bounds each run's training: the run is sent SIGTERM then, saves and
# stops. SEEDs default to 1 2 3. Each run decodes val and test_2016_flickr as the flagfile's
# comment documents (beam 10, length penalty 1.0, over the mean of the 5 best checkpoints) and
# prints the BLEU of each. Environment:
#   M30K      the Multi30k folder (default ../shared/data/multi30k)
#   FLAGFILE  the recipe (default configs/multi30k_bpe.flags)
#   ROOT      where the workdirs and logs go (default workdir_multi30k_seeds)
#   EXTRA     flags added to every training, e.g. for a dry run on a CPU:
#             EXTRA="--hidden_size=16 --embedding_size=8 --max_steps=40"
set -u
export TF_FORCE_GPU_ALLOW_GROWTH=true  # the runs share the GPU: each takes only what it needs
SECONDS_EACH=${1:-900}
shift || true
[[ $# -gt 0 ]] && SEEDS=("$@") || SEEDS=(1 2 3)
M30K=${M30K:-../shared/data/multi30k}
FLAGFILE=${FLAGFILE:-configs/multi30k_bpe.flags}
ROOT=${ROOT:-workdir_multi30k_seeds}
mkdir -p "$ROOT/logs"
VAL=("--val_data=$M30K/val.lc.norm.tok.en|$M30K/val.lc.norm.tok.de")
SUBWORDS=$(sed -n 's/^--data=//p' "$FLAGFILE")

if [[ -n "$SUBWORDS" && ! -f "$SUBWORDS/report.json" ]]; then  # the recipe's SentencePiece folder
  python3 train.py --flagfile="$FLAGFILE" --mode=prepare --input_format=parallel \
    --input="$M30K/train.lc.norm.tok.en" --target_input="$M30K/train.lc.norm.tok.de" \
    --output_dir="$SUBWORDS" --tokenizer=sentencepiece --val_fraction=0 --test_fraction=0 || exit 1
fi
DATA=()
[[ -z "$SUBWORDS" ]] && DATA=("--data=$M30K/train.lc.norm.tok.en|$M30K/train.lc.norm.tok.de")

for seed in "${SEEDS[@]}"; do
  # shellcheck disable=SC2086
  timeout -s TERM "$SECONDS_EACH" python3 train.py --flagfile="$FLAGFILE" --mode=train \
    "${DATA[@]}" "${VAL[@]}" --workdir="$ROOT/seed$seed" --seed="$seed" ${EXTRA:-} \
    > "$ROOT/logs/train_seed$seed.log" 2>&1 &
done
wait
for seed in "${SEEDS[@]}"; do
  echo "seed $seed: $(grep -E '^validation after epoch' "$ROOT/logs/train_seed$seed.log" | tail -1)"
  for split in val test_2016_flickr; do
    log="$ROOT/logs/decode_seed$seed.$split.log"
    python3 train.py --flagfile="$FLAGFILE" "${DATA[@]}" "${VAL[@]}" --workdir="$ROOT/seed$seed" \
      --mode=decode --batch_size=128 --beam_width=10 --length_penalty=1.0 \
      --average_checkpoints=5 --decode_input="$M30K/$split.lc.norm.tok.en" \
      --decode_reference="$M30K/$split.lc.norm.tok.de" \
      --decode_output="$ROOT/logs/seed$seed.$split.de" > "$log" 2>&1
    echo "  $split: $(grep -o 'BLEU = [0-9.]*' "$log" || tail -1 "$log")"
  done
done
