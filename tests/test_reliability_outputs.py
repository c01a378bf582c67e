"""Every command that writes refuses an output location that cannot take its output: a file where its folder
should be, a read-only file system, a full one. Exit 2 with a message naming the flag (or key), no traceback.

Read-only and full are real 64 KiB tmpfs mounts when this machine lets the tests mount (root, or a user
namespace with CAP_SYS_ADMIN): root ignores permission bits, so `chmod` proves nothing. Elsewhere the two
low-level probes (`outputs.probe_write`, `shutil.disk_usage`) are patched to answer as such a mount would.
"""

from __future__ import annotations

import errno
import shutil
import subprocess
from collections import namedtuple
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image

from lightning_dr2 import outputs
from lightning_dr2.cli import build_parser, main
from lightning_dr2.datasets.synthetic import render_face

# Commands that write nothing (`config` prints YAML; `demo` serves a page, its --render-examples is tested).
WRITES_NOTHING = {"config"}


def _mount_tmpfs(folder: Path, options: str) -> bool:
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    return done.returncode == 0


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path | None]]:
    """{"file": a regular file, "readonly": a read-only tmpfs, "full": a filled tmpfs} (the mounts None when this
    machine does not allow mounting: then the tests patch the probes)."""
    root = tmp_path_factory.mktemp("places")
    file = root / "a_file"
    file.write_text("not a folder")
    ro, full = root / "ro", root / "full"
    ro.mkdir()
    full.mkdir()
    mounted = [m for m, options in ((ro, "size=64k,ro"), (full, "size=64k")) if _mount_tmpfs(m, options)]
    try:
        if full in mounted:
            _fill(full / "filler")
        yield {"file": file, "readonly": ro if ro in mounted else None, "full": full if full in mounted else None}
    finally:
        for m in mounted:
            subprocess.run(["umount", str(m)], check=True)


def _fill(path: Path) -> None:
    """Write until the file system is full (ENOSPC); unbuffered, so closing the file writes nothing more."""
    with open(path, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC


@pytest.fixture
def place(
    request: pytest.FixtureRequest, places: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, Path]:
    """(case, where the command's output goes) for the case the test is parametrised with."""
    case = request.param
    if case == "file" or places[case] is not None:
        return case, places[case]
    folder = tmp_path / case  # no mount: a folder whose probes answer as a read-only or full mount would
    folder.mkdir()
    if case == "readonly":
        real_probe = outputs.probe_write

        def probe(where: Path) -> None:
            if Path(where).resolve().is_relative_to(folder.resolve()):
                raise OSError(errno.EROFS, "Read-only file system", str(where))
            real_probe(where)

        monkeypatch.setattr(outputs, "probe_write", probe)
    else:
        usage = namedtuple("usage", "total used free")
        real_usage = shutil.disk_usage

        def disk_usage(where):
            full = Path(where).resolve().is_relative_to(folder.resolve())
            return usage(65536, 65536, 0) if full else real_usage(where)

        monkeypatch.setattr(outputs.shutil, "disk_usage", disk_usage)
    return case, folder


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Plausible inputs for every command (the output check comes first, so they are not even read)."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "faces").mkdir()
    for i in range(2):
        Image.fromarray(render_face(i, 32)).save(root / "faces" / f"f{i}.png")
    torch.save({"global_step": 1}, root / "run.ckpt")
    (root / "eval_run").mkdir()
    (root / "eval_run" / "results.json").write_text('{"results": []}')
    return root


def commands(inputs: Path, folder: Path, file: Path) -> dict[str, tuple[list[str], str]]:
    """Each command's argv writing into `folder` (or the file `file`), and the flag or key its message names."""
    faces = str(inputs / "faces")
    return {
        "train": (["train", "ddpm_tiny", f"runs_dir={folder}"], "runs_dir"),
        "train-enhancer": (["train-enhancer", "enhance_tiny", f"runs_dir={folder}"], "runs_dir"),
        "quickstart": (["quickstart", f"runs_dir={folder}"], "runs_dir"),
        "eval": (["eval", "eval_celeba_test", f"runs_dir={folder}"], "runs_dir"),
        "restore": (["restore", "--input", faces, "--output", str(folder), "unet_weights=random"], "--output"),
        "dr2-cache": (["dr2-cache", "--hq", faces, "--out", str(folder), "unet_weights=random"], "--out"),
        "testset": (["testset", "--hq", faces, "--out", str(folder), "--spec", "tiny_synthetic"], "--out"),
        "synth": (["synth", "--n", "2", "--size", "16", "--out", str(folder)], "--out"),
        "compare": (["compare", str(inputs / "eval_run"), "--out", str(folder)], "--out"),
        "weights": (["weights", "--fetch", "vgg19-dcbb9e9d.pth", "--weights-dir", str(folder)], "--weights-dir"),
        "export": (["export", str(inputs / "run.ckpt"), "--out", str(file)], "--out"),
        "fid-stats": (["fid-stats", faces, "--out", str(file)], "--out"),
        "bench": (["bench", "train", "--out", str(file)], "--out"),
        "demo": (["demo", "--render-examples", str(folder)], "--render-examples"),
    }


def test_every_command_that_writes_is_listed(inputs: Path, tmp_path: Path) -> None:
    parser = build_parser()
    names = set(next(a for a in parser._subparsers._group_actions).choices)  # noqa: SLF001 (argparse has no API)
    assert names - WRITES_NOTHING == set(commands(inputs, tmp_path, tmp_path / "x")), "a command without a case here"


WHAT = {"file": "file", "readonly": "read-only", "full": "no space left"}


@pytest.mark.parametrize("place", ["file", "readonly", "full"], indirect=True)
@pytest.mark.parametrize("command", sorted(commands(Path("i"), Path("o"), Path("f"))))
def test_an_unusable_output_location_is_a_message(command: str, place: tuple[str, Path], inputs: Path, capsys) -> None:
    case, where = place
    # "file": the output folder is that file (folder outputs), or lies under it (file outputs)
    folder = where if case == "file" else where / "out"
    argv, flag = commands(inputs, folder, folder / "out.file")[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and flag in err and WHAT[case] in err, err
