#!/bin/bash
# Submit a whole VirtualBiopsy training run to Slurm: prepare, generators, classifiers,
# package, each stage waiting for the previous one (afterok).
#
#   docs/slurm/submit_training.sh MANIFEST RUN_DIR PACKAGE_DIR [config options]
#
# config options are those `train` and `jobs` share (--architecture resnet18, --config
# config.json, --epochs N, --no-generators, ...); every stage gets the same ones. With
# PRETRAIN=cdd/manifest.csv in the environment the generators are pre-trained first.
#
# A stage that fails (one task is enough) cancels the stages after it instead of leaving
# them pending forever (--kill-on-invalid-dep); the package step runs all the same and
# lists the jobs that are not finished. Fix the cause and run the same command again:
# every finished job returns at once (--resume), the others continue or start.
set -euo pipefail
manifest=$1
run_dir=$2
package_dir=$3
shift 3
here=$(dirname "$0")
pretrain=()
if [[ -n "${PRETRAIN:-}" ]]; then
    pretrain=(--pretrain-manifest "$PRETRAIN")
fi
options=("$@" "${pretrain[@]}")
ids() { virtual-biopsy-train jobs "${options[@]}" --ids "$1"; }

# 0. config.json, jobs.json, splits.json and the preprocessed-image cache, once (CPU)
prepare=$(printf '%q ' virtual-biopsy-train train "$manifest" --out "$run_dir" --prepare \
    "${options[@]}")
after=$(sbatch --parsable --job-name=vb-prepare --cpus-per-task=8 --mem=32G \
    --wrap "$prepare")
# 1-3. one array per stage: pre-training (if any), generators, classifiers
for kind in pretrain generator classifier; do
    array=$(ids "$kind")
    [[ -z "$array" ]] && continue
    after=$(sbatch --parsable --array="$array" --dependency="afterok:$after" \
        --kill-on-invalid-dep=yes "$here/train_job.sbatch" "$manifest" "$run_dir" "${options[@]}")
    echo "$kind jobs $array: Slurm job $after"
done
# 4. gather the finished jobs into a model package, or list those that are not finished
# (afterany: it runs when the stages have ended or were cancelled)
sbatch --parsable --job-name=vb-package --dependency="afterany:$after" \
    --wrap "$(printf '%q ' virtual-biopsy-train package "$run_dir" --out "$package_dir")"
