#!/usr/bin/env bash
# GPU check (issue 15, item 3): what a person with one NVIDIA GPU runs, as is, from the checkout:
#
#     scripts/gpu_check.sh                  # report: gpu_check_report.json in the checkout root
#     scripts/gpu_check.sh /tmp/report.json
#
# 1. makes a virtualenv (.venv-gpu, or $VENV) with the GPU extras: `pip install -e '.[dev,eval,gpu]'`
#    (vLLM from PyPI brings the CUDA torch it pins);
# 2. runs scripts/gpu_check.py: each check in its own process (vLLM engines keep GPU memory until
#    their process ends), writing results to a temporary folder, never to results/ or paper_tables/:
#      devices      a tiny GRPO run with device=cuda (weights fp32, forward bf16 autocast)
#      throughput   SmolLM2-135M: sampled tokens/s of vLLM vs transformers.generate, greedy
#                   agreement, sampler-vs-learner log-prob mismatch in bf16
#      small_<paper> one GRPO-trainer arm of each landed paper at scale=small, 3 steps, rollouts on vLLM
#      reproduce    `repro reproduce clipping_bottleneck --arms grpo,dapo_nsr --seeds 1` at micro scale
#                   on the GPU (device=auto), tables built into the temporary folder
# 3. writes a JSON report: tokens/s vLLM vs HF, step times, peak GPU memory, pass/fail per check.
#
# Expected runtime on one H200-class GPU: ~3 min of installs (network-bound) + ~6-8 min of checks;
# the script stops any check still running at the 12-minute mark (GPU_CHECK_BUDGET_S) and reports it.
# Needs PyPI (packages, and the SmolLM2 wheel) and either REPRO_DATA_DIR with the GSM8K / MMLU /
# TruthfulQA files (README: Evaluate a real model) or the Hugging Face hub for them.
#
# Not run yet: no GPU was available to the session that wrote it (see README "Scaling out").
set -euo pipefail
cd "$(dirname "$0")/.."
REPORT=${1:-gpu_check_report.json}
VENV=${VENV:-.venv-gpu}
export GPU_CHECK_BUDGET_S=${GPU_CHECK_BUDGET_S:-720}
START=$(date +%s)

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q -e '.[dev,eval,gpu]'

export MLFLOW_DISABLE_TELEMETRY=true
export GPU_CHECK_STARTED=$START
exec "$VENV/bin/python" scripts/gpu_check.py --report "$REPORT"
