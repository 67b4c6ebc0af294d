#!/usr/bin/env bash
# The reproduction behind docs/results/vischer2022_cartpole.md (issues 10 and 20), and the scope comparison
# behind the default prune.scope=global:
#   1. experiment=vischer2022_cartpole: PPO CartPole (zoo settings, 100k steps per level, evaluated every
#      5,000 steps), global IMP at 20% per level for 15 levels (3.5% density), rewound to init, ticket +
#      permute, random_mask, random_reinit, seeds 0-4 (5 x 61 trainings);
#   2. the same chain with prune.scope=layer, 14 levels (4.4%), seeds 0-2, ticket only (the global arm is
#      chain 1's ticket: levels and controls are not part of a chain's identity, so they share directories).
#   3. the supermask and random_supermask controls on chain 1 (untrained; evaluation only), under each of the
#      four weight rules of supermask.weights (init last, so the chains' own tables show the default); after
#      each rule its rows are collected into docs/results/vischer2022/supermask_rules.csv.
#   4. the tables of docs/results/vischer2022.
# Stages: bash scripts/study_vischer2022.sh [all|train|supermask|report] (default all). Everything writes into
# STUDY_ROOT (default ./study, ignored by git) and resumes where it stopped. Measured: see
# docs/results/vischer2022_cartpole.md ("The command").
set -euo pipefail
ROOT="${STUDY_ROOT:-study}"
STAGE="${1:-all}"
OUT=docs/results/vischer2022
COMMON=(root="$ROOT" logger.mode=offline hydra/launcher=joblib)
if [[ "$STAGE" == all || "$STAGE" == train ]]; then
  rl-tickets --multirun experiment=vischer2022_cartpole seed=0,1,2,3,4 eval.every=5000 \
    hydra.launcher.n_jobs="${STUDY_JOBS:-2}" "${COMMON[@]}" &
  vischer=$!
  rl-tickets --multirun seed=0,1,2 prune.scope=layer prune.levels=14 eval.every=0 name=scope_layer_cartpole \
    hydra.launcher.n_jobs=1 "${COMMON[@]}" &
  layer=$!
  wait "$vischer" "$layer"
fi
if [[ "$STAGE" == all || "$STAGE" == supermask ]]; then
  # The untrained controls on the finished chains: evaluation only, nothing retrains (about 1 min per seed
  # and rule; `shared` evaluates each of supermask.shared_values). Rows are collected after each seed and
  # rule (keyed by seed, level, variant and rule), so SUPERMASK_SEEDS="0 1" can run as soon as those seeds'
  # chains are finished; init goes last, so the chains' own tables show the default rule.
  mkdir -p "$OUT"
  SEEDS="${SUPERMASK_SEEDS:-0 1 2 3 4}"
  [[ "$SEEDS" == "0 1 2 3 4" ]] && rm -f "$OUT/supermask_rules.csv"
  for seed in $SEEDS; do
    for rule in signed_constant shared resampled init; do
      rl-tickets experiment=vischer2022_cartpole seed="$seed" "controls=[supermask,random_supermask]" \
        supermask.weights="$rule" root="$ROOT" logger.mode=offline
      python scripts/report_vischer2022.py "$ROOT" --collect-supermask "$OUT/supermask_rules.csv"
    done
  done
fi
if [[ "$STAGE" == all || "$STAGE" == report ]]; then
  python scripts/report_vischer2022.py "$ROOT" --out "$OUT"
fi
