#!/usr/bin/env bash
# The whole idea in one command, on a CPU, from a fresh clone. The recipe is the best 10-minute one
# (width 8, batch 32, G without spectral norm, compiled; 2400 iterations a run), with which selection
# resolves density up at three seeds and precision up at three seeds on both EPYCs measured (p .053 on an
# AMX Xeon; five seeds resolve it there too). Wall time from a fresh clone: 35-36 min measured on a 2-core
# EPYC with AVX512-BF16 (bf16), 38 min on a 2-core Xeon with AMX (bf16), 63 min on a 2-core AVX2-only
# EPYC, which trains in fp32 (README "What the quickstart shows", "Speed"):
#   1. set up (.venv + Fashion-MNIST; idempotent, seconds when up to date);
#   2. prepare Fashion-MNIST at 32 px: the first QS_IMAGES training images as an HDF5 file,
#      their FID moments and P/R/D/C manifold with the offline efficientnet_lite0 network (224 px), in
#      one pass whose features the manifold, the selection and step 5's training-set rows read back;
#   3. instance selection: keep the densest 50 % of each class (efficientnet_lite0 embedding,
#      Gaussian likelihood) and write its report (most/least dense images, score histograms),
#      plus the control: a uniformly random 50 % of each class;
#   4. train the CPU recipe (experiment_grid.py's fmnist32_cpu_mbstd_ch8_bs32_GnoSN preset, compiled:
#      2400 iterations) three times per row with seeds 0, 1, 2: on all images, on the uniform half
#      and on the selected half;
#   5. score every run against ALL the images (IS, FID, precision, recall, density, coverage) and
#      write the summary: mean +- std over seeds, "better"/"worse"/"within noise" against all
#      data (Welch's t-test, p < .05), and whether the paper's directions held (summary.md,
#      summary.png, samples.png, curves/). The runs go seed by seed, and each round's end rewrites
#      summary.md with the seeds finished in every row so far, marked partial.
# Run it again and finished steps are read back, not redone (an interrupted run resumes; a larger
# QS_ITERS continues every run from its checkpoint).
# Environment (defaults): QS_OUT (results/quickstart), QS_IMAGES (3000; 0 = all 60k),
#   QS_PRESET (fmnist32_cpu_mbstd_ch8_bs32_GnoSN; fmnist32_cpu_mbstd_ch12 is the width-12 eager default
#   before, fmnist32_cpu_mbstd the same at width 16, fmnist32_cpu the earlier batch-64 recipe),
#   QS_ITERS (the preset's: 2400), QS_SEEDS (0,1,2), QS_COMPILE (1: torch.compile G and D, which needs
#   a C++ compiler; 0: eager), QS_BATCH, QS_CH, QS_EVAL_IMAGES (1000),
#   QS_EMBEDDING_RES (0 = 224 px), QS_JOBS (3 runs trained at once: on 2 cores the nine runs
#   take three rounds, each core time-sliced between 1.5 runs, where two at a time take five with one
#   core idle in the last; every run keeps one thread, so its numbers do not change), QS_DEVICE (auto),
#   QS_SAVE_EVERY, QS_LOG_EVERY, QS_DATA_ROOT ($QS_OUT/data), QS_SKIP_SETUP (0), PYTHON (.venv/bin/python).
# Extra arguments are train.py flags for every run, e.g. --G_lr 5e-4.
# The FID here is NOT the standard Inception FID (efficientnet_lite0 features): compare the
# rows with each other, not with papers.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

if [ "${QS_SKIP_SETUP:-0}" != 1 ]; then
  bash scripts/setup.sh
fi
PY=${PYTHON:-python}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python

OUT=${QS_OUT:-results/quickstart}
# The model, budget and metric settings are experiment_grid.py's fmnist32_cpu_mbstd_ch8_bs32_GnoSN preset
# (2400 iterations per run here, 1000 metric images); QS_* variables override them.
args=(--grid quickstart --output_dir "$OUT" --preset "${QS_PRESET:-fmnist32_cpu_mbstd_ch8_bs32_GnoSN}" --jobs "${QS_JOBS:-3}"
      --prepare --max_images "${QS_IMAGES:-3000}" --data_root "${QS_DATA_ROOT:-$OUT/data}"
      --title "Quickstart: BigGAN on Fashion-MNIST 32 px, all images vs the densest 50 %")
if [ -n "${QS_CH:-}" ]; then args+=(--G_ch "$QS_CH" --D_ch "$QS_CH"); fi
if [ -n "${QS_EVAL_IMAGES:-}" ]; then
  args+=(--num_inception_images "$QS_EVAL_IMAGES" --num_pr_images "$QS_EVAL_IMAGES")
fi
args+=(--seeds "${QS_SEEDS:-0,1,2}")
if [ "${QS_COMPILE:-1}" = 1 ]; then args+=(--compile); fi
for pair in QS_ITERS:--num_iters QS_BATCH:--batch_size QS_EMBEDDING_RES:--embedding_res \
            QS_DEVICE:--device QS_SAVE_EVERY:--save_every QS_LOG_EVERY:--log_every; do
  var=${pair%%:*}
  if [ -n "${!var:-}" ]; then args+=("${pair#*:}" "${!var}"); fi
done

"$PY" experiment_grid.py "${args[@]}" "$@"
echo "[quickstart] done in $(( $(date +%s) - start )) s; open $OUT/summary.md (all in one picture: $OUT/summary.png)"
