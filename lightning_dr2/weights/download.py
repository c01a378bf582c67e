"""Downloading weight files, only when asked (`weights --fetch`), verifying the sha256 before installing."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning_dr2.files import atomic_write
from lightning_dr2.weights.checksum import CHUNK, hash_matches, verify
from lightning_dr2.weights.lookup import ENV_VAR, MissingWeightsError, default_dest, find_weight, how_to_get
from lightning_dr2.weights.registry import WEIGHTS

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 60.0


class FetchError(RuntimeError):
    """A weight file could not be downloaded (no URL, network/HTTP error, truncated download)."""


class ChecksumError(FetchError):
    """A downloaded (or present) file does not have the published sha256."""


def _download(url: str, part: Path, timeout: float, progress: bool, desc: str) -> str:
    """Stream `url` into `part`, hashing as it goes; returns the sha256. Raises on HTTP errors/truncation."""
    from tqdm import tqdm  # lazy: only fetching needs it

    request = urllib.request.Request(url, headers={"User-Agent": "lightning_dr2-weights"})
    digest = hashlib.sha256()
    received = 0
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with (
            open(part, "wb") as out,
            tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=desc,
                disable=not progress,
                file=sys.stderr,
            ) as bar,
        ):
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received != total:
        raise FetchError(f"download of {url} truncated: got {received} of {total} bytes")
    if received == 0:
        raise FetchError(f"download of {url} is empty")
    return digest.hexdigest()


def _download_verified(url: str, part: Path, name: str, expected: str | None, timeout: float, progress: bool) -> None:
    """Download into `part` and check the published sha256 (ChecksumError: never installed)."""
    actual = _download(url, part, timeout, progress, desc=name)
    if expected is not None and not hash_matches(actual, expected):
        raise ChecksumError(
            f"checksum mismatch for {name} downloaded from {url}: "
            f"expected sha256 {expected}{'...' if len(expected) < 64 else ''}, got {actual}. "
            "The partial file was deleted; nothing was installed."
        )
    log.info("fetched %s from %s (sha256 %s)", name, url, actual)


def _fetch_one(name: str, dest: Path, urls: Sequence[str], progress: bool, timeout: float) -> tuple[Path, bool]:
    """Fetch one file; returns (path, downloaded?). Skips files already present with a good checksum."""
    entry = WEIGHTS.get(name)
    expected = entry.sha256 if entry else None
    try:
        existing: Path | None = find_weight(name, dest)
    except MissingWeightsError:
        existing = None
    if existing is not None:
        if expected is None or verify(existing, expected):
            log.info("%s already present at %s", name, existing)
            return existing, False
        log.warning("%s at %s does not match sha256 %s: downloading it again into %s", name, existing, expected, dest)

    if not urls:
        if entry is None:
            raise FetchError(how_to_get(name))
        raise FetchError(
            f"'{name}' has no direct download URL; manual download: {entry.source}\n"
            f"Put it in {dest}/ (or data/weights/, or the folder named by ${ENV_VAR})."
        )
    if entry is None:
        log.warning("%s is not a registered weight file: its checksum cannot be verified", name)


    target = dest / name
    failures = []
    for url in urls:
        try:
            # The temporary file is removed on any failure (also Ctrl-C): a partial download never stays.
            atomic_write(target, lambda tmp, url=url: _download_verified(url, tmp, name, expected, timeout, progress))
        except ChecksumError:
            raise
        except (urllib.error.URLError, http.client.HTTPException, OSError, FetchError) as err:
            reason = f"HTTP {err.code} {err.reason}" if isinstance(err, urllib.error.HTTPError) else str(err)
            failures.append(f"  {url}: {reason}")
            continue
        return target, True
    manual = f"\nManual download: {entry.source}" if entry is not None and entry.source else ""
    raise FetchError(f"could not download {name}:\n" + "\n".join(failures) + manual)


def fetch(
    names: Iterable[str],
    dest: str | os.PathLike | None = None,
    urls: Mapping[str, str | Sequence[str]] | None = None,
    progress: bool = True,
    timeout: float = FETCH_TIMEOUT_S,
) -> list[Path]:
    """Download weight files into `dest` (default `default_dest()`), verifying sha256 before installing.

    `urls` overrides the registry's URLs per name (mirrors, tests). Files already present in the lookup
    folders with a good checksum are skipped (their existing path is returned). Raises FetchError (files
    without a URL, network/HTTP errors) or ChecksumError; stops at the first failure.
    """
    dest_dir = Path(dest).expanduser() if dest is not None else default_dest()
    paths = []
    for name in names:
        paths.append(_fetch_one(name, dest_dir, _urls_for(name, urls), progress, timeout)[0])
    return paths


def fetch_each(names: Iterable[str], dest: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Fetch every name (duplicates once), recording each outcome instead of stopping at the first failure.

    Returns JSON-ready dicts {name, ok, path, downloaded, error}; `python -m lightning_dr2 weights --fetch`.
    """
    dest_dir = Path(dest).expanduser() if dest is not None else default_dest()
    results = []
    for name in dict.fromkeys(names):
        try:
            path, downloaded = _fetch_one(name, dest_dir, _urls_for(name, None), True, FETCH_TIMEOUT_S)
            results.append({"name": name, "ok": True, "path": str(path), "downloaded": downloaded, "error": None})
        except (FetchError, OSError, ValueError) as err:
            results.append({"name": name, "ok": False, "path": None, "downloaded": False, "error": str(err)})
    return results


def _urls_for(name: str, overrides: Mapping[str, str | Sequence[str]] | None) -> tuple[str, ...]:
    if overrides is not None and name in overrides:
        value = overrides[name]
        return (value,) if isinstance(value, str) else tuple(value)
    entry = WEIGHTS.get(name)
    return entry.urls if entry else ()
