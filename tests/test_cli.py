"""The command line: help lists every job, user errors end with a message and exit code 2, not a traceback."""

from __future__ import annotations

import pytest

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
