"""Shared test helpers and the suite-wide guards.

- Reference fixtures live in `../shared/fixtures`. Without them their tests skip with the reason, except
  when `$DR2_REQUIRE_FIXTURES=1` (set by `make test`, hence CI): then a missing folder or file is an error.
- Every test runs isolated from the developer's machine: working directory, `$DR2_WEIGHTS`, `TORCH_HOME`
  and the project-root `data/weights` all point into the test's tmp folder (tests marked `weights` keep
  the real lookup: they exist to find the real files), and the environment is restored after each test (a
  session-end check asserts it). W&B is forced offline.
- No test reaches the network: sockets may connect to loopback only.
- Tiny networks for pipeline tests come from seeded random weights (`seeded_random_`), not from fixtures.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Set before torch loads its OpenMP runtime (which reads it once): threads without work sleep instead of
# spinning. Spinning threads compete with everything else on the cores; on a 2-core machine shared with other
# jobs a tiny UNet forward took 7-15 s spinning against 0.1-0.2 s passive (load 10-18). Subprocesses the tests
# start (DDP ranks, the ISA variants) inherit it. A value the developer set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
REQUIRE_FIXTURES_VAR = "DR2_REQUIRE_FIXTURES"
PYTEST_OWN = "PYTEST_CURRENT_TEST"  # pytest's own per-phase variable

# A 64 px learned-sigma ADM UNet small enough for CPU DR2 loops (same shape family as the fixtures').
TINY_UNET_FLAGS = {
    "image_size": 64,
    "num_channels": 32,
    "num_res_blocks": 1,
    "channel_mult": "1,2,2,2",
    "learn_sigma": True,
    "class_cond": False,
    "use_checkpoint": False,
    "attention_resolutions": "16",
    "num_heads": 4,
    "num_head_channels": 32,
    "num_heads_upsample": -1,
    "use_scale_shift_norm": True,
    "dropout": 0.0,
    "resblock_updown": True,
    "use_fp16": False,
    "use_new_attention_order": False,
}
# A 64 px SPARNet (the enhancer's architecture at CPU size).
# `ddpm_tiny` overrides for a 16 px UNet that trains a step in milliseconds (training tests).
TINY_DDPM_NET = [
    "net.image_size=16",
    "data.image_size=16",
    "net.num_channels=32",
    "net.channel_mult=1,2",
    "net.attention_resolutions=8",
    "net.num_head_channels=16",
]

TINY_SPARNET_CONFIG = {
    "size": 64,
    "min_ch": 16,
    "max_ch": 64,
    "min_feat_size": 16,
    "res_depth": 1,
    "norm_type": "in",
    "att_name": "spar",
    "bottleneck_size": 4,
}


def fixtures_required() -> bool:
    return os.environ.get(REQUIRE_FIXTURES_VAR) == "1"


def _missing(what: Path) -> None:
    message = f"reference fixture {what} not found (expected ../shared/fixtures next to the project)"
    if fixtures_required():
        pytest.fail(f"{message}; ${REQUIRE_FIXTURES_VAR}=1 makes this an error", pytrace=False)
    pytest.skip(message)


def fixture_path(name: str) -> Path:
    """Path of a reference fixture file; skip (or fail under $DR2_REQUIRE_FIXTURES=1) when absent."""
    path = FIXTURES / name
    if not path.exists():
        _missing(path)
    return path


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        _missing(FIXTURES)
    return FIXTURES


def load_fixture(name: str) -> dict:
    return torch.load(fixture_path(name), weights_only=True)


@pytest.fixture(scope="module")
def dr2_remover_tiny() -> dict:
    """The official DR2 loop's cases on a tiny UNet (../shared/fixtures/dr2_remover_tiny.pt)."""
    return load_fixture("dr2_remover_tiny.pt")


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a module of small-convolution tests (`pytestmark = pytest.mark.usefixtures(...)`):
    as fast, and it does not spin when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def seeded_random_(module: nn.Module, seed: int, std: float = 0.1) -> nn.Module:
    """Fill every parameter from a seeded normal (zero-initialised branches would hide bugs); in place."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return module


# A 32 px UNet for eval/predictions wiring tests: they need a network, not a good one (and a cheap one).
TINY_EVAL_UNET = {
    "image_size": 32,
    "num_channels": 32,
    "num_res_blocks": 1,
    "channel_mult": "1,2",
    "attention_resolutions": "16",
    "num_head_channels": 32,
    "learn_sigma": True,
    "resblock_updown": True,
    "use_scale_shift_norm": True,
}

# enhance_tiny shrunk to 32 px (2 scales x 2 layers of D, no VGG19: the perceptual loss has its own tests
# and would dominate the CPU time), so an enhancer run takes seconds; each test adds its own keys.
TINY_ENHANCER_RUN = [
    "data.size=32",
    "generator.options.size=32",
    "discriminator.scales=2",
    "discriminator.layers=2",
    "data.batch_size=2",
    "data.val_n=2",
    "loss.vgg=0",
    "trainer.progress_bar=false",
]


def save_eval_unet(root: Path, seed: int = 0, perturb: float = 0.0) -> Path:
    """A seeded random `TINY_EVAL_UNET` saved as root/unet.pt + its flags sidecar. `perturb` > 0 moves every
    weight (ADM zero-initialises its output layer, so two fresh random UNets would predict the same)."""
    import json

    from lightning_dr2.nets.unet import UNet

    root.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        unet = UNet.from_flags(TINY_EVAL_UNET)
        for param in unet.parameters():
            param.add_(perturb * torch.randn_like(param))
        torch.save(unet.state_dict(), root / "unet.pt")
    (root / "unet.json").write_text(json.dumps(TINY_EVAL_UNET))
    return root / "unet.pt"


@pytest.fixture(scope="module")
def unet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`save_eval_unet` with seed 0, once per test module."""
    return save_eval_unet(tmp_path_factory.mktemp("unet"))


