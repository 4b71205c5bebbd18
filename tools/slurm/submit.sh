#!/usr/bin/env bash
# The whole pipeline as Slurm jobs. Per stage, three jobs, each waiting for the one before
# (--dependency=afterok): plan (one task: pins models, cuts the shard plan, builds whole-input indexes) ->
# an array of TASKS slices (stage.sbatch) -> finalize (verifies every shard, writes the manifest). Every
# executor writes the same bytes, so the array size is a throughput choice, not a data one.
#
#   RUN=/shared/runs/paper PRESET=scalequest-math TASKS=64 tools/slurm/submit.sh [--set key=value ...]
#
# Progress: `scalequest status $RUN`. A failed array stops the chain; fix the cause and re-run this script:
# complete, verified shards are never redone.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${RUN:?set RUN to the run directory (shared storage)}"
PRESET=${PRESET:-scalequest-math}
TASKS=${TASKS:-8}
mapfile -t stages < <(scalequest presets "$PRESET" "$@")
# The first plan job resolves the config (preset and --set values, quoted for the job's shell) into
# RUN/config.yaml; every later job reads that file, so no value travels through sbatch's comma-separated
# --export or a job's word splitting.
source_args=$(printf '%q ' --preset "$PRESET" "$@")
run_q=$(printf '%q' "$RUN")
dependency=()
for stage in "${stages[@]}"; do
  plan=$(sbatch --parsable "${dependency[@]}" --job-name "scalequest-plan-$stage" --ntasks=1 --cpus-per-task=4 \
         --wrap "scalequest run $source_args --out $run_q --stage $stage --plan-only --no-progress")
  plan=${plan%%;*}  # --parsable prints "id" or "id;cluster": a dependency names the id
  source_args="--config $run_q/config.yaml"
  array=$(sbatch --parsable --dependency="afterok:$plan" --array="0-$((TASKS - 1))" \
          --job-name "scalequest-$stage" --export="ALL,RUN=$RUN,STAGE=$stage" "$here/stage.sbatch")
  array=${array%%;*}
  final=$(sbatch --parsable --dependency="afterok:$array" --job-name "scalequest-finalize-$stage" --ntasks=1 \
          --wrap "scalequest finalize $run_q")
  final=${final%%;*}
  echo "$stage: plan $plan, array $array (${TASKS} tasks), finalize $final"
  dependency=(--dependency="afterok:$final")
done
