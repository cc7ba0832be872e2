#!/usr/bin/env bash
# The CUDA checks and GPU figures that a machine without a GPU cannot make. Run it on a
# machine with a GPU, from the repository root, after `make venv`:
#     bash bench/gpu_check.sh [PYTHON]
# It prints each check's result and the figures; README's GPU rows come from its output.
set -uo pipefail
PY="${1:-.venv/bin/python}"
SRC="ANIMAL-SPOT"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
status=0
check() { echo; echo "=== $1"; }
fail() { echo "FAILED: $1"; status=1; }

check "device"
"$PY" - <<PY || { echo "no usable CUDA device"; exit 1; }
import torch
assert torch.cuda.is_available(), "torch sees no CUDA device"
print(torch.__version__, torch.cuda.get_device_name(0), "GPUs:", torch.cuda.device_count(),
      "bf16:", torch.cuda.is_bf16_supported())
PY

check "synthetic data (template settings: 44.1 kHz, 0.5 s)"
"$PY" - <<PY
import sys; sys.path.insert(0, "$SRC")
from utils.synthetic import make_call_set, make_recording
make_call_set("$WORK/data", {"K1": 40, "K2": 40, "K3": 40, "noise": 40}, tapes_per_class=10, sr=44100, duration=0.6)
make_recording("$WORK/rec.wav", 3600, 44100, [("upsweep", 10.0), ("pulses", 900.0)])
print("ok")
PY

TEMPLATE="--sr 44100 --n_fft 1024 --hop_length 172 --n_freq_bins 256 --fmin 500 --fmax 10000 --sequence_len 500"
COMMON="--data_dir $WORK/data --num_classes 4 --max_train_epochs 3 --epochs_per_eval 1 --batch_size 32 --num_workers 4 --seed 1 --no_progress $TEMPLATE"

check "training on CUDA with --amp (bf16 where supported, else fp16 + grad scaler)"
"$PY" $SRC/main.py $COMMON --model_dir $WORK/amp --log_dir $WORK/amp --amp || fail "amp training"
grep -E "\|train\|2\||Memory format" $WORK/amp/TRAIN.log
"$PY" -c "import torch; o = torch.load('$WORK/amp/ANIMAL-SPOT.pk', weights_only=True)['trainOpts']; print('precision', o['precision'])"

check "float16 with the gradient scaler (forced, on a toy model)"
"$PY" - <<PY || fail "fp16 scaler"
import sys; sys.path.insert(0, "$SRC")
import torch, torch.nn as nn
from trainer import Trainer, Step
from utils.classmap import ClassMap
from utils.runtime import Precision
device = torch.device("cuda")
model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).to(device)
x = torch.randn(64, 1, 4, 4); y = (x.mean(dim=(1, 2, 3)) > 0).long()
batches = [(x[i:i + 16], {"call": y[i:i + 16]}) for i in range(0, 64, 16)]
step = Step(Precision(torch.float16, True), 1.0, torch.contiguous_format, torch.amp.GradScaler("cuda"))
trainer = Trainer(model, ClassMap.from_names(["noise", "target"]), device, nn.CrossEntropyLoss(),
                  torch.optim.SGD(model.parameters(), lr=0.5), [], step)
test = trainer.fit({"train": batches, "val": batches, "test": batches}, 20, 5)
print("fp16 + scaler accuracy", test.accuracy, "scale", step.scaler.get_scale())
assert test.accuracy > 0.9
PY