@pytest.fixture(scope="module")
def unets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two different `TINY_UNET_FLAGS` UNet files (seeds 0 and 1, "a" and "b") with their flags sidecars."""
    import json

    root = tmp_path_factory.mktemp("unets")
    paths = {}
    for key, seed in (("a", 0), ("b", 1)):
        paths[key] = root / f"unet{seed}.pt"
        torch.save(tiny_unet(seed=seed).state_dict(), paths[key])
        paths[key].with_suffix(".json").write_text(json.dumps(TINY_UNET_FLAGS))
    return paths


def tiny_unet(seed: int = 0) -> nn.Module:
    """The `TINY_UNET_FLAGS` UNet with seeded random weights (no zero-initialised output layer), eval mode."""
    from lightning_dr2.nets.unet import UNet

    return seeded_random_(UNet.from_flags(TINY_UNET_FLAGS), seed, std=0.05).eval()


def tiny_sparnet(seed: int = 0) -> nn.Module:
    """The `TINY_SPARNET_CONFIG` SPARNet (spectral norm, as released) built under a fixed seed, eval mode.

    A few train-mode forwards run the spectral-norm power iteration, as training would: with the random
    initial u, v the eval-mode weights are scaled far off and the outputs explode.
    """
    from lightning_dr2.nets.sparnet import SPARNet

    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        net = SPARNet(**TINY_SPARNET_CONFIG).train()
        x = torch.rand(1, 3, TINY_SPARNET_CONFIG["size"], TINY_SPARNET_CONFIG["size"]) * 2 - 1
        for _ in range(5):
            net(x)
    return net.eval()


def pytest_configure(config: pytest.Config) -> None:
    if fixtures_required() and not FIXTURES.is_dir():
        raise pytest.UsageError(
            f"${REQUIRE_FIXTURES_VAR}=1 but the reference fixtures folder {FIXTURES} does not exist: "
            "check out the shared fixtures next to the project (../shared/fixtures), or unset the variable "
            "to let those tests skip"
        )


def pytest_report_header(config: pytest.Config) -> str:
    """Which CPU kernels this run uses (tests/test_isa_variants.py checks its subprocesses got theirs)."""
    return f"cpu capability: {torch.backends.cpu.get_cpu_capability()}"


def pytest_collection_modifyitems(config, items) -> None:
    """`gpu` tests skip themselves without CUDA (CI never has a GPU)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# ------------------------------------------------------------------------------------------------ isolation


def _weights_modules() -> list:
    """Every loaded module of the weights lookup that holds the project-root constant it searches."""
    import lightning_dr2.weights  # noqa: F401  (loads the lookup, whether a module or a package)

    return [
        module
        for name, module in list(sys.modules.items())
        if (name == "lightning_dr2.weights" or name.startswith("lightning_dr2.weights."))
        and hasattr(module, "PROJECT_ROOT")
    ]


