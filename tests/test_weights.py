"""lightning_dr2.weights: registry, lookup order, messages, checksums, listing and fetching.

Fetch tests download from a local ThreadingHTTPServer on 127.0.0.1; any other URL fails the test.
"""

from __future__ import annotations

import functools
import hashlib
import json
import pickle
import string
import threading
import urllib.request
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lightning_dr2.cli import main
from lightning_dr2.weights import (
    WEIGHTS,
    ChecksumError,
    FetchError,
    MissingWeightsError,
    WeightFile,
    default_dest,
    fetch,
    find_weight,
    format_table,
    list_weights,
    lookup,
    registry,
    search_dirs,
    sha256sum,
    verify,
)

LOCAL = "http://127.0.0.1:"


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path) -> None:
    """Isolate every lookup place from the developer's machine and refuse non-local URLs."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("DR2_WEIGHTS", raising=False)
    monkeypatch.setattr(lookup, "PROJECT_ROOT", tmp_path / "repo")
    real_urlopen = urllib.request.urlopen

    def local_only(request, *args, **kwargs):
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        if not url.startswith(LOCAL):
            raise AssertionError(f"test tried to reach {url}")
        return real_urlopen(request, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", local_only)


class _Handler(SimpleHTTPRequestHandler):
    """Serves a folder; `/truncated` promises more bytes than it sends. Counts GETs."""

    requests: list[str] = []

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        if self.path == "/truncated":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def server(tmp_path) -> Iterator[tuple[str, Path]]:
    """(base URL, served folder) of a local HTTP server on a free port."""
    served = tmp_path / "served"
    served.mkdir()
    _Handler.requests = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def register(monkeypatch, name: str, sha256: str | None, urls: tuple[str, ...] = (), **kw) -> WeightFile:
    entry = WeightFile(name=name, role="test", description="a test file", sha256=sha256, urls=urls, **kw)
    monkeypatch.setitem(WEIGHTS, name, entry)
    return entry


def use_registry(monkeypatch, entries: dict[str, WeightFile]) -> None:
    """Replace the registry's contents for one test (every module holds the same dict)."""
    for name in list(WEIGHTS):
        monkeypatch.delitem(WEIGHTS, name)
    for name, entry in entries.items():
        monkeypatch.setitem(WEIGHTS, name, entry)


def put(folder: Path, name: str, data: bytes = b"weights") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return folder / name


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------- registry


def test_registry_sanity():
    names = [w.name for w in registry._REGISTRY]
    assert len(names) == len(set(names)) and list(WEIGHTS) == names
    assert all(key == w.name for key, w in WEIGHTS.items())
    for required in (
        "DR2_FFHQ.pkl",
        "ffhq_10m.pt",
        "ffhq_p2.pt",
        "SPARNetHD_FFHQ_DR2aug.pth",
        "SPARNetHD_V4_Attn2D_net_H-epoch10.pth",
        "pt_inception-2015-12-05-6726825d.pth",
        "inception_FFHQ_512-f7b384ab.pth",
        "resnet18_110.pth",
        "vgg16-397923af.pth",
        "alexnet-owt-7be5be79.pth",
        "vgg19-dcbb9e9d.pth",
        "VQFR_v1-33a1fac5.pth",
        "VQFR_v2.pth",
    ):
        assert required in WEIGHTS
    for w in WEIGHTS.values():
        assert w.role and w.description and w.used_by
        assert w.urls or w.source, f"{w.name}: no way to get it"
        assert all(u.startswith("https://") and u.endswith(w.name) for u in w.urls)
        if w.sha256 is not None:
            assert 8 <= len(w.sha256) <= 64 and set(w.sha256) <= set(string.hexdigits.lower())
            assert f"-{w.sha256}" in w.name, "hash prefixes come from the file names"
    with_urls = {w.name for w in WEIGHTS.values() if w.urls}
    assert with_urls == {
        "pt_inception-2015-12-05-6726825d.pth",
        "vgg16-397923af.pth",
        "alexnet-owt-7be5be79.pth",
        "vgg19-dcbb9e9d.pth",
        "detection_Resnet50_Final.pth",
        "detection_mobilenet0.25_Final.pth",
        "GFPGANv1.3.pth",
        "GFPGANv1.4.pth",
        "RestoreFormer.pth",
        "codeformer.pth",
        "VQFR_v2.pth",
        "GPEN-BFR-512.pth",
    }


