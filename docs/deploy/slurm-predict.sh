#!/usr/bin/env bash
# Batch scoring of a large image folder as a Slurm job array: one `predict` shard per task,
# each into its own part; a task preempted or requeued goes on where it stopped (--resume).
#   sbatch docs/deploy/slurm-predict.sh RUN IMAGES OUT
#   predict --merge OUT/part-0.csv ... --merge OUT/part-3.csv --output OUT/all.csv IMAGES
# Checked by tests/batch.rs with each task's environment set by hand (not on a real Slurm).
#SBATCH --job-name=vocml-predict
#SBATCH --array=0-3
#SBATCH --cpus-per-task=2
#SBATCH --mem=2G
#SBATCH --requeue
set -euo pipefail
run=${1:?usage: slurm-predict.sh RUN IMAGES OUT}
images=${2:?usage: slurm-predict.sh RUN IMAGES OUT}
out=${3:?usage: slurm-predict.sh RUN IMAGES OUT}
mkdir -p "$out"
exec predict --run "$run" --shard "$((SLURM_ARRAY_TASK_ID + 1))/$SLURM_ARRAY_TASK_COUNT" --resume \
  --output "$out/part-$SLURM_ARRAY_TASK_ID.csv" "$images"
