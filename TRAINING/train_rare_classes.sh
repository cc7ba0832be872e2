#!/usr/bin/env bash
# The published best configuration for small, imbalanced call-type sets (13 killer-whale call
# types, 99.49 % test accuracy): ResNet-18 from scratch, 1000 ms segments, batch 64, effective
# peak LR 3e-4 (lr 3e-4 / 64 x batch 64), label smoothing 0.1, sqrt-inverse-frequency
# class-balanced sampling, one-cycle LR. Same conventions as the other scripts.
#   DATA_DIR=/data/orca OUTPUT_DIR=/runs TRAINING/train_rare_classes.sh [extra main.py flags]
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run_training rare_classes \
  --backbone resnet --resnet 18 --beta1 0.9 \
  --sequence_len 1000 --batch_size 64 --lr 4.6875e-6 \
  --label_smoothing 0.1 --weighted_sampling sqrt_inverse --scheduler onecycle --monitor balanced_accuracy \
  "$@"