@pytest.fixture(autouse=True)
def environment_restored() -> Iterator[None]:
    """Each test leaves os.environ as it found it.

    Libraries set variables on purpose (resolve_run_name exports $DR2_RUN for DDP children; Lightning
    exports its seed): they must not reach the next test. Defined before the fixtures that use
    `monkeypatch`, so this teardown runs after monkeypatch's undo (which may restore a value a library set).
    """
    saved = dict(os.environ)
    yield
    for name in set(os.environ) - set(saved) - {PYTEST_OWN}:
        del os.environ[name]
    os.environ.update({k: v for k, v in saved.items() if k != PYTEST_OWN})


@pytest.fixture(autouse=True)
def isolated_from_developer_machine(
    environment_restored: None, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test sees the developer's weights, caches, working directory or W&B login."""
    if request.node.get_closest_marker("weights") is None:
        home = tmp_path / "isolated"
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("DR2_WEIGHTS", str(home / "dr2_weights"))
        monkeypatch.setenv("TORCH_HOME", str(home / "torch_home"))
        for module in _weights_modules():
            monkeypatch.setattr(module, "PROJECT_ROOT", home / "project")
    for name in ("DR2_RUN", "SLURM_JOB_ID", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")  # never online with the developer's W&B login


@pytest.fixture(scope="session", autouse=True)
def environment_unchanged_by_the_session() -> Iterator[None]:
    before = dict(os.environ)
    yield
    after = dict(os.environ)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)} - {PYTEST_OWN}
    assert not changed, f"the test session changed environment variables: {sorted(changed)}"


def _is_loopback(address) -> bool:
    if not isinstance(address, tuple):
        return True  # AF_UNIX paths and other local families
    host = str(address[0])
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection to a non-loopback address fails the test that made it."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_create_connection = socket.create_connection

    def refuse(address) -> None:
        raise AssertionError(f"test tried to reach the network: {address!r} (only loopback is allowed)")

    def connect(self, address):
        if not _is_loopback(address):
            refuse(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        if not _is_loopback(address):
            refuse(address)
        return real_connect_ex(self, address)

    def create_connection(address, *args, **kwargs):
        if not _is_loopback(address):
            refuse(address)
        return real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "create_connection", create_connection)


@pytest.fixture
def unreachable_wandb_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A W&B login (a 40-character key) whose server is a loopback port nobody listens on: every online
    start fails (connection refused) after `wandb.init_timeout`. Yields the server URL; W&B is torn down
    before and after, so the test starts its own W&B service with these settings and leaves none behind."""
    import wandb

    with socket.socket() as probe:  # a free port, closed again: connections to it are refused
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", url)
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")  # wandb's own telemetry would post there too
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    wandb.teardown()
    yield url
    wandb.teardown()


# ------------------------------------------------------------------------------------------ tiny jobs


def tiny_restore_cfg(unet: Path | str, input_dir: Path, output_dir: Path, *extra: str):
    """A `restore` config for a tiny UNet file: short DR2 settings, small batches, no workers."""
    from lightning_dr2.config.pipeline import RestoreConfig
    from lightning_dr2.config.recipes import load_config

    cfg = load_config(
        None,
        [
            f"unet_weights={unet}",
            "dr2.N=4",
            "dr2.tau=6",
            "dr2.omega=8",
            "batch_size=2",
            "num_workers=0",
            "progress_bar=false",
            *extra,
        ],
        schema=RestoreConfig,
    )
    cfg.input, cfg.output = str(input_dir), str(output_dir)
    return cfg


def build_tiny_testset(root: Path, n: int) -> Path:
    """The `tiny_synthetic` benchmark built from `n` synthetic 64 px faces; returns the set's folder."""
    from PIL import Image

    from lightning_dr2.datasets.synthetic import render_face
    from lightning_dr2.datasets.testset_builder import build_testset
    from lightning_dr2.datasets.testset_spec import load_spec

    hq = root / "hq_src"
    hq.mkdir()
    for i in range(n):
        Image.fromarray(render_face(300 + i, 64)).save(hq / f"{i:03d}.png")
    build_testset(hq, root / "set", load_spec("tiny_synthetic"), progress=False)
    return root / "set"


def quiet_cpu_trainer(**options):
    """A CPU Trainer for tests: no logger, checkpoints, progress bar or model summary unless asked."""
    import pytorch_lightning as pl

    defaults = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return pl.Trainer(**{**defaults, **options})
