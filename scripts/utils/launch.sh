# Sourced by the launch scripts. `launch SCRIPT.py FLAGS...` runs the script from the repo
# root: under torchrun (DDP, one process per GPU) when more than one GPU is visible, else
# as a plain python process. Extra flags given to the launch script are appended, so
#   bash scripts/launch_BigGAN_res128_ch64_bs256_dstep_1_rr50.sh --resume
# resumes. Multi-node: set NNODES, NODE_RANK and MASTER_ADDR (and MASTER_PORT).
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
PY=${PYTHON:-python}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python

launch() {
  local script=$1; shift
  local ngpu
  ngpu=$("$PY" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)
  if [ "${NNODES:-1}" -gt 1 ] || [ "${ngpu:-0}" -gt 1 ]; then
    exec "$PY" -m torch.distributed.run --nproc_per_node="${NPROC_PER_NODE:-$ngpu}" \
      --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
      --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" \
      "$script" "$@"
  fi
  exec "$PY" "$script" "$@"
}
