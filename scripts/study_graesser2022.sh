#!/usr/bin/env bash
# Graesser, Evci, Elsen & Castro (ICML 2022)'s classic-control comparison in rl_tickets (issue 24), behind
# docs/results/graesser2022.md:
#   - DQN on CartPole-v0 with their gin settings (experiment=graesser2022_dqn_cartpole; MLP 256x256 and 50k
#     steps instead of 512x512 and 100k), and PPO on CartPole-v1 with the zoo's settings
#     (experiment=graesser2022_ppo_cartpole);
#   - densities 0.8^7, 0.8^10, 0.8^13 (20.97%, 10.74%, 5.50%);
#   - methods: dense; IMP ticket (global magnitude, 20% per level, rewound to 0, 13 levels: levels 7, 10 and
#     13 sit at the three densities); gradual pruning, static, SET and RigL, all ERK; small_dense (beside
#     static, matched to its kept count); SET with uniform per-layer density (ERK vs uniform);
#   - seeds 0-4. The chains of a seed share its dense level, which is trained first, once.
# Per seed and algorithm: 1 dense + 13 IMP + 3 x (gradual, static, small_dense, SET, RigL, SET-uniform) = 32
# trainings. Everything writes into STUDY_ROOT and resumes where it stopped (finished levels are kept).
#   STUDY_ROOT   results root (default: study_graesser2022, ignored by git)
#   STUDY_JOBS   parallel processes (default 2; each single-threaded)
#   STUDY_SEEDS  comma-separated seeds (default 0,1,2,3,4)
#   STUDY_ALGOS  space-separated (default "dqn ppo")
#   STUDY_EXTRA  extra overrides for every command, e.g. "train.timesteps=10000" for a smoke version
#   STUDY_OUT    where the report goes (default docs/results/graesser2022)
# Planned cost (measured, docs/results/graesser2022.md): about 7-10 CPU-hours, 3.5-5 hours on 2 free cores.
set -euo pipefail
ROOT="${STUDY_ROOT:-study_graesser2022}"
JOBS="${STUDY_JOBS:-2}"
SEEDS="${STUDY_SEEDS:-0,1,2,3,4}"
ALGOS="${STUDY_ALGOS:-dqn ppo}"
OUT="${STUDY_OUT:-docs/results/graesser2022}"
read -r -a EXTRA <<< "${STUDY_EXTRA:-}"
DENSITIES="0.2097152,0.1073741824,0.0549755813888"

for algo in $ALGOS; do
  run=(rl-tickets --multirun "experiment=graesser2022_${algo}_cartpole" "seed=$SEEDS" "root=$ROOT"
       logger.mode=offline threads=1 hydra/launcher=joblib "hydra.launcher.n_jobs=$JOBS" "${EXTRA[@]}")
  # 1. Each seed's dense level, alone, so parallel chains never wait on each other's dense run
  #    (prune.levels=0 trains only the dense network; the IMP chain's settings, so no extra chain appears).
  "${run[@]}" prune.distribution=uniform prune.levels=0
  # 2. IMP tickets: global magnitude pruning, 20% per level, rewound to the initialisation, 13 levels.
  "${run[@]}" prune.distribution=uniform
  # 3. Gradual pruning, SET and RigL (ERK) at each density.
  "${run[@]}" prune.schedule=gradual,set,rigl "prune.final_density=$DENSITIES"
  # 4. Static sparse training (ERK) with the small dense network matched to its kept count.
  "${run[@]}" prune.schedule=static "prune.final_density=$DENSITIES" "controls=[small_dense]"
  # 5. SET with every layer at the same density: ERK against uniform.
  "${run[@]}" prune.schedule=set prune.distribution=uniform "prune.final_density=$DENSITIES"
done
python scripts/report_graesser2022.py "$ROOT" --out "$OUT"