# ---------------------------------------------------------------------------------------------- lookup


def test_find_in_env_and_explicit_dir_wins(tmp_path, monkeypatch):
    env, explicit = tmp_path / "env", tmp_path / "explicit"
    put(env, "DR2_FFHQ.pkl")
    monkeypatch.setenv("DR2_WEIGHTS", str(env))
    assert find_weight("DR2_FFHQ.pkl") == env / "DR2_FFHQ.pkl"
    put(explicit, "DR2_FFHQ.pkl")
    assert find_weight("DR2_FFHQ.pkl", weights_dir=explicit) == explicit / "DR2_FFHQ.pkl"
    assert search_dirs(explicit)[:2] == [explicit, env]


def test_search_order_cwd_then_project_then_hub(tmp_path):
    cwd_dir, project_dir = tmp_path / "data" / "weights", tmp_path / "repo" / "data" / "weights"
    hub = tmp_path / "torch_home" / "hub" / "checkpoints"
    for folder in (cwd_dir, project_dir, hub):
        put(folder, "vgg16-397923af.pth")
    assert find_weight("vgg16-397923af.pth").resolve() == (cwd_dir / "vgg16-397923af.pth").resolve()
    (cwd_dir / "vgg16-397923af.pth").unlink()
    assert find_weight("vgg16-397923af.pth") == project_dir / "vgg16-397923af.pth"
    (project_dir / "vgg16-397923af.pth").unlink()
    assert find_weight("vgg16-397923af.pth") == hub / "vgg16-397923af.pth"
    # The torch hub cache is only searched for files torch.hub itself puts there.
    put(hub, "DR2_FFHQ.pkl")
    assert hub not in search_dirs(name="DR2_FFHQ.pkl") and hub in search_dirs(name="vgg16-397923af.pth")
    with pytest.raises(MissingWeightsError):
        find_weight("DR2_FFHQ.pkl")


def test_alias_is_found(tmp_path):
    path = put(tmp_path / "data" / "weights", "inception_FFHQ_512.pth")
    assert find_weight("inception_FFHQ_512-f7b384ab.pth").resolve() == path.resolve()