check "DistributedDataParallel with NCCL (2 GPUs)"
if [ "$("$PY" -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
  "$PY" -m torch.distributed.run --nproc_per_node 2 $SRC/main.py $COMMON --model_dir $WORK/ddp --log_dir $WORK/ddp \
    || fail "ddp"
  "$PY" $SRC/main.py $COMMON --model_dir $WORK/one --log_dir $WORK/one || fail "single"
  diff <(grep -oE "test\|0\|[^:]+: .*\(n=[0-9]+\)" $WORK/ddp/TRAIN.log | sed -E 's/: .*\(n=/ n=/') \
       <(grep -oE "test\|0\|[^:]+: .*\(n=[0-9]+\)" $WORK/one/TRAIN.log | sed -E 's/: .*\(n=/ n=/') \
    && echo "per-class test counts equal" || fail "ddp counts"
else
  echo "one GPU: NCCL with two processes not checked here"
fi

check "block STFT on the GPU equals the CPU's (within float32 rounding)"
"$PY" - <<PY || fail "device stft"
import sys; sys.path.insert(0, "$SRC")
import torch
from data.features import FeatureOptions
from data.recording import RecordingWindows
o = FeatureOptions(sr=44100, n_fft=1024, hop_length=172, n_freq_bins=256, fmin=500, fmax=10000)
cpu = next(iter(RecordingWindows("$WORK/rec.wav", o, 0.5, 0.25, 64)))[1]
gpu = next(iter(RecordingWindows("$WORK/rec.wav", o, 0.5, 0.25, 64, device=torch.device("cuda"))))[1].cpu()
diff = (cpu - gpu).abs()
print(f"max |cpu - gpu| {diff.max():.2e}, median {diff.median():.2e}")
assert diff.median() < 1e-5 and diff.max() < 1e-2
PY

check "prediction speed on the GPU (ResNet-18, 60 min recording, 0.5 s windows, 0.25 s hop)"
for amp in "" "--amp"; do
  start=$(date +%s.%N)
  "$PY" $SRC/predict.py --model_path $WORK/amp/ANIMAL-SPOT.pk --input_file $WORK/rec.wav --output_dir $WORK/pred \
    --sequence_len 0.5 --hop 0.25 --batch_size 256 --num_workers 1 --threshold 0.5 --overwrite --no_progress $amp \
    2> $WORK/pred.err || { tail -5 $WORK/pred.err; fail "predict $amp"; }
  end=$(date +%s.%N)
  echo "predict.py ${amp:-float32}: $(echo "3600 / ($end - $start)" | bc -l | cut -c1-7)x real time (whole process)"
done

check "multi-process prediction (torchrun, one process per GPU, 8 copies of the 60 min recording)"
for i in 1 2 3 4 5 6 7 8; do cp $WORK/rec.wav $WORK/season_$i.wav 2>/dev/null || true; done
mkdir -p $WORK/season && mv $WORK/season_*.wav $WORK/season/ 2>/dev/null
GPUS=$("$PY" -c 'import torch; print(max(1, torch.cuda.device_count()))')
for procs in 1 $((GPUS > 1 ? GPUS : 2)); do
  start=$(date +%s.%N)
  "$PY" -m torch.distributed.run --nproc_per_node $procs --master_addr 127.0.0.1 --master_port $((29600 + procs)) \
    $SRC/predict.py --model_path $WORK/amp/ANIMAL-SPOT.pk --input_file $WORK/season --output_dir $WORK/season_out_$procs \
    --sequence_len 0.5 --hop 0.25 --batch_size 256 --num_workers 1 --threshold 0.5 --overwrite --no_progress --raven \
    2> $WORK/season.err || { tail -5 $WORK/season.err; fail "torchrun predict $procs"; }
  end=$(date +%s.%N)
  echo "torchrun $procs process(es) on $GPUS GPU(s): $(echo "8 * 3600 / ($end - $start)" | bc -l | cut -c1-7)x real time"
  "$PY" $SRC/predict.py --report $WORK/season_out_$procs | grep "recordings:"
done
diff $WORK/season_out_1/combined.Table.1.selections.txt $WORK/season_out_*[!1]/combined.Table.1.selections.txt \
  && echo "combined tables equal" || fail "combined tables differ"

check "training throughput on the GPU"
"$PY" bench/train_bench.py --device cuda --steps 20 || fail "train bench"

echo
[ $status -eq 0 ] && echo "ALL GPU CHECKS PASSED" || echo "SOME GPU CHECKS FAILED"
exit $status
