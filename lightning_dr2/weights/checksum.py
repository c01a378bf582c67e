"""sha256 of weight files, and whether they match a published digest or digest prefix."""

from __future__ import annotations

import hashlib
import os
import string

CHUNK = 1 << 20  # 1 MiB: hashing and downloading stream in chunks, never a whole checkpoint in memory
MIN_HASH_PREFIX = 8  # torch.hub / BasicSR file names embed the first 8 hex digits of the sha256


def sha256sum(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (checkpoints are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _normalise_hash(expected: str) -> str:
    expected = expected.strip().lower()
    if not (MIN_HASH_PREFIX <= len(expected) <= 64) or any(c not in string.hexdigits for c in expected):
        raise ValueError(f"expected sha256: {MIN_HASH_PREFIX}-64 hex digits (a digest or its prefix), got {expected!r}")
    return expected


def hash_matches(actual: str, expected: str) -> bool:
    """True if the hex digest `actual` equals `expected` or starts with it (prefix hashes)."""
    return actual.lower().startswith(_normalise_hash(expected))


def verify(path: str | os.PathLike, expected: str) -> bool:
    """Whether the file's sha256 matches `expected` (full hex digest or a prefix of at least 8 digits)."""
    expected = _normalise_hash(expected)  # fail on a malformed hash before reading a large file
    return hash_matches(sha256sum(path), expected)
