#!/bin/bash
# Rebuilds benchmark 1's DAgger stores (sessions 37-38) from the kept executors in
# dagger_executors/ and the kept experts, in minutes on 2 cores, then prints the
# --extra_datasets list for experiments.multitask_offline_benchmark.
#   experiments/results/generalist_multitask/make_dagger_data.sh OUT
# Each store is what the session-37 recipe made (same executors, seeds and expert):
#   reacher_d1-3       MLP BC rounds 0-2 act, the greedy expert labels (20 episodes each)
#   pendulum_m1-3      the same with --executor_share 0.5 (DAgger's mixture)
#   g1_<task>          the first generalist (trained on the expert data and the six rounds
#                      above) acts in each task, 20 episodes (seed 10 + 1000 i, i its index: what
#                      make_dataset.run_seed gave the five-task store of session 37)
#   g2_cartpole_swingup the second generalist (also on g1) acts, 60 swingup episodes
set -euo pipefail
OUT=${1:?usage: make_dagger_data.sh OUT}
cd "$(dirname "$0")/../../.."
P=.venv/bin/python; E=experiments/results/experts
X=experiments/results/generalist_multitask/dagger_executors
[ -x $P ] || { echo "error: $P missing: run 'make venv' first" >&2; exit 1; }
mkdir -p "$OUT"
make_round() {  # out expert executor seed episodes [more make_dataset flags]
  local out=$OUT/$1 expert=$2 executor=$3 seed=$4 episodes=$5; shift 5
  if [ -f "$out/manifest.json" ]; then echo "[dagger-data] kept $out"; return 0; fi
  $P -m experiments.make_dataset --run_dir $E/$expert --kind expert --greedy \
    --executor_run $X/$executor --episodes $episodes --seed $seed --out "$out" "$@" 2>&1 | tail -1
}
for r in 1 2 3; do
  make_round reacher_d$r reacher_easy reacher_easy_bc$((r - 1)) $r 20
  make_round pendulum_m$r pendulum_swingup pendulum_swingup_mixture_bc$((r - 1)) $r 20 \
    --executor_share 0.5
done
i=0
for task in cartpole_swingup cartpole_balance pendulum_swingup point_mass_easy reacher_easy; do
  make_round g1_$task $task generalist_1 $((10 + 1000 * i)) 20
  i=$((i + 1))
done
make_round g2_cartpole_swingup cartpole_swingup generalist_2 20 60
ls -d "$OUT"/reacher_d* "$OUT"/pendulum_m* "$OUT"/g1_* "$OUT"/g2_* | paste -sd, -
