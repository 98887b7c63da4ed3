#!/bin/bash
# OSCAR runs this in the model's image for each input file (my-model.yaml):
# the model predicts on INPUT_FILE_PATH, and the result goes into
# TMP_OUTPUT_DIR, named after the input (cat.jpg -> cat.jpg.json, or
# cat.jpg.png for an image result), which OSCAR uploads. A failed prediction
# exits non-zero with the model's message on stderr (OSCAR's job log).
set -euo pipefail

echo "deepaas: predicting on ${INPUT_FILE_PATH}"
# PREDICT_OPTIONS (e.g. "--accept image/png"): split into words on purpose.
# shellcheck disable=SC2086
deepaas-cli predict \
    --inputs "$INPUT_FILE_PATH" \
    --output-dir "$TMP_OUTPUT_DIR" \
    --jobs 1 \
    ${PREDICT_OPTIONS:-}
