"""Benchmark sets and DR2 (N, tau) settings: what `eval` and the training-time evaluators score, and how."""

from __future__ import annotations

from dataclasses import dataclass, field

from lightning_dr2.config.loader import Checks


@dataclass
class EvalSetConfig:
    """One benchmark set: a folder built by `testset` (paired LQ/HQ splits) or a folder of real LQ faces."""

    name: str = "celeba_test"
    root: str = "data/testsets/celeba_test"
    kind: str = "paired"  # paired | real
    splits: list[str] = field(default_factory=list)  # paired sets: empty = every split in the folder
    limit: int = 0  # evaluate the first `limit` images of each split (0 = all)
    # FID reference statistics: a path or a bare file name found through the weights lookup (BasicSR's
    # inception_FFHQ_512-f7b384ab.pth, the papers' reference, or an .npz from `fid-stats`). None: paired
    # sets use their own HQ images, reported as fid_gt (a different number); real sets need a file.
    fid_reference: str | None = None


@dataclass
class SettingConfig:
    N: int = 8
    tau: int = 35
    omega: int | None = None


def demo_settings() -> list[SettingConfig]:
    """The three (N, tau) of the DR2 demo: our default mix for training pairs (the paper publishes none)."""
    return [SettingConfig(4, 22), SettingConfig(8, 35), SettingConfig(16, 35)]


def check_dr2_setting(c: Checks, prefix: str, N: int, tau: int, omega: int | None, respacing: int) -> int:  # noqa: N803
    """One (N, tau, omega) against the respaced grid, the error naming `<prefix>N` / `tau` / `omega`; returns
    omega (resolved by the official rule when None)."""
    from lightning_dr2.dr2.remover import SettingError, check_indices

    try:
        return check_indices(N, tau, omega, respacing)
    except SettingError as err:
        c.fail(f"{prefix}{err.name}", err.value, err.reason)
        raise  # unreachable: fail raises


def check_settings_list(c: Checks, key: str, respacing_key: str) -> None:
    """Every (N, tau, omega) of the list at `key` against the respaced grid of `respacing_key`, each once: a
    repeat (omega resolved, so {N: 8, tau: 35} and its official omega are one setting) would be restored and
    scored twice, as two rows of one setting."""
    seen: dict[tuple[int, int, int], int] = {}
    for i, s in enumerate(c.value(key)):
        omega = check_dr2_setting(c, f"{key}[{i}].", s["N"], s["tau"], s["omega"], c.value(respacing_key))
        first = seen.setdefault((s["N"], s["tau"], omega), i)
        if first != i:
            c.fail(
                f"{key}[{i}]",
                s,
                f"repeats {key}[{first}] (N={s['N']}, tau={s['tau']}, omega={omega}): list each setting once",
            )
