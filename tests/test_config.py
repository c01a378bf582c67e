"""Config schema, experiment YAMLs and override errors."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from lightning_dr2.config.loader import EXPERIMENTS_DIR, ConfigError, flat_dict, resolve_run_name
from lightning_dr2.config.recipes import load_config, schema_for
from lightning_dr2.nets.unet import UNet

EXPERIMENTS = sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))


def test_experiments_exist() -> None:
    assert {"ddpm_ffhq256", "ddpm_tiny", "quickstart"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_loads_and_builds(name: str) -> None:
    cfg = load_config(name, schema=schema_for(name))
    assert cfg.experiment == name
    # Build the configured network itself (on the meta device: no memory, no init): every recipe must construct.
    with torch.device("meta"):
        net = UNet.from_flags(OmegaConf.to_container(cfg.dr2.net if name.startswith("enhance") else cfg.net))
    assert sum(p.numel() for p in net.parameters()) > 0


def test_ffhq_recipe_has_the_dr2_flags() -> None:
    cfg = load_config("ddpm_ffhq256")
    assert cfg.net.image_size == 256 and cfg.net.num_channels == 128 and cfg.net.learn_sigma
    assert cfg.optim.lr == pytest.approx(1e-4) and cfg.ema.decay == pytest.approx(0.9999)


def test_overrides_are_typed() -> None:
    cfg = load_config("ddpm_tiny", ["trainer.max_steps=7", "optim.lr=0.5", "data.root=/tmp/x", "trainer.devices=2"])
    assert cfg.trainer.max_steps == 7 and cfg.optim.lr == 0.5 and cfg.data.root == "/tmp/x"
    assert cfg.trainer.devices == 2


def test_unknown_override_key_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"trainer\.max_stepz"):
        load_config("ddpm_tiny", ["trainer.max_stepz=3"])


def test_wrong_type_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"trainer\.max_steps"):
        load_config("ddpm_tiny", ["trainer.max_steps=lots"])


def test_override_without_equals_sign() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        load_config("ddpm_tiny", ["trainer.max_steps"])


def test_unknown_key_in_yaml_names_file_and_key(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("net:\n  num_chanels: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*net\.num_chanels"):
        load_config(bad)


def test_unknown_experiment_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match="ddpm_tiny"):
        load_config("no_such_experiment")


def test_run_name_chosen_once(monkeypatch) -> None:
    monkeypatch.delenv("DR2_RUN", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    cfg = load_config("ddpm_tiny")
    assert resolve_run_name(cfg) == "4242"
    monkeypatch.delenv("SLURM_JOB_ID")
    # The exported name wins for DDP children that re-run the command.
    assert resolve_run_name(load_config("ddpm_tiny")) == "4242"


def test_flat_dict_uses_dotted_keys() -> None:
    flat = flat_dict(load_config("ddpm_tiny"))
    assert flat["net.num_channels"] == 32 and "trainer.max_steps" in flat


def test_every_value_check_passes_the_defaults_of_each_schema() -> None:
    from lightning_dr2.config.ddpm import DDPMConfig
    from lightning_dr2.config.enhancer import EnhanceExperimentConfig
    from lightning_dr2.config.loader import validate
    from lightning_dr2.config.pipeline import CacheConfig, EvalConfig, RestoreConfig

    for schema in (DDPMConfig, EnhanceExperimentConfig, RestoreConfig, EvalConfig, CacheConfig):
        validate(OmegaConf.structured(schema), "defaults")


def test_value_errors_name_the_source_file() -> None:
    with pytest.raises(ConfigError, match=r"optim\.lr=-1\.0 must be > 0 .*ddpm_tiny\.yaml"):
        load_config("ddpm_tiny", ["optim.lr=-1"])


def test_synthetic_data_is_an_explicit_flag() -> None:
    assert load_config("ddpm_tiny").data.synthetic and load_config("quickstart").data.synthetic
    assert not load_config("ddpm_ffhq256").data.synthetic
    with pytest.raises(ConfigError, match=r"data\.synthetic_n=0 .*data\.synthetic=true"):
        load_config("ddpm_tiny", ["data.synthetic_n=0"])


def test_dr2_ranges_are_checked_when_the_sampler_is_built() -> None:
    from lightning_dr2.dr2 import DR2
    from lightning_dr2.dr2.pipeline import DR2E
    from lightning_dr2.dr2.remover import SettingError
    from lightning_dr2.nets.unet import UNet

    unet = UNet.from_flags(
        {"image_size": 16, "num_channels": 32, "channel_mult": "1,2", "attention_resolutions": "8",
         "num_head_channels": 8, "learn_sigma": True}
    )  # fmt: skip
    with pytest.raises(SettingError, match=r"eta=-3\.0 must be in \[0, 1\]"):
        DR2(unet, sampler="ddim", eta=-3.0)
    with pytest.raises(SettingError, match=r"eta=1\.5"):
        DR2(unet, sampler="ddim", eta=1.5)
    with pytest.raises(SettingError, match="sampler='plms'"):
        DR2(unet, sampler="plms")
    with pytest.raises(SettingError, match="enhancer_size=-5"):
        DR2E(unet, None, N=2, tau=5, enhancer_size=-5)
    with pytest.raises(SettingError, match=r"tau=99 must be an integer in \[0, 98\]"):
        DR2E(unet, None, N=2, tau=99, enhancer_size=16)


def test_wandb_sweep_file_drives_keys_eval_accepts() -> None:
    """Every value the W&B sweep would pass (`key=value`, its ${args_no_hyphens}) loads as an eval override."""
    import itertools

    import yaml

    from lightning_dr2.config.pipeline import EvalConfig

    sweep = yaml.safe_load((EXPERIMENTS_DIR / "sweeps" / "n_tau.yaml").read_text())
    assert sweep["command"][3:6] == ["lightning_dr2", "eval", "eval_celeba_test"]
    params = sweep["parameters"]
    for values in itertools.product(*(p["values"] for p in params.values())):
        overrides = [f"{key}={value}" for key, value in zip(params, values, strict=True)]
        cfg = load_config("eval_celeba_test", overrides, schema=EvalConfig)
        assert len(cfg.settings) == 1 and cfg.settings[0].omega is None
