#!/bin/bash
# deepaas under udocker: Docker images without Docker or root (docs/hpc.md).
# Run the lines by hand on a login or compute node; IMAGE is the image that
# `deepaas-cli dockerize` made, pushed to a registry.
set -euo pipefail

IMAGE=${IMAGE:-registry.example.org/me/my-model:1.0.0-gpu}
STATE_DIR=${STATE_DIR:-${SCRATCH:-${TMPDIR:-/tmp}}/deepaas/state}
mkdir -p "$STATE_DIR"

udocker pull "$IMAGE"
udocker create --name=my-model "$IMAGE"
udocker setup --nvidia my-model      # GPU images only: the host's driver libraries
# udocker does not pass the host's environment in: the GPUs the job was given
# (CUDA_VISIBLE_DEVICES, when set) are passed explicitly, so deepaas-run keeps
# to them (docs/hpc.md). Unset, deepaas uses every GPU NVML reports.
gpus=()
if [ -n "${CUDA_VISIBLE_DEVICES+set}" ]; then
    gpus=(--env="CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES")
fi
udocker run "${gpus[@]}" --volume="$STATE_DIR" my-model \
    deepaas-run --listen-ip 127.0.0.1 --listen-port 5000 --state-dir "$STATE_DIR"