def test_missing_message_with_url(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        find_weight("vgg16-397923af.pth", weights_dir=tmp_path / "mine")
    err = info.value
    assert isinstance(err, MissingWeightsError) and err.name == "vgg16-397923af.pth"
    message = str(err)
    assert "vgg16-397923af.pth" in message and "LPIPS backbone" in message
    for folder in (tmp_path / "mine", tmp_path / "data" / "weights", tmp_path / "repo" / "data" / "weights"):
        assert str(folder) in message
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints") in message
    assert "python -m lightning_dr2 weights --fetch vgg16-397923af.pth" in message
    assert pickle.loads(pickle.dumps(err)).args == err.args  # survives multiprocessing / DDP workers


def test_missing_message_manual_and_unknown():
    message = str(pytest.raises(MissingWeightsError, find_weight, "DR2_FFHQ.pkl").value)
    assert "DR2_FFHQ.pkl" in message and "diffusion UNet" in message
    assert "--fetch" not in message and "github.com/Kaldwin0106/DR2_Drgradation_Remover" in message
    assert "data/weights/" in message and "$DR2_WEIGHTS" in message
    message = str(pytest.raises(MissingWeightsError, find_weight, "mystery.pth").value)
    assert "mystery.pth" in message and "not a known weight file" in message


# ---------------------------------------------------------------------------------------------- checksums


def test_sha256sum_and_verify(tmp_path):
    data = bytes(range(256)) * 5000  # > 1 MiB: more than one chunk
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    full = digest(data)
    assert sha256sum(path) == full
    assert verify(path, full) and verify(path, full[:8]) and verify(path, full[:8].upper())
    assert not verify(path, "0" * 8 if not full.startswith("0" * 8) else "1" * 8)
    for bad in ("abc", "not-hex!", "g" * 8, "0" * 65):
        with pytest.raises(ValueError):
            verify(path, bad)


# ---------------------------------------------------------------------------------------------- listing


def test_list_weights_statuses(tmp_path, monkeypatch):
    folder = tmp_path / "data" / "weights"
    good = put(folder, "good.pth", b"good")
    put(folder, "bad.pth", b"bad")
    put(folder, "unhashed.pth", b"?")
    use_registry(
        monkeypatch,
        {
            "good.pth": WeightFile("good.pth", "test", "d", sha256=digest(b"good")[:10], used_by="t"),
            "bad.pth": WeightFile("bad.pth", "test", "d", sha256=digest(b"other")[:10], used_by="t"),
            "unhashed.pth": WeightFile("unhashed.pth", "test", "d", used_by="t"),
            "absent.pth": WeightFile("absent.pth", "test", "d", urls=("https://example.invalid/absent.pth",)),
            "manual.pth": WeightFile("manual.pth", "test", "d", source="ask the authors"),
        },
    )
    rows = {r["name"]: r for r in list_weights()}
    assert rows["good.pth"]["present"] and rows["good.pth"]["checksum_ok"] is True
    assert Path(rows["good.pth"]["path"]).resolve() == good.resolve()
    assert rows["good.pth"]["sha256"] == digest(b"good") and rows["good.pth"]["size_bytes"] == 4
    assert rows["bad.pth"]["checksum_ok"] is False
    assert rows["unhashed.pth"]["present"] and rows["unhashed.pth"]["checksum_ok"] is None
    assert not rows["absent.pth"]["present"] and rows["absent.pth"]["path"] is None
    assert rows["absent.pth"]["checksum_ok"] is None and rows["absent.pth"]["sha256"] is None
    json.dumps(list(rows.values()))  # JSON-ready

    table = format_table(list(rows.values()))
    assert "ok (sha256 verified)" in table and "BAD CHECKSUM" in table and "missing" in table
    assert "weights --fetch absent.pth" in table and "ask the authors" in table and "--fetch-all" in table


def test_weights_command_lists_json(capsys):
    assert main(["weights", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == set(WEIGHTS) and not any(r["present"] for r in rows)
    assert main(["weights"]) == 0
    assert "DR2_FFHQ.pkl" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- fetching


def test_fetch_success_then_skip(server, tmp_path, monkeypatch):
    base, served = server
    data = b"tiny weights" * 1000
    put(served, "tiny.pth", data)
    register(monkeypatch, "tiny.pth", digest(data)[:12], urls=(f"{base}/tiny.pth",))
    dest = tmp_path / "dest"
    assert fetch(["tiny.pth"], dest=dest, progress=False) == [dest / "tiny.pth"]
    assert (dest / "tiny.pth").read_bytes() == data and not (dest / "tiny.pth.part").exists()
    assert find_weight("tiny.pth", dest) == dest / "tiny.pth"
    assert fetch(["tiny.pth"], dest=dest, progress=False) == [dest / "tiny.pth"]
    assert _Handler.requests == ["/tiny.pth"], "a present file with a good checksum is not downloaded again"


def test_fetch_default_dest_is_env(server, tmp_path, monkeypatch):
    base, served = server
    put(served, "tiny.pth", b"abc")
    register(monkeypatch, "tiny.pth", digest(b"abc"), urls=(f"{base}/tiny.pth",))
    monkeypatch.setenv("DR2_WEIGHTS", str(tmp_path / "env"))
    assert fetch(["tiny.pth"], progress=False) == [tmp_path / "env" / "tiny.pth"]
    monkeypatch.delenv("DR2_WEIGHTS")
    assert default_dest() == tmp_path / "repo" / "data" / "weights"


def test_fetch_bad_checksum_leaves_nothing(server, tmp_path, monkeypatch):
    base, served = server
    put(served, "tiny.pth", b"tampered")
    expected = digest(b"genuine")
    register(monkeypatch, "tiny.pth", expected, urls=(f"{base}/tiny.pth",))
    dest = tmp_path / "dest"
    with pytest.raises(ChecksumError) as info:
        fetch(["tiny.pth"], dest=dest, progress=False)
    message = str(info.value)
    assert expected in message and digest(b"tampered") in message and f"{base}/tiny.pth" in message
    assert list(dest.iterdir()) == []


def test_fetch_replaces_present_file_with_bad_checksum(server, tmp_path, monkeypatch):
    base, served = server
    put(served, "tiny.pth", b"genuine")
    register(monkeypatch, "tiny.pth", digest(b"genuine")[:8], urls=(f"{base}/tiny.pth",))
    dest = tmp_path / "dest"
    put(dest, "tiny.pth", b"trunc")
    assert fetch(["tiny.pth"], dest=dest, progress=False) == [dest / "tiny.pth"]
    assert (dest / "tiny.pth").read_bytes() == b"genuine"


def test_fetch_404_and_truncated(server, tmp_path, monkeypatch):
    base, _ = server
    register(monkeypatch, "gone.pth", "0" * 8, urls=(f"{base}/gone.pth",))
    dest = tmp_path / "dest"
    with pytest.raises(FetchError, match="404") as info:
        fetch(["gone.pth"], dest=dest, progress=False)
    assert f"{base}/gone.pth" in str(info.value) and not isinstance(info.value, ChecksumError)
    assert list(dest.iterdir()) == []
    with pytest.raises(FetchError):
        fetch(["gone.pth"], dest=dest, urls={"gone.pth": f"{base}/truncated"}, progress=False)
    assert list(dest.iterdir()) == []


def test_fetch_without_url_explains_manual_source(tmp_path):
    with pytest.raises(FetchError) as info:
        fetch(["DR2_FFHQ.pkl"], dest=tmp_path / "dest", progress=False)
    assert "no direct download URL" in str(info.value) and "Kaldwin0106" in str(info.value)
    with pytest.raises(FetchError, match="not a known weight file"):
        fetch(["mystery.pth"], dest=tmp_path / "dest", progress=False)


def test_fetch_url_override_for_unregistered_file(server, tmp_path):
    base, served = server
    put(served, "extra.pth", b"extra")
    paths = fetch(["extra.pth"], dest=tmp_path / "dest", urls={"extra.pth": f"{base}/extra.pth"}, progress=False)
    assert paths == [tmp_path / "dest" / "extra.pth"] and paths[0].read_bytes() == b"extra"


def test_weights_command_fetch_all(server, tmp_path, monkeypatch, capsys):
    base, served = server
    put(served, "a.pth", b"aaa")
    use_registry(
        monkeypatch,
        {
            "a.pth": WeightFile("a.pth", "test", "d", sha256=digest(b"aaa"), urls=(f"{base}/a.pth",)),
            "manual.pth": WeightFile("manual.pth", "test", "d", source="ask the authors"),
        },
    )
    dest = tmp_path / "dest"
    assert main(["weights", "--fetch-all", "--weights-dir", str(dest)]) == 0
    out = capsys.readouterr().out
    assert (dest / "a.pth").read_bytes() == b"aaa"
    assert "a.pth: downloaded to" in out and "manual.pth" in out and "ask the authors" in out
    # A failing fetch makes the command fail, and says why.
    assert main(["weights", "--fetch", "manual.pth", "--weights-dir", str(dest), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["results"][0]["ok"] is False and "ask the authors" in result["results"][0]["error"]
