#!/bin/bash
# deepaas under udocker: Docker images without Docker or root (docs/hpc.md).
# Run it (or its lines by hand) on a login or compute node; IMAGE is the
# image that `deepaas-cli dockerize` made, pushed to a registry.
#
#   IMAGE=registry.example.org/me/my-model:1.0.0-gpu bash deploy/hpc/udocker.sh
#
# Run again, it reuses the container it created (RECREATE=1 makes it anew,
# after pulling a new image under the same tag). GPU=1 or GPU=0 says whether
# this is a GPU run; by default it is one for a -gpu image on a node with
# nvidia-smi. PORT=... chooses the port, else a free one is picked.
set -euo pipefail

IMAGE=${IMAGE:-registry.example.org/me/my-model:1.0.0-gpu}
CONTAINER=${CONTAINER:-my-model}
# The same place as the Slurm scripts' (serve-gpu.sbatch, train-2nodes.sbatch):
# the state and what models save, on the shared file system.
DEEPAAS_STATE_DIR=${DEEPAAS_STATE_DIR:-${SCRATCH:-$HOME}/deepaas/state}
DEEPAAS_EXAMPLE_WEIGHTS=${DEEPAAS_EXAMPLE_WEIGHTS:-$DEEPAAS_STATE_DIR/examples/torch_mlp.pt}
mkdir -p "$DEEPAAS_STATE_DIR"

if [ -z "${GPU:-}" ]; then
    GPU=0
    case "$IMAGE" in
        *-gpu) if command -v nvidia-smi >/dev/null 2>&1; then GPU=1; fi ;;
    esac
fi

udocker pull "$IMAGE"
if [ "${RECREATE:-0}" = 1 ] && udocker inspect -p "$CONTAINER" >/dev/null 2>&1; then
    udocker rm "$CONTAINER"
fi
if ! udocker inspect -p "$CONTAINER" >/dev/null 2>&1; then
    udocker create --name="$CONTAINER" "$IMAGE"
fi
if [ "$GPU" = 1 ]; then
    # The host's NVIDIA driver libraries, copied into the container (--force:
    # again on a second run, or after a driver update).
    udocker setup --nvidia --force "$CONTAINER"
fi

# udocker does not pass the host's environment in: the GPUs the job was given
# (CUDA_VISIBLE_DEVICES, when set) are passed explicitly, so deepaas-run keeps
# to them (docs/hpc.md). Unset, deepaas uses every GPU NVML reports; set and
# empty, none. ${gpus[@]+...}: an empty array is "unbound" under set -u on
# bash before 4.4.
gpus=()
if [ -n "${CUDA_VISIBLE_DEVICES+set}" ]; then
    gpus=(--env="CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES")
fi

# A free port on this node (asked of the kernel; udocker needs python3). It
# is free now; another process could take it before deepaas-run listens
# (rare): deepaas-run then stops at once with "cannot listen on ...", and a
# second run picks another.
PORT=${PORT:-$(python3 -c \
    'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
NODE=$(hostname)
LOGIN=${DEEPAAS_LOGIN_HOST:-<your login node>}
echo "deepaas: serving on ${NODE}:${PORT} (127.0.0.1 only), state in ${DEEPAAS_STATE_DIR}."
echo "deepaas: from your machine, open a tunnel, then http://localhost:${PORT}/api:"
echo "  ssh -N -L ${PORT}:127.0.0.1:${PORT} -J ${USER}@${LOGIN} ${USER}@${NODE}"
echo "  (on the login node itself: ssh -N -L ${PORT}:127.0.0.1:${PORT} ${USER}@${LOGIN})"

udocker run ${gpus[@]+"${gpus[@]}"} \
    --env="DEEPAAS_EXAMPLE_WEIGHTS=$DEEPAAS_EXAMPLE_WEIGHTS" \
    --volume="$DEEPAAS_STATE_DIR" "$CONTAINER" \
    deepaas-run --listen-ip 127.0.0.1 --listen-port "$PORT" \
    --state-dir "$DEEPAAS_STATE_DIR"
