#!/usr/bin/env bash
# The archived layer-scope study behind docs/results/study_ppo_cartpole: PPO on CartPole-v1 with rl-baselines3-zoo settings, 5 seeds,
# layer-wise pruning (prune.scope=layer, the default when it ran), 4 levels at 53% per level (density 0.47^4 = 4.9%), the ticket (rewound to step 0) against two controls
# (reinit: same mask, fresh weights; random_mask: a random mask with the same per-layer density).
# About 45 minutes with 2 parallel jobs on a 2-core CPU. STUDY_ALGOS="ppo dqn" adds DQN (about 1.5 h more).
# Resumable: rerunning finishes only missing levels. STUDY_ROOT defaults to ./study (not in git).
set -euo pipefail
ROOT="${STUDY_ROOT:-study}"
JOBS="${STUDY_JOBS:-2}"
COMMON=(root="$ROOT" seed=0,1,2,3,4 prune.scope=layer prune.levels=4 prune.rate=0.53 "controls=[reinit,random_mask]"
        logger.mode=offline hydra/launcher=joblib hydra.launcher.n_jobs="$JOBS")
for algo in ${STUDY_ALGOS:-ppo}; do
  rl-tickets --multirun algo="$algo" env=cartpole name="study_${algo}_cartpole" "${COMMON[@]}"
done
rl-tickets-report "$ROOT" --out docs/results
