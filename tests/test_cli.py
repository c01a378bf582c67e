"""The command line: help lists every job, user errors end with a message and exit code 2, not a traceback."""

from __future__ import annotations

import pytest
from conftest import TINY_ENHANCER_RUN

from lightning_dr2.cli import build_parser, main


def test_every_command_is_listed() -> None:
    text = build_parser().format_help()
    commands = ("train", "train-enhancer", "quickstart", "restore", "weights", "eval", "testset", "fid-stats")
    for command in (*commands, "compare", "bench"):
        assert command in text


def test_config_error_is_a_message(capsys) -> None:
    assert main(["config", "ddpm_tiny", "trainer.max_stepz=1"]) == 2
    err = capsys.readouterr().err
    assert "trainer.max_stepz" in err and "Traceback" not in err


def test_restore_missing_input_folder(tmp_path, capsys) -> None:
    code = main(
        ["restore", "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "out"), "unet_weights=random"]
    )
    assert code == 2 and "nope" in capsys.readouterr().err


def test_config_prints_resolved_yaml(capsys) -> None:
    assert main(["config", "ddpm_tiny", "optim.lr=0.5"]) == 0
    assert "lr: 0.5" in capsys.readouterr().out


def test_unknown_command_exits() -> None:
    with pytest.raises(SystemExit):
        main(["nope"])


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "ddpm_tiny", "optim.betas=[0.9]"], "optim.betas=[0.9] must be two values in [0, 1)"),
        (["train", "ddpm_tiny", "trainer.max_steps=-5"], "trainer.max_steps=-5 must be >= 1"),
        (["train", "ddpm_tiny", "checkpoint.save_top_k=2"], "checkpoint.save_top_k=2 must be one of [-1, 0, 1]"),
        (["train", "ddpm_tiny", "data.batch_size=-1"], "data.batch_size=-1 must be >= 1"),
        (["train", "ddpm_tiny", "data.num_workers=-2"], "data.num_workers=-2 must be >= 0"),
        (["train", "ddpm_tiny", "data.synthetic_n=0"], "data.synthetic_n=0 must be >= 1: data.synthetic=true"),
        (["train", "ddpm_tiny", "optim.betas=[0.9,"], "override 'optim.betas=[0.9,' is not valid YAML"),
        (["restore", "--input", "in", "--output", "out", "enhancer.size=-5"], "enhancer.size=-5 must be >= 1"),
        (["restore", "--input", "in", "--output", "out", "dr2.sampler=ddim", "dr2.eta=-3"], "dr2.eta=-3.0 must be in"),
        (["restore", "--input", "in", "--output", "out", "dr2.N=0"], "dr2.N=0 must be a positive integer"),
        (["restore", "--input", "in", "--output", "out", "dr2.tau=99"], "dr2.tau=99 must be an integer in [0, 98]"),
        (["restore", "--input", "in", "--output", "out", "dr2.omega=100"], "dr2.omega=100 is beyond the respaced"),
        (["eval", "eval_celeba_test", "settings=[{N: 8, tau: 40, omega: 30}]"], "settings[0].omega=30 must be greater"),
        (["eval", "eval_celeba_test", "enhancer.size=-5"], "enhancer.size=-5 must be >= 1"),
    ],
)
def test_bad_values_are_messages_naming_the_key(argv: list[str], expected: str, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "key"),
    [
        (["train", "ddpm_tiny", "trainer.accelerator=gpu"], "trainer.accelerator"),
        (["restore", "--input", "in", "--output", "out", "accelerator=gpu"], "accelerator"),
        (["eval", "eval_celeba_test", "accelerator=cuda"], "accelerator"),
    ],
)
def test_gpu_accelerator_without_cuda_is_a_message(argv: list[str], key: str, monkeypatch, capsys) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{key}='" in err and "none is visible on this machine" in err
    assert f"use {key}=cpu or {key}=auto" in err and "Traceback" not in err


# TINY_ENHANCER_RUN for 2 iterations, DR2 settings of 2-3 UNet calls: the whole job in seconds.
TINY_ENHANCER_CLI_RUN = [
    *TINY_ENHANCER_RUN,
    "data.synthetic_n=6",
    "dr2.settings=[{N: 4, tau: 2, omega: 3}]",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "checkpoint.every_n_steps=2",
]


def test_train_enhancer_end_to_end_exports_the_ema_generator(tmp_path, capsys) -> None:
    argv = ["train-enhancer", "enhance_tiny", *TINY_ENHANCER_CLI_RUN, f"data.hq_root={tmp_path / 'faces'}"]
    assert main([*argv, f"runs_dir={tmp_path / 'runs'}", "run=cli"]) == 0
    export = tmp_path / "runs" / "enhance_tiny" / "cli" / "export" / "enhancer_ema.pt"
    assert export.is_file() and export.with_suffix(".json").is_file()
    assert f"enhancer.weights={export}" in capsys.readouterr().out  # the line to paste into restore/eval


def test_train_enhancer_bad_override_is_a_message(tmp_path, capsys) -> None:
    assert main(["train-enhancer", "enhance_tiny", "generator.optionz.size=32", f"runs_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "generator.optionz" in err and "Traceback" not in err
    assert not (tmp_path / "enhance_tiny").exists()  # refused before a run directory was made
