#!/usr/bin/env bash
# ResNet-18 from scratch, the original's recipe: lr 5e-6 (x batch 8), beta1 0.5,
# LR patience 8 epochs, early stopping 20 epochs, no max-pool (max_pool 2).
#   DATA_DIR=/data/orca NUM_CLASSES=12 OUTPUT_DIR=/runs TRAINING/train_resnet18.sh [extra flags]
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run_training resnet18 \
  --backbone resnet --resnet 18 --max_pool 2 --conv_kernel_size 7 \
  --lr 5e-6 --beta1 0.5 --lr_patience_epochs 8 \
  "$@"
