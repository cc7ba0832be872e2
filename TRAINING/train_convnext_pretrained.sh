#!/usr/bin/env bash
# ConvNeXt Tiny from ImageNet weights: lr 1e-6 (x batch 8), beta1 0.9, LR patience 10
# epochs, early stopping 20 epochs. Offline? add --pretrained_weights /path/convnext_tiny.pth
#   DATA_DIR=/data/orca NUM_CLASSES=12 OUTPUT_DIR=/runs TRAINING/train_convnext_pretrained.sh [extra flags]
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run_training convnext_pretrained \
  --backbone convnext --pretrained \
  --lr 1e-6 --beta1 0.9 --lr_patience_epochs 10 \
  "$@"
