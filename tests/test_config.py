"""Configuration: the Hydra files ship as package data, compose into the typed schema, and validate."""

from __future__ import annotations

from importlib.resources import files

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from rl_tickets.config import Config, ConfigError, register_schemas, validate


def composed(*overrides: str) -> Config:
    """The job config Hydra composes from the packaged conf/ for these overrides."""
    register_schemas()
    with initialize_config_module(config_module="rl_tickets.conf", version_base="1.3"):
        return OmegaConf.to_object(compose(config_name="config", overrides=list(overrides)))  # type: ignore[return-value]


def test_configs_are_package_data() -> None:
    """conf/ is importable as rl_tickets.conf, so a non-editable wheel install finds it."""
    conf = files("rl_tickets.conf")
    assert conf.joinpath("config.yaml").is_file()
    assert conf.joinpath("zoo", "ppo_cartpole.yaml").is_file()


def test_zoo_settings_apply_per_pair_and_overrides_win() -> None:
    """zoo/<algo>_<env>.yaml applies to its pair only; command-line values beat it."""
    cfg = composed("algo=dqn", "env=cartpole", "algo.hyperparams.learning_starts=7")
    assert cfg.algo.hyperparams["learning_starts"] == 7
    assert cfg.algo.hyperparams["train_freq"] == 256 and cfg.train.timesteps == 50_000
    assert composed("algo=ppo", "env=cartpole").env.n_envs == 8
    assert composed("algo=sac", "env=pendulum").algo.hyperparams == {"learning_rate": 1e-3}
    assert composed("algo=a2c", "env=pendulum").algo.hyperparams == {}  # no zoo file: SB3 defaults


@pytest.mark.parametrize(
    "preset", ["yu2020_a2c", "yu2020_ppo", "yu2020_dqn", "gmp_a2c", "gmp_ppo", "gmp_dqn", "lth_lenet_mnist5k"]
)
def test_presets_compose_without_plus_and_validate(preset: str) -> None:
    """experiment=NAME works without '+', and every preset passes validation."""
    cfg = composed(f"experiment={preset}")
    validate(cfg)
    assert cfg.name and "$" not in cfg.name


def test_yu2020_protocol() -> None:
    """Global pruning incl. biases at 20% per level with late rewinding and the reinit control."""
    cfg = composed("experiment=yu2020_a2c", "env=acrobot")
    assert (cfg.algo.name, cfg.env.id, cfg.name) == ("a2c", "Acrobot-v1", "yu2020_a2c_acrobot")
    assert (cfg.prune.scope, cfg.prune.rate, cfg.prune.biases, cfg.controls) == (
        "global",
        0.2,
        True,
        ["reinit"],
    )
    assert cfg.rewind.step > 0 and cfg.algo.hyperparams["ent_coef"] == 0.0  # zoo's a2c_acrobot still applies


def test_validate_names_the_valid_choices() -> None:
    """A bad choice for a plain key is one line listing what is valid."""
    cfg = Config()
    cfg.retrain.mode = "rewinding"
    with pytest.raises(
        ConfigError,
        match=r"retrain.mode='rewinding' is not valid; choose one of: rewind, finetune, lr_rewind",
    ):
        validate(cfg)
