# Shared by the train_*.sh scripts: the seed fork's recipe (IaroslavSheipak/ANIMAL-SPOT,
# 7300917) with only the machine-specific parts taken from the environment:
#   DATA_DIR     labelled clips (required)
#   OUTPUT_DIR   parent of the run folder (default: the current folder)
#   RUN_DIR      an existing run folder to resume (then without --start_from_scratch)
#   NUM_CLASSES  number of classes (default: counted in DATA_DIR, main.py --num_classes auto)
#   NUM_WORKERS  data loader workers (default: the machine's cores, at most 8 as the seed)
#   PYTHON       interpreter (default: .venv/bin/python of this checkout, else python3)
# Extra arguments of the script are passed on to main.py and win over the recipe.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"

run_training() {
  local backbone="$1"; shift
  : "${DATA_DIR:?set DATA_DIR to the folder of labelled wav clips}"
  local out fresh=(--start_from_scratch)
  if [ -n "${RUN_DIR:-}" ]; then
    [ -d "$RUN_DIR" ] || { echo "RUN_DIR $RUN_DIR is not a folder" >&2; exit 1; }
    out="$RUN_DIR"; fresh=()
  else
    out="${OUTPUT_DIR:-.}/outputs_${backbone}_$(date +%Y-%m-%d_%H-%M)"
  fi
  local python="${PYTHON:-}"
  if [ -z "$python" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then python="$ROOT/.venv/bin/python"; else python=python3; fi
  fi
  local cores; cores="$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 8)"
  local workers="${NUM_WORKERS:-$(( cores < 8 ? cores : 8 ))}"
  mkdir -p "$out"
  echo "Run folder: $out"
  "$python" "$ROOT/ANIMAL-SPOT/main.py" \
    --data_dir "$DATA_DIR" \
    --model_dir "$out/model" \
    --checkpoint_dir "$out/checkpoints" \
    --log_dir "$out/logs" \
    --summary_dir "$out/summaries" \
    --cache_dir "$out/cache" \
    --num_classes "${NUM_CLASSES:-auto}" \
    --batch_size 8 \
    --max_train_epochs 150 --early_stopping_patience_epochs 20 --epochs_per_eval 2 --lr_decay_factor 0.5 \
    --num_workers "$workers" \
    --augmentation "${fresh[@]}" --min_max_norm --filter_broken_audio --debug \
    --sequence_len 500 --sr 44100 --n_fft 1024 --hop_length 172 --n_freq_bins 256 \
    --freq_compression linear --fmin 500 --fmax 10000 \
    "$@"
}
