"""The suite's own guards (tests/conftest.py): no network, no developer weights, fixtures required by `make test`."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import conftest
import pytest

from lightning_dr2.weights import search_dirs


@pytest.mark.parametrize("address", [("203.0.113.7", 80), ("example.org", 443), ("2001:db8::1", 443)])
def test_network_access_fails(address) -> None:
    with pytest.raises(AssertionError, match="tried to reach the network"):
        socket.create_connection(address, timeout=0.1)
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock, pytest.raises(AssertionError, match="network"):
        sock.connect(address)


def test_loopback_still_works() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5):
            conn, _ = server.accept()
            conn.close()


def test_weight_lookup_sees_only_the_tests_tmp_folder(tmp_path: Path) -> None:
    assert Path.cwd() == tmp_path
    assert Path(os.environ["TORCH_HOME"]).is_relative_to(tmp_path)
    for folder in search_dirs(name="pt_inception-2015-12-05-6726825d.pth"):
        resolved = folder if folder.is_absolute() else Path.cwd() / folder
        assert resolved.is_relative_to(tmp_path), f"weights lookup reaches {folder} outside the test's tmp folder"


def test_wandb_never_goes_online_in_tests() -> None:
    assert os.environ["WANDB_MODE"] == "offline" and "WANDB_API_KEY" not in os.environ


def test_missing_fixtures_skip_or_fail(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(conftest, "FIXTURES", tmp_path / "no_fixtures")
    monkeypatch.delenv(conftest.REQUIRE_FIXTURES_VAR, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no_fixtures"):
        conftest.fixture_path("dr2_remover_tiny.pt")
    conftest.pytest_configure(None)  # without the flag: no error, the tests skip with their reason
    monkeypatch.setenv(conftest.REQUIRE_FIXTURES_VAR, "1")
    with pytest.raises(pytest.fail.Exception, match="no_fixtures"):
        conftest.fixture_path("dr2_remover_tiny.pt")
    with pytest.raises(pytest.UsageError, match="no_fixtures"):
        conftest.pytest_configure(None)


def test_make_test_requires_the_fixtures() -> None:
    makefile = (conftest.ROOT / "Makefile").read_text()
    recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert f"{conftest.REQUIRE_FIXTURES_VAR}=1" in recipe and "pytest" in recipe
