"""Issue 15: every setting takes effect or is an error, messages that say what is wrong, runs that never share
a directory, and history kept when a run starts over. Fast: configs, messages and small units; the jobs and
the output locations of every command are in test_reliability_jobs.py and test_reliability_outputs.py."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import TINY_ENHANCER_RUN, TINY_UNET_FLAGS, tiny_unet
from omegaconf import OmegaConf
from PIL import Image

from lightning_dr2.cli import build_parser, main
from lightning_dr2.config.loader import ConfigError, open_run_dir
from lightning_dr2.config.pipeline import CacheConfig, RestoreConfig
from lightning_dr2.config.recipes import load_config, schema_for
from lightning_dr2.datasets import FaceDataModule
from lightning_dr2.datasets.synthetic import render_face
from lightning_dr2.jobs.evaluate import default_method
from lightning_dr2.jobs.training_run import resolve_resume
from lightning_dr2.modules.guards import NonFiniteTrainingError
from lightning_dr2.outputs import OutputError, claim_output, is_first_process, unique_run_name

# -------------------------------------------------------------------------- every override takes effect


def test_experiment_override_names_the_eval_run_directory(tmp_path: Path) -> None:
    cfg = load_config("eval_celeba_test", ["experiment=foo", f"runs_dir={tmp_path}", "run=r"])
    assert cfg.experiment == "foo"
    assert open_run_dir(cfg) == tmp_path / "foo" / "r"
    assert load_config("eval_celeba_test").experiment == "eval_celeba_test"  # no override: the recipe's name


@pytest.mark.parametrize(
    ("experiment", "schema", "override", "expected"),
    [
        (None, RestoreConfig, "input=/data/faces", "input is given by --input"),
        (None, RestoreConfig, "output=/data/out", "output is given by --output"),
        (None, CacheConfig, "out=/data/cache", "out is given by --out"),
        (None, CacheConfig, "dr2.N=4", "dr2.N is not used by dr2-cache"),
        ("dr2_cache", None, "dr2={N: 4, tau: 22}", "dr2.N is not used by dr2-cache"),
        ("eval_celeba_test", None, "dr2.tau=22", "dr2.tau is not used by eval"),
    ],
)
def test_an_override_the_job_would_ignore_is_an_error(experiment, schema, override, expected) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(experiment, [override], schema=schema)


def test_sweep_and_settings_together_is_an_error() -> None:
    with pytest.raises(ConfigError, match="replaces the settings list"):
        load_config("eval_celeba_test", ["sweep.N=[4,8]", "sweep.tau=[22]", "settings=[{N: 8, tau: 35}]"])


def test_cli_flags_and_their_override_twins_clash_with_a_message(tmp_path: Path, capsys) -> None:
    argv = ["restore", "--input", str(tmp_path), "--output", str(tmp_path / "o"), f"output={tmp_path / 'x'}"]
    assert main(argv) == 2
    assert "output is given by --output" in capsys.readouterr().err


# ---------------------------------------------------------------------------- repeats are errors


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["settings=[{N: 8, tau: 35},{N: 4, tau: 22},{N: 8, tau: 35}]"], r"settings\[2\].*repeats settings\[0\]"),
        # omega resolved: the official omega of (8, 35) written out is the same setting
        (["settings=[{N: 8, tau: 35},{N: 8, tau: 35, omega: 60}]"], r"settings\[1\].*repeats settings\[0\]"),
        (["sweep.N=[4,8,4]", "sweep.tau=[22]"], r"sweep.N=\[4, 8, 4\] repeats \[4\]"),
        (["sweep.N=[4]", "sweep.tau=[22,22]"], r"sweep.tau=\[22, 22\] repeats \[22\]"),
    ],
)
def test_repeated_settings_or_sweep_values_are_errors(overrides, expected) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config("eval_celeba_test", overrides)


def test_repeated_training_evaluator_settings_are_errors() -> None:
    overrides = [
        "evaluator.enabled=true",
        "evaluator.sets=[{name: t, root: x}]",
        "evaluator.settings=[{N: 4, tau: 22},{N: 4, tau: 22}]",
    ]
    with pytest.raises(ConfigError, match=r"evaluator.settings\[1\].*repeats"):
        load_config("ddpm_tiny", overrides)


# ------------------------------------------------------------------------------ messages that mislead


def test_a_scalar_for_a_list_key_says_it_takes_a_list() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("eval_celeba_test", ["sweep.N=4"])
    assert "sweep.N takes a list, e.g. sweep.N=[4]" in str(err.value).replace("'sweep.N': ", "sweep.N ")
    assert "AnyNode" not in str(err.value)


def test_overrides_may_follow_flags() -> None:
    args = build_parser().parse_args(["eval", "eval_celeba_test", "--reference", "run=x", "devices=1"])
    assert args.reference and args.overrides == ["run=x", "devices=1"]
    args = build_parser().parse_args(["restore", "dr2.N=4", "--input", "a", "dr2.tau=22", "--output", "b"])
    assert (args.input, args.output, args.overrides) == ("a", "b", ["dr2.N=4", "dr2.tau=22"])


def test_the_reference_row_without_dr2_settings_is_the_input_not_dr2() -> None:
    assert default_method(load_config("eval_celeba_test", ["settings=[]", "reference=true"])) == "Input"
    assert default_method(load_config("eval_celeba_test", ["enhancer.name=none"])) == "DR2"


def test_a_data_root_that_is_a_file_says_so(tmp_path: Path) -> None:
    file = tmp_path / "faces.png"
    Image.fromarray(render_face(0, 16)).save(file)
    with pytest.raises(NotADirectoryError, match=r"data.root=.*faces.png is a file, not a folder"):
        FaceDataModule(str(file), 16, batch_size=1).setup()


def test_dr2_cache_errors_name_its_own_flag(tmp_path: Path, capsys) -> None:
    (tmp_path / "hq").mkdir()
    (tmp_path / "taken").write_text("a file")
    assert main(["dr2-cache", "--hq", str(tmp_path / "hq"), "--out", str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "--output" not in err and "Traceback" not in err


def test_the_enhancer_guard_names_the_enhancer_learning_rates() -> None:
    from lightning_dr2.jobs.train_enhancer import build_module

    cfg = load_config(
        "enhance_tiny", [*TINY_ENHANCER_RUN, "trainer.max_bad_steps=1"], schema=schema_for("enhance_tiny")
    )
    module = build_module(cfg, None)
    for guard in (module.nonfinite_guard, module.d_nonfinite_guard):
        with pytest.raises(NonFiniteTrainingError) as err:
            guard.admit(torch.tensor(float("nan")), [], step=3)
        assert "optim.lr_g" in str(err.value) and "optim.lr_d" in str(err.value)
        assert "warmup_steps" not in str(err.value) and "grad_clip" not in str(err.value)


# --------------------------------------------------------------------- resume: torn files, restarts


def _ckpt(path: Path, step: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step, "state_dict": {"w": torch.zeros(1000)}}, path)
    return path


def test_resume_from_a_truncated_checkpoint_is_a_message(tmp_path: Path, capsys) -> None:
    good = _ckpt(tmp_path / "good.ckpt", 5)
    torn = tmp_path / "torn.ckpt"
    torn.write_bytes(good.read_bytes()[:1500])
    argv = ["train", "ddpm_tiny", f"runs_dir={tmp_path / 'runs'}", "run=r", f"resume={torn}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"resume={torn} does not load as a training checkpoint" in err and "Traceback" not in err


def test_all_checkpoints_torn_starts_from_scratch_says_so_and_keeps_the_metrics(tmp_path: Path, caplog) -> None:
    run = tmp_path / "runs" / "exp" / "r"
    for name in ("last.ckpt", "step0000010.ckpt"):
        (run / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run / "checkpoints" / name).write_bytes(b"PK\x03\x04 torn")
    (run / "csv").mkdir()
    history = "epoch,step,train/loss\n0,4,0.9\n0,9,0.8\n"
    (run / "csv" / "metrics.csv").write_text(history)
    assert resolve_resume(OmegaConf.create({"resume": "auto"}), run) is None
    assert "starting from scratch at step 0" in caplog.text
    kept = list((run / "csv").glob("metrics.before-*.csv"))
    assert len(kept) == 1 and kept[0].read_text() == history and not (run / "csv" / "metrics.csv").exists()
    assert str(kept[0]) in caplog.text


# ----------------------------------------------------------------------- one job per output at a time


def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path: Path) -> None:
    names = {unique_run_name(tmp_path, "20260101-120000") for _ in range(3)}
    assert names == {"20260101-120000", "20260101-120000-2", "20260101-120000-3"}


def test_only_rank_zero_claims(monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_first_process()
    for name, value in (("LOCAL_RANK", "1"), ("RANK", "3"), ("SLURM_PROCID", "2")):
        with monkeypatch.context() as m:
            m.setenv(name, value)
            assert not is_first_process()
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert is_first_process()


HOLD = textwrap.dedent(
    """
    import sys
    from lightning_dr2.outputs import claim_output
    claim_output(sys.argv[1], "--output")
    print("held", flush=True)
    sys.stdin.readline()
    """
)


@pytest.fixture
def held_by_another_process(tmp_path: Path):
    """A folder claimed by another process (until the test ends)."""
    folder = tmp_path / "busy"
    folder.mkdir()
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=root
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        yield folder, proc.pid
    finally:
        proc.communicate("\n", timeout=60)


def test_a_second_process_on_the_same_output_is_refused(held_by_another_process, tmp_path: Path, capsys) -> None:
    folder, pid = held_by_another_process
    with pytest.raises(OutputError, match=rf"(?s)--output {folder} is in use by another job \(pid {pid} on"):
        claim_output(folder, "--output")
    faces = tmp_path / "faces"
    faces.mkdir()
    Image.fromarray(render_face(0, 32)).save(faces / "a.png")
    assert main(["restore", "--input", str(faces), "--output", str(folder), "unet_weights=random"]) == 2
    err = capsys.readouterr().err
    assert f"pid {pid}" in err and "Traceback" not in err


def test_a_second_training_process_on_the_same_run_is_refused(held_by_another_process, capsys) -> None:
    folder, pid = held_by_another_process  # <runs_dir>/<experiment>/<run> = busy/../busy
    argv = ["train", "ddpm_tiny", f"runs_dir={folder.parent.parent}", f"experiment={folder.parent.name}", "run=busy"]
    assert main(argv) == 2
    assert f"run {folder} is in use by another job (pid {pid}" in capsys.readouterr().err


def test_claims_are_reentrant_in_one_process(tmp_path: Path) -> None:
    assert claim_output(tmp_path, "--out") == claim_output(tmp_path, "--out") == tmp_path


# --------------------------------------------------------------------------------- unit checks


def test_unet_sidecar_size_is_what_the_enhancer_recipe_checks(tmp_path: Path) -> None:
    from lightning_dr2.jobs.train_enhancer import dr2_unet_size

    torch.save(tiny_unet(0).state_dict(), tmp_path / "u.pt")
    (tmp_path / "u.json").write_text(json.dumps(TINY_UNET_FLAGS))
    schema = schema_for("enhance_tiny")
    assert dr2_unet_size(load_config("enhance_tiny", schema=schema)) == 32  # dr2.net of the recipe
    assert dr2_unet_size(load_config("enhance_tiny", [f"dr2.unet_weights={tmp_path / 'u.pt'}"], schema=schema)) == 64
