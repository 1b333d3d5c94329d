#!/usr/bin/env bash
# Batch scoring of a large image folder as a Slurm job array: one `predict` shard per task,
# each into its own part; a task preempted, requeued or re-submitted goes on where it stopped
# (--resume). Arguments after OUT go to predict.
#   sbatch docs/deploy/slurm-predict.sh RUN IMAGES OUT [PREDICT_OPTIONS...]
#   sbatch --array=2 docs/deploy/slurm-predict.sh RUN IMAGES OUT     (task 2 again, resumed)
#   predict --merge OUT/part-0.csv ... --merge OUT/part-3.csv --output OUT/all.csv IMAGES
# Run on a real one-node Slurm by tests/batch.rs (4 tasks, one killed and re-submitted).
#SBATCH --job-name=vocml-predict
#SBATCH --array=0-3
#SBATCH --cpus-per-task=2
#SBATCH --mem=2G
#SBATCH --requeue
set -euo pipefail
run=${1:?usage: slurm-predict.sh RUN IMAGES OUT}
images=${2:?usage: slurm-predict.sh RUN IMAGES OUT}
out=${3:?usage: slurm-predict.sh RUN IMAGES OUT}
# Shards: the size of the array above, fixed here (not SLURM_ARRAY_TASK_COUNT) so that a task
# re-submitted alone (--array=2) scores the same shard; SHARDS=N sbatch --array=0-$((N-1)) ...
shards=${SHARDS:-4}
mkdir -p "$out"
exec predict --run "$run" --shard "$((SLURM_ARRAY_TASK_ID + 1))/$shards" --resume \
  --output "$out/part-$SLURM_ARRAY_TASK_ID.csv" "${@:4}" "$images"
