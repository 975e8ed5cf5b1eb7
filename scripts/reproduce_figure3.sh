#!/usr/bin/env bash
# The paper's Figure 3 (section 4.4) at any scale: the retention-ratio sweep. Runs with the same
# seed, architecture and budget keep 10 %, 20 %, ..., 90 % of each class (Gaussian likelihood on
# EMBEDDING) or all of it (100 %), each scored against the FULL training data; writes
# OUT_DIR/ratio_sweep.png (IS, FID, precision, recall, density, coverage against the ratio),
# OUT_DIR/summary.md (the table), samples.png, curves/ and results.json. Resumable like Table 1.
#
# Default: a CPU run on the first 5000 Fashion-MNIST images at 32 px with the width-12 minibatch-std
# recipe, eager, with which all ten ratios were measured (README: PRESET=fmnist32_cpu_mbstd_ch12,
# COMPILE=0; efficientnet_lite0 metrics, 2000 iterations per ratio, 3 seeds: 30 runs, about 5/3 of
# Table 1's 18; Table 1's default recipe since, PRESET=fmnist32_cpu_mbstd_ch8_bs32_GnoSN, is measured
# at all ten ratios in bf16 and at 50-100 % in fp32, README). Full size, the paper's SAGAN on 64x64
# ImageNet for 500k iterations per ratio (data from scripts/utils/prepare_data_imagenet_64.sh):
#   PRESET=imagenet64 DATA_ROOT=data JOBS=8 GPUS=0,1,2,3,4,5,6,7 bash scripts/reproduce_figure3.sh
# Environment: RATIOS (10,20,...,100; 100 = no selection) and everything scripts/reproduce_table1.sh
# documents (OUT_DIR defaults to results/figure3). Extra arguments are train.py flags.
set -euo pipefail
if [ -z "${PRESET:-}" ]; then export PRESET=fmnist32_cpu_mbstd_ch12 COMPILE=${COMPILE:-0}; fi
GRID=figure3 exec bash "$(dirname "$0")/reproduce_table1.sh" "$@"
