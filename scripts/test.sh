#!/usr/bin/env bash
# Set up (idempotent), then run the pytest suite on the CPU: all of tests/ (pyproject's testpaths),
# or the files / -k expressions given as arguments.
# TEST_WORKERS (default 2) pytest-xdist processes share the tests one by one; a file marked
# xdist_group runs whole on one worker (its module fixtures are built once). TEST_WORKERS=0 runs
# everything in this process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n "${TEST_WORKERS:-2}" --dist loadgroup "$@"
