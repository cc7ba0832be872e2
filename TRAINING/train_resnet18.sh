#!/usr/bin/env bash
# ResNet-18 from scratch, the seed fork's recipe: lr 5e-6 (x batch 8), beta1 0.5, LR patience
# 8 epochs, the original's default stem (max-pool), min-max normalisation.
#   DATA_DIR=/data/orca OUTPUT_DIR=/runs TRAINING/train_resnet18.sh [extra main.py flags]
#   RUN_DIR=/runs/outputs_resnet_2026-11-26_10-00 DATA_DIR=/data/orca TRAINING/train_resnet18.sh   # resume
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run_training resnet \
  --backbone resnet --resnet 18 \
  --lr 5e-6 --beta1 0.5 --lr_patience_epochs 8 \
  "$@"
