#!/usr/bin/env bash
# Idempotent set-up: a .venv with requirements.txt and requirements-dev.txt at the exact versions of
# constraints.txt, and the Fashion-MNIST IDX files.
# A second run only compares a stamp and returns in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP="$VENV/.requirements.sha256"
want=$(cat requirements.txt requirements-dev.txt constraints.txt | sha256sum | cut -d' ' -f1)

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing requirements.txt + requirements-dev.txt (constraints.txt) into $VENV" \
       "(torch is large: the first run takes minutes)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -r requirements.txt -r requirements-dev.txt -c constraints.txt
  echo "$want" > "$STAMP"
else
  echo "[setup] $VENV is up to date with the requirements"
fi

FMNIST_DIR=${FMNIST_ROOT:-/usr/share/datasets/fashion-mnist}
if ls "$FMNIST_DIR"/train-images-idx3-ubyte* >/dev/null 2>&1; then
  echo "[setup] Fashion-MNIST found in $FMNIST_DIR"
elif [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "[setup] installing Debian's dataset-fashion-mnist"
  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null; }) ||
    echo "[setup] could not install dataset-fashion-mnist; the Fashion-MNIST tests will be skipped"
else
  echo "[setup] Fashion-MNIST is not in $FMNIST_DIR. Get it with 'sudo apt-get install dataset-fashion-mnist'"
  echo "        or put the four IDX files (train-images-idx3-ubyte.gz, ...) there / set FMNIST_ROOT."
fi
