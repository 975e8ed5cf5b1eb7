#!/usr/bin/env bash
# Usage: prepare_data_imagenet.sh RES (64, 128 or 256; prepare_data_imagenet_RES.sh call it).
# Prepare RESxRES ImageNet for training and evaluation (BigGAN-PyTorch's prepare_data.sh):
#   1. DATA_ROOT/ILSVRC<RES>.hdf5                 the train split packed into one HDF5 file
#   2. DATA_ROOT/I<RES>_inception_moments.npz     mu/sigma of ALL training images, for FID
#   3. DATA_ROOT/I<RES>_inception_activations.npz features of 10k training images, for P/R/D/C
# Moments and manifold always describe the ORIGINAL data: instance selection happens at
# training time (launch scripts with --retention_ratio) and never changes them.
#
# Assumes ImageNet's train split in DATA_ROOT/ImageNet (default data/ImageNet), one subfolder
# per class: data/ImageNet/n01440764/*.JPEG, ... Steps whose output exists are skipped
# (FORCE=1 redoes them). The Inception-v3 weights must be in the torch hub cache or given
# with INCEPTION_WEIGHTS=FILE (the error message names the expected file).
# Environment (relative paths from the caller's folder): DATA_ROOT (the repository's data),
#   FEATURE_NET (inception_v3), BATCH_SIZE (256), NUM_WORKERS (8), NUM_PR_IMAGES (10000),
#   INCEPTION_WEIGHTS (''), PYTHON (.venv/bin/python).
# Under torchrun the metrics steps shard over GPUs: prefix with LAUNCH="torchrun --nproc_per_node=8".
set -euo pipefail
# Relative paths are the caller's: made absolute before the script works from the repository root.
if [ -n "${DATA_ROOT:-}" ]; then DATA_ROOT=$(realpath -m -- "$DATA_ROOT"); fi
if [ -n "${INCEPTION_WEIGHTS:-}" ]; then INCEPTION_WEIGHTS=$(realpath -m -- "$INCEPTION_WEIGHTS"); fi
cd "$(dirname "$0")/../.."
RES=${1:?usage: prepare_data_imagenet.sh RES (64, 128 or 256)}
PY=${PYTHON:-python}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
DATA_ROOT=${DATA_ROOT:-data}
FEATURE_NET=${FEATURE_NET:-inception_v3}
BATCH_SIZE=${BATCH_SIZE:-256}
NUM_WORKERS=${NUM_WORKERS:-8}
NUM_PR_IMAGES=${NUM_PR_IMAGES:-10000}
LAUNCH=${LAUNCH:-$PY}
METRIC_FLAGS=(--dataset "I${RES}_hdf5" --data_root "$DATA_ROOT" --feature_net "$FEATURE_NET"
              --inception_weights "${INCEPTION_WEIGHTS:-}" --batch_size "$BATCH_SIZE"
              --num_workers "$NUM_WORKERS")

out_path() {  # the file name inception_utils uses (the single source of truth)
  "$PY" -c "import sys, inception_utils as iu; print(getattr(iu, sys.argv[1])(
{'dataset': sys.argv[2], 'data_root': sys.argv[3], 'feature_net': sys.argv[4]}))" "$@"
}
todo() { [ "${FORCE:-0}" = 1 ] || [ ! -e "$1" ]; }

HDF5="$DATA_ROOT/ILSVRC${RES}.hdf5"
if todo "$HDF5"; then
  if [ ! -d "$DATA_ROOT/ImageNet" ]; then
    echo "error: ImageNet not found in $DATA_ROOT/ImageNet; put the train split there (one" \
         "subfolder per class, e.g. $DATA_ROOT/ImageNet/n01440764/) or set DATA_ROOT" >&2
    exit 2
  fi
  "$PY" make_hdf5.py --dataset "I${RES}" --data_root "$DATA_ROOT" --batch_size "$BATCH_SIZE" \
    --num_workers "$NUM_WORKERS" --overwrite
else
  echo "[prepare] $HDF5 exists (FORCE=1 rebuilds it)"
fi

MOMENTS=$(out_path moments_path "I${RES}_hdf5" "$DATA_ROOT" "$FEATURE_NET")
if todo "$MOMENTS"; then
  $LAUNCH calculate_inception_moments.py "${METRIC_FLAGS[@]}"
else
  echo "[prepare] $MOMENTS exists (FORCE=1 recomputes it)"
fi

MANIFOLD=$(out_path manifold_path "I${RES}_hdf5" "$DATA_ROOT" "$FEATURE_NET")
if todo "$MANIFOLD"; then
  $LAUNCH prepare_manifold.py "${METRIC_FLAGS[@]}" --num_pr_images "$NUM_PR_IMAGES" --seed 0
else
  echo "[prepare] $MANIFOLD exists (FORCE=1 recomputes it)"
fi
echo "[prepare] I${RES} ready: $HDF5, $MOMENTS, $MANIFOLD"
