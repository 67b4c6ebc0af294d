#!/usr/bin/env bash
# The instability study of issue 23 (docs/results/stability.md): is an RL agent stable to the noise of
# training from a rewind step k (Frankle et al. 2020), for the dense network and for IMP tickets, and do
# tickets rewound to the k chosen from that evidence beat tickets rewound to k = 0?
#
#   1. task=stability for PPO on CartPole-v1 (the default job: zoo settings, 100,000 steps) and LeNet-300-100
#      on mnist5k (experiment=lth_lenet_mnist5k, 3,000 iterations), seeds $SEEDS, rewind steps $GRID of the
#      budget, levels $LEVELS (global 20% per level for PPO: 51.2%, 21.0%, 5.5%; LeNet layer-wise, hidden 20%
#      and output 10% per level: 51.2%, 21.0%, 5.5% of the hidden weights). Each seed's analysis runs its own
#      dense run and the k = 0 IMP chain up to the deepest level (its masks), then one pair per (k, level).
#   2. The k = 0 arm is that chain; the chosen-k arm is the same chain with rewind.auto=true (each seed's k
#      from its own analysis: the smallest k at which every analysed level is stable at the 5% threshold).
#   3. rl-tickets-report ROOT: ticket-vs-dense verdicts per arm and the analyses' figures. Seeds whose chosen
#      k differ land in different chain hashes, so scripts/report_stability.py then pools each arm over its
#      seeds, pairs the chosen-k tickets with the k = 0 tickets by seed, and counts where instability comes from.
#
# Optional DQN on CartPole (zoo settings) with a trimmed grid and levels, judged against the dense run's best
# return (stability.reference=best): DQN=1.
# Cost and plan: docs/results/stability.md. Everything resumes: rerun the same command after an interrupt.
#
# Usage: bash scripts/study_stability.sh            (ROOT=results_stability SEEDS=0,1,2,3,4 JOBS=2)
#        SEEDS=0 GRID='[0,0.05]' LEVELS='[0,3]' ROOT=/tmp/smoke bash scripts/study_stability.sh   (smoke)
set -euo pipefail

ROOT=${ROOT:-results_stability}
SEEDS=${SEEDS:-0,1,2,3,4}
GRID=${GRID:-[0,0.01,0.05,0.2]}
LEVELS=${LEVELS:-[0,3,7,13]}
DEEPEST=$(python -c "print(max($LEVELS))")
JOBS=${JOBS:-2}
LAUNCH=(--multirun "hydra/launcher=joblib" "hydra.launcher.n_jobs=$JOBS")
STABILITY=("stability.steps=$GRID" "stability.levels=$LEVELS")

run() {
  echo "+ rl-tickets $*" >&2
  /usr/bin/time -f "  wall %e s" rl-tickets "$@"
}

study() {  # study NAME TASK [overrides...]: analysis, k = 0 arm, chosen-k arm
  local name=$1 of=$2
  shift 2
  run "${LAUNCH[@]}" "$@" task=stability "stability.of=$of" "${STABILITY[@]}" "seed=$SEEDS" "root=$ROOT" "name=$name"
  run "${LAUNCH[@]}" "$@" "prune.levels=$DEEPEST" "seed=$SEEDS" "root=$ROOT" "name=${name}_k0"
  # rewind.auto refuses (exit 2, one line per seed) when no k of the grid is stable for a seed: that is a
  # result (DQN on CartPole: docs/results/stability.md), so the study goes on to the next task and the report.
  run "${LAUNCH[@]}" "$@" "prune.levels=$DEEPEST" rewind.auto=true "${STABILITY[@]}" "seed=$SEEDS" "root=$ROOT" \
    "name=${name}_auto_k" || echo "  ${name}: no chosen-k arm (rewind.auto refused; see the lines above)" >&2
}

study ppo_cartpole rl
study lenet_mnist5k supervised experiment=lth_lenet_mnist5k 'controls=[]'
if [[ "${DQN:-0}" == 1 ]]; then
  GRID=${DQN_GRID:-[0,0.05,0.2]} LEVELS=${DQN_LEVELS:-[0,3,7]}
  # The threshold is 5% of the dense run's best return: zoo DQN ends some seeds far below its best.
  STABILITY=("stability.steps=$GRID" "stability.levels=$LEVELS" stability.reference=best)
  DEEPEST=$(python -c "print(max($LEVELS))")
  study dqn_cartpole rl algo=dqn
fi

rl-tickets-report "$ROOT"
if [[ "${DQN:-0}" == 1 ]]; then  # DQN's final return is noisy: its verdicts also on the best evaluation
  rl-tickets-report "$ROOT" --metric best --out "$ROOT/report_best"
fi

# Each chosen-k arm pooled over its seeds, and the chosen-k tickets against the k = 0 tickets, paired by seed.
python scripts/report_stability.py "$ROOT"
