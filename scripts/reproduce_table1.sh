#!/usr/bin/env bash
# The paper's Table 1 (section 4.3) at any scale: six runs with the same seed, architecture and
# iteration budget that differ only in how the training set was selected:
#   none (100 %), uniform 50 %, gaussian 50 %, ppca 50 %, nn_dist 50 % (embedding EMBEDDING)
#   and gaussian 50 % on a random-weight Inception-v3 (the paper's "Random init" row),
# each scored against the FULL training data (IS, FID, precision, recall, density, coverage).
# Writes OUT_DIR/summary.md (the table in the paper's column order), samples.png (sample sheets
# side by side), curves/, selection/ and results.json. Resumable: run it again and finished rows
# are read from OUT_DIR/cells/*.json, an interrupted row resumes from its last checkpoint, and a
# larger ITERS continues every finished row from its checkpoint.
#
# Default: a CPU run on the first 5000 Fashion-MNIST images at 32 px with the quickstart's recipe
# (fmnist32_cpu_mbstd_ch8_bs32_GnoSN, compiled, 2400 iterations a run), 3 seeds per row, two runs at a
# time; its wall time, and the width-12 default's before it: README, Reproducing the paper
# (metrics with the offline efficientnet_lite0 features: NOT the standard Inception FID).
# Full size, the paper's SAGAN on 64x64 ImageNet (prepare the data first with
# scripts/utils/prepare_data_imagenet_64.sh; 200k iterations per row, one GPU per row):
#   PRESET=imagenet64 DATA_ROOT=data JOBS=4 GPUS=0,1,2,3 bash scripts/reproduce_table1.sh
#
# Environment (empty = the preset's value):
#   PRESET (fmnist32_cpu_mbstd_ch8_bs32_GnoSN, the quickstart's recipe: width 8, batch 32, G without
#   spectral norm | fmnist32_cpu_mbstd_ch12, the width-12 minibatch-std recipe, the default before (with
#   COMPILE=0) | fmnist32_cpu_mbstd, the same at width 16 | fmnist32_cpu, the first CPU recipe | imagenet64),
#   COMPILE (1 with the fmnist32_cpu* presets: torch.compile G and D, which needs a C++ compiler; 0 eager,
#   the default with the others),
#   OUT_DIR (results/table1), CELLS (comma list, e.g. none,gaussian_50),
#   DATASET, DATA_ROOT (fmnist32_cpu*: results/data/fmnist32_n$MAX_IMAGES, made if missing; else data),
#   MAX_IMAGES (5000; 0 = all 60k), RESOLUTION, CH (G_ch = D_ch), BATCH, ITERS, EMBEDDING,
#   EMBEDDING_RES, FEATURE_NET, EVAL_IMAGES (generated and real images for the metrics),
#   SEEDS (every row trained once per seed, mean +- std reported; fmnist32_cpu*: 0,1,2, else the one SEED), SEED,
#   JOBS (rows trained at once: 2 on CPU, 1 on GPU), GPUS (ids, one per job), DEVICE, PYTHON.
# Extra arguments are train.py flags for every row and win over all of the above, e.g. --G_lr 1e-4.
# scripts/reproduce_figure3.sh runs this script with GRID=figure3 (the retention-ratio sweep, RATIOS).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python

GRID=${GRID:-table1}
PRESET=${PRESET:-fmnist32_cpu_mbstd_ch8_bs32_GnoSN}
OUT_DIR=${OUT_DIR:-results/$GRID}
args=(--grid "$GRID" --output_dir "$OUT_DIR" --preset "$PRESET")
cpu_preset=0; if [[ $PRESET == fmnist32_cpu* ]]; then cpu_preset=1; fi  # the CPU recipes on Fashion-MNIST
if [ "$cpu_preset" = 1 ] && [ "${DATASET:-FMNIST32_hdf5}" = FMNIST32_hdf5 ]; then
  MAX_IMAGES=${MAX_IMAGES:-5000}
  args+=(--prepare --max_images "$MAX_IMAGES" --data_root "${DATA_ROOT:-results/data/fmnist32_n$MAX_IMAGES}")
else
  args+=(--data_root "${DATA_ROOT:-data}")
fi
if [ -n "${GPUS:-}" ]; then args+=(--gpus "$GPUS"); fi
if [ "$cpu_preset" = 1 ]; then args+=(--jobs "${JOBS:-2}"); else args+=(--jobs "${JOBS:-1}"); fi
if [ -n "${CELLS:-}" ]; then args+=(--cells "$CELLS"); fi
if [ -n "${RATIOS:-}" ]; then args+=(--ratios "$RATIOS"); fi
if [ "$cpu_preset" = 1 ]; then SEEDS=${SEEDS:-0,1,2}; fi
if [ "${COMPILE:-$cpu_preset}" = 1 ]; then args+=(--compile); fi
if [ -n "${SEEDS:-}" ]; then args+=(--seeds "$SEEDS"); fi
if [ -n "${CH:-}" ]; then args+=(--G_ch "$CH" --D_ch "$CH"); fi
if [ -n "${EVAL_IMAGES:-}" ]; then args+=(--num_inception_images "$EVAL_IMAGES" --num_pr_images "$EVAL_IMAGES"); fi
for pair in DATASET:--dataset RESOLUTION:--resolution BATCH:--batch_size ITERS:--num_iters \
            EMBEDDING:--embedding EMBEDDING_RES:--embedding_res FEATURE_NET:--feature_net \
            SEED:--seed DEVICE:--device; do
  var=${pair%%:*}
  if [ -n "${!var:-}" ]; then args+=("${pair#*:}" "${!var}"); fi
done

start=$(date +%s)
"$PY" experiment_grid.py "${args[@]}" "$@"
echo "[$GRID] done in $(( $(date +%s) - start )) s; see $OUT_DIR/summary.md"
