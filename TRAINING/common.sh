# Shared by the train_*.sh scripts: folders from the environment, a dated output
# folder, the python of the project's virtual environment when there is one.
#   DATA_DIR     labelled clips (required)
#   OUTPUT_DIR   parent of the run folder (default: ./runs)
#   NUM_CLASSES  number of classes (default: 2)
#   PYTHON       interpreter (default: .venv/bin/python of this checkout, else python3)
# Extra arguments of the script are passed on to main.py and win over the defaults.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"

run_training() {
  local name="$1"; shift
  : "${DATA_DIR:?set DATA_DIR to the folder of labelled wav clips}"
  local out="${OUTPUT_DIR:-runs}/${name}_$(date +%Y-%m-%d_%H-%M-%S)"
  local python="${PYTHON:-}"
  if [ -z "$python" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then python="$ROOT/.venv/bin/python"; else python=python3; fi
  fi
  mkdir -p "$out"
  echo "Run folder: $out"
  "$python" "$ROOT/ANIMAL-SPOT/main.py" \
    --data_dir "$DATA_DIR" \
    --model_dir "$out/model" \
    --checkpoint_dir "$out/checkpoints" \
    --log_dir "$out/logs" \
    --summary_dir "$out/summaries" \
    --cache_dir "$out/cache" \
    --num_classes "${NUM_CLASSES:-2}" \
    --batch_size 8 \
    --early_stopping_patience_epochs 20 \
    --max_train_epochs 150 \
    --epochs_per_eval 2 \
    --sequence_len 500 \
    --sr 44100 --n_fft 1024 --hop_length 172 \
    --freq_compression linear --n_freq_bins 256 --fmin 500 --fmax 10000 \
    --augmentation \
    --num_workers 4 \
    "$@"
}
