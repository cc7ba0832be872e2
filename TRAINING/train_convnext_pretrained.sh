#!/usr/bin/env bash
# ConvNeXt Tiny from ImageNet weights, the seed fork's recipe: lr 1e-6 (x batch 8), beta1 0.9,
# LR patience 10 epochs, min-max normalisation. Offline? add --pretrained_weights /path/convnext_tiny.pth
#   DATA_DIR=/data/orca OUTPUT_DIR=/runs TRAINING/train_convnext_pretrained.sh [extra main.py flags]
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run_training convnext \
  --backbone convnext --pretrained --max_pool 2 \
  --lr 1e-6 --beta1 0.9 --lr_patience_epochs 10 \
  "$@"
