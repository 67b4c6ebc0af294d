"""Sparse training in SB3 (static, SET, RigL): the callback that updates a policy's mask while it trains.

Every ``every`` environment steps until ``end`` the schedule (:class:`rl_tickets.sparsity.dynamic.DynamicSchedule`)
drops and grows weights; :func:`rl_tickets.sparsity.dynamic.apply_update` carries the new mask into the
policy: online and target networks (targets follow the online mask at each update), weights and the
state of every optimizer SB3 hangs on the policy. Each update is logged per layer (the trainer hands
the rows to ``mask_updates.csv``) and summed into one curve point (W&B).

SET updates at the first callback step at or after each multiple of ``every``. RigL needs the dense
gradient of the update step's batch, which it reads only through the pruned-gradient hook's tap
(:func:`rl_tickets.sparsity.masks.set_gradient_tap`, before the hook masks it): the callback installs
the tap at the update step, the next gradient step (the first ``train()`` batch at or after it) records
each updated parameter's gradient once, and the update is applied when that ``train()`` returns (the
next rollout start), before any further environment step; the tap is then removed.
"""

from __future__ import annotations

import torch
from stable_baselines3.common.callbacks import BaseCallback

from rl_tickets.level import CurveSink
from rl_tickets.rl.policies import policy_optimizers
from rl_tickets.sparsity.dynamic import DenseGradients, DynamicSchedule, apply_update, summary_row
from rl_tickets.sparsity.masks import set_gradient_tap


class SparseTraining(BaseCallback):
    """Apply a sparse-training schedule's mask updates to ``model.policy`` while SB3 trains.

    :param schedule: the run's schedule (its initial mask is already applied).
    :param sink: receives one summary point per update (W&B), if given.
    """

    def __init__(self, schedule: DynamicSchedule, sink: CurveSink | None = None) -> None:
        super().__init__()
        self.schedule, self.sink = schedule, sink
        self.reader: DenseGradients | None = None
        self.armed_at = -1

    def _on_step(self) -> bool:
        step = self.model.num_timesteps
        if self.reader is not None:
            # A parameter that gets no gradient for a whole period (it never will) grows at random
            # rather than stalling every later update.
            if step - self.armed_at >= self.schedule.every:
                self._apply_rigl(step)
        elif self.schedule.due(step):
            if self.schedule.needs_gradient:
                self.reader, self.armed_at = DenseGradients(self.schedule.updated), step
                set_gradient_tap(self.model.policy, self.reader)
            else:
                self._apply(step)
        return True

    def _on_rollout_start(self) -> None:
        # Right after train(): the armed tap holds the update step's batch gradients once a gradient
        # step of every network has run.
        if self.reader is not None and self.reader.complete:
            self._apply_rigl(self.model.num_timesteps)

    def _on_training_end(self) -> None:
        if self.reader is not None:
            set_gradient_tap(self.model.policy, None)
            self.reader = None

    def _apply_rigl(self, step: int) -> None:
        """Remove the tap and grow by its gradients (zeros where a parameter got none)."""
        assert self.reader is not None
        set_gradient_tap(self.model.policy, None)
        params = dict(self.model.policy.named_parameters())
        grads = {n: self.reader.grads.get(n, torch.zeros_like(params[n])) for n in self.schedule.updated}
        self.reader = None
        self._apply(step, grads)

    def _apply(self, step: int, grads: dict[str, torch.Tensor] | None = None) -> None:
        """Carry one update into the policy and report it."""
        policy = self.model.policy
        rows = apply_update(policy, policy_optimizers(policy), self.schedule, step, grads)
        if rows and self.sink is not None:
            self.sink(summary_row(rows))
