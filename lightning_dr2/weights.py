"""Weight files: the one place where they are registered, looked up, listed, verified and fetched.

Released weights cannot ship with the code (licences, size), so every part of the framework asks this
module for them by file name. Lookup order (`search_dirs`): an explicit folder, `$DR2_WEIGHTS`,
`data/weights` under the current directory, `data/weights` under the project root, and, for files that
torch.hub itself caches (torchvision backbones, pytorch-fid's Inception), `$TORCH_HOME/hub/checkpoints`.

A missing file raises `MissingWeightsError` naming the file, every folder searched and how to get it.
Nothing downloads implicitly: only `fetch` (`python -m lightning_dr2 weights --fetch NAME`) does, and only
from the direct URLs in `WEIGHTS`; it verifies the sha256 before moving a file into place.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import string
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ENV_VAR = "DR2_WEIGHTS"
CHUNK = 1 << 20  # 1 MiB: hashing and downloading stream in chunks, never a whole checkpoint in memory
FETCH_TIMEOUT_S = 60.0
MIN_HASH_PREFIX = 8  # torch.hub / BasicSR file names embed the first 8 hex digits of the sha256


@dataclass(frozen=True)
class WeightFile:
    """One weight file the framework knows about.

    `sha256` is the full hex digest or a prefix of it (torchvision, pytorch-fid and BasicSR file names
    embed the first 8+ hex digits); None when nobody published one. `urls` are direct, stable download
    links (tried in order); files without one name a page with manual instructions in `source`.
    `hub_cache` marks files that torch.hub caches under the same name, so the torch hub cache is searched.
    `aliases` are other names the same file is distributed under.
    """

    name: str
    role: str
    description: str
    sha256: str | None = None
    urls: tuple[str, ...] = ()
    source: str = ""
    used_by: str = ""
    hub_cache: bool = False
    aliases: tuple[str, ...] = field(default=())


_DR2_SOURCE = (
    "https://github.com/Kaldwin0106/DR2_Drgradation_Remover (README 'Download pre-trained models': "
    "Baidu Cloud Drive https://pan.baidu.com/s/1g8cz0hbd3wByfP9Q9bSHCQ?pwd=dr2e, manual download)"
)
_VQFR_METRICS_SOURCE = (
    "https://github.com/TencentARC/VQFR (README, metric weights: Google Drive folder "
    "https://drive.google.com/drive/folders/1k3RCSliF6PsujCMIdCD1hNM63EozlDIZ)"
)

_REGISTRY: tuple[WeightFile, ...] = (
    # --- diffusion UNets (ADM, FFHQ 256x256, all with DR2_FFHQ256_FLAGS) ---
    WeightFile(
        name="DR2_FFHQ.pkl",
        role="diffusion UNet",
        description="DR2 release: ADM DDPM on FFHQ 256x256 (the DR2 stage's denoiser, 93.56 M params)",
        source=_DR2_SOURCE,
        used_by="lightning_dr2.nets.unet.UNet (DR2_FFHQ256_FLAGS): DR2 restoration",
    ),
    WeightFile(
        name="ffhq_10m.pt",
        role="diffusion UNet",
        description="ILVR: ADM DDPM on FFHQ 256x256, same network as DR2_FFHQ.pkl",
        source="https://github.com/jychoi118/ilvr_adm (README: pre-trained models, manual download)",
        used_by="lightning_dr2.nets.unet.UNet (DR2_FFHQ256_FLAGS): DR2 restoration",
    ),
    WeightFile(
        name="ffhq_p2.pt",
        role="diffusion UNet",
        description="P2-weighting: FFHQ 256x256 'lightweight ADM', same network as DR2_FFHQ.pkl",
        source="https://github.com/jychoi118/P2-weighting (README: pre-trained models, manual download)",
        used_by="lightning_dr2.nets.unet.UNet (DR2_FFHQ256_FLAGS): DR2 restoration",
    ),
    # --- enhancers ---
    WeightFile(
        name="SPARNetHD_FFHQ_DR2aug.pth",
        role="enhancer",
        description="DR2 release: SPARNetHD 512 trained on DR2-augmented FFHQ (y = DR2(x) * k_sigma)",
        source=_DR2_SOURCE,
        used_by="lightning_dr2.nets.sparnet.SPARNet.hd(): DR2E enhancement stage",
    ),
    WeightFile(
        name="SPARNetHD_V4_Attn2D_net_H-epoch10.pth",
        role="enhancer",
        description="Face-SPARNet: the original SPARNetHD 512 (trained on synthetic degradations)",
        source="https://github.com/chaofengc/Face-SPARNet (README: pretrained models, manual download)",
        used_by="lightning_dr2.nets.sparnet.SPARNet.hd(): enhancement stage / initialisation",
    ),
    # --- metrics ---
    WeightFile(
        name="pt_inception-2015-12-05-6726825d.pth",
        role="FID network",
        description="pytorch-fid InceptionV3 (TF 2015-12-05 weights ported), pool3 2048-d features",
        sha256="6726825d",
        urls=(
            "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
            "pt_inception-2015-12-05-6726825d.pth",
        ),
        source="https://github.com/mseitzer/pytorch-fid",
        used_by="FID (lightning_dr2.metrics)",
        hub_cache=True,  # pytorch-fid fetches it with torch.hub into the same cache
    ),
    WeightFile(
        name="inception_FFHQ_512-f7b384ab.pth",
        role="FID statistics",
        description="BasicSR FFHQ-512 Inception statistics (dict mean/cov, 50k images), FID reference",
        sha256="f7b384ab",
        source=(
            "https://github.com/XPixelGroup/BasicSR/blob/master/docs/Metrics.md (section 'Pre-calculated "
            "FFHQ inception feature statistics': Google Drive / Baidu links, manual download); VQFR ships "
            f"it as inception_FFHQ_512.pth: {_VQFR_METRICS_SOURCE}; or compute your own with `fid-stats`"
        ),
        used_by="lightning_dr2.metrics.frechet.load_stats: FID against FFHQ",
        aliases=("inception_FFHQ_512.pth",),
    ),
    WeightFile(
        name="resnet18_110.pth",
        role="identity metric",
        description="arcface-pytorch resnet_face18 (use_se=False), identity distance 'Deg'",
        source=(
            f"{_VQFR_METRICS_SOURCE}; originally https://github.com/ronghuaiyang/arcface-pytorch "
            "(README: pretrained model, manual download)"
        ),
        used_by="lightning_dr2.nets.arcface.load_arcface: identity distance (Deg)",
    ),
    WeightFile(
        name="vgg16-397923af.pth",
        role="LPIPS backbone",
        description="torchvision VGG16 ImageNet weights (IMAGENET1K_V1), LPIPS 'vgg' (papers' protocol)",
        sha256="397923af",
        urls=("https://download.pytorch.org/models/vgg16-397923af.pth",),
        source=(
            'torchvision model zoo: python -c "import torchvision; '
            "torchvision.models.vgg16(weights='IMAGENET1K_V1')\" saves it in $TORCH_HOME/hub/checkpoints"
        ),
        used_by="lightning_dr2.metrics.lpips (net='vgg')",
        hub_cache=True,
    ),
    WeightFile(
        name="alexnet-owt-7be5be79.pth",
        role="LPIPS backbone",
        description="torchvision AlexNet ImageNet weights (IMAGENET1K_V1), LPIPS 'alex'",
        sha256="7be5be79",
        urls=("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",),
        source=(
            'torchvision model zoo: python -c "import torchvision; '
            "torchvision.models.alexnet(weights='IMAGENET1K_V1')\" saves it in $TORCH_HOME/hub/checkpoints"
        ),
        used_by="lightning_dr2.metrics.lpips (net='alex')",
        hub_cache=True,
    ),
)

WEIGHTS: dict[str, WeightFile] = {w.name: w for w in _REGISTRY}


class MissingWeightsError(FileNotFoundError):
    """A weight file is in no searched folder; the message says where we looked and how to get it."""

    def __init__(self, message: str, name: str = "", searched: Sequence[Path] = ()) -> None:
        super().__init__(message)  # one argument: str() is the message, and the error pickles
        self.name = name
        self.searched = list(searched)


class FetchError(RuntimeError):
    """A weight file could not be downloaded (no URL, network/HTTP error, truncated download)."""


class ChecksumError(FetchError):
    """A downloaded (or present) file does not have the published sha256."""


# ----------------------------------------------------------------------------------------------------
# lookup


def torch_hub_checkpoints() -> Path:
    """torch.hub's download cache (`$TORCH_HOME/hub/checkpoints`): torchvision and pytorch-fid save there."""
    import torch.hub  # lazy: listing weights should not pay for importing torch unless it must

    return Path(torch.hub.get_dir()) / "checkpoints"


def search_dirs(weights_dir: str | os.PathLike | None = None, name: str | None = None) -> list[Path]:
    """Folders searched for weight files, in order, without duplicates.

    `weights_dir`, `$DR2_WEIGHTS`, `./data/weights`, `<project>/data/weights`; plus the torch hub cache when
    `name` is a registered file that torch.hub caches (torchvision backbones, pytorch-fid Inception).
    """
    dirs: list[Path] = []
    if weights_dir is not None:
        dirs.append(Path(weights_dir))
    if os.environ.get(ENV_VAR):
        dirs.append(Path(os.environ[ENV_VAR]))
    dirs += [Path("data/weights"), PROJECT_ROOT / "data" / "weights"]
    entry = WEIGHTS.get(name) if name is not None else None
    if entry is not None and entry.hub_cache:
        dirs.append(torch_hub_checkpoints())
    unique: list[Path] = []
    seen: set[Path] = set()
    for d in dirs:
        key = d.expanduser().resolve()
        if key not in seen:
            seen.add(key)
            unique.append(d.expanduser())
    return unique


def find_weight(name: str, weights_dir: str | os.PathLike | None = None) -> Path:
    """First existing `name` (or a registered alias) in `search_dirs`; MissingWeightsError if none."""
    entry = WEIGHTS.get(name)
    candidates = (name, *entry.aliases) if entry else (name,)
    dirs = search_dirs(weights_dir, name)
    for d in dirs:
        for candidate in candidates:
            if (d / candidate).is_file():
                return d / candidate
    raise MissingWeightsError(missing_message(name, dirs), name, dirs)


def how_to_get(name: str) -> str:
    """One or two lines telling a user how to obtain `name` (fetch command, URL or manual source)."""
    entry = WEIGHTS.get(name)
    if entry is None:
        return f"'{name}' is not a known weight file of lightning_dr2 (known: {', '.join(sorted(WEIGHTS))})."
    lines = []
    if entry.urls:
        lines.append(
            f"fetch it (downloads {entry.urls[0]} and checks its sha256):\n"
            f"    python -m lightning_dr2 weights --fetch {name}"
        )
    if entry.source:
        lines.append(("or get it manually: " if entry.urls else "manual download: ") + entry.source)
    return "\n".join(lines)


def missing_message(name: str, dirs: Sequence[Path]) -> str:
    """The text of MissingWeightsError: file, role, folders searched, how to get it and where to put it."""
    entry = WEIGHTS.get(name)
    what = f"'{name}' ({entry.role}: {entry.description})" if entry else f"'{name}'"
    searched = "\n".join(f"  - {d.absolute()}" for d in dirs)
    aliases = f" (or under the name {', '.join(entry.aliases)})" if entry and entry.aliases else ""
    return (
        f"weight file {what} not found{aliases}. Searched, in order:\n{searched}\n"
        f"{how_to_get(name)}\n"
        f"Put it in data/weights/ or in the folder named by ${ENV_VAR} (or pass an explicit weights dir). "
        "Nothing is downloaded automatically."
    )


# ----------------------------------------------------------------------------------------------------
# verification


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


# ----------------------------------------------------------------------------------------------------
# listing


def list_weights(weights_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Status of every registered file: where it is, its sha256 and whether it matches (JSON-ready dicts).

    Hashes are computed for present files (slow for big checkpoints, but it is what tells a user that a
    download is truncated or the wrong file). `checksum_ok` is None when no hash is published.
    """
    rows = []
    for entry in WEIGHTS.values():
        try:
            path: Path | None = find_weight(entry.name, weights_dir)
        except MissingWeightsError:
            path = None
        actual = sha256sum(path) if path is not None else None
        ok = hash_matches(actual, entry.sha256) if actual is not None and entry.sha256 else None
        rows.append(
            {
                "name": entry.name,
                "role": entry.role,
                "description": entry.description,
                "present": path is not None,
                "path": str(path) if path is not None else None,
                "size_bytes": path.stat().st_size if path is not None else None,
                "sha256": actual,
                "expected_sha256": entry.sha256,
                "checksum_ok": ok,
                "urls": list(entry.urls),
                "source": entry.source,
                "used_by": entry.used_by,
            }
        )
    return rows


def _status(row: Mapping[str, Any]) -> str:
    if not row["present"]:
        return "missing"
    if row["checksum_ok"] is None:
        return "present (no published hash)"
    return "ok (sha256 verified)" if row["checksum_ok"] else "BAD CHECKSUM"


def format_table(rows: Sequence[Mapping[str, Any]], weights_dir: str | os.PathLike | None = None) -> str:
    """Plain-text table of `list_weights` rows, then how to get what is missing or broken."""
    header = ("NAME", "ROLE", "STATUS", "PATH / HOW TO GET")
    cells = []
    for row in rows:
        if row["present"]:
            where = row["path"]
        elif row["urls"]:
            where = f"python -m lightning_dr2 weights --fetch {row['name']}"
        else:
            where = "manual download (see below)"
        cells.append((row["name"], row["role"], _status(row), where))
    widths = [max(len(str(c[i])) for c in [header, *cells]) for i in range(3)]
    lines = ["  ".join(str(c[i]).ljust(widths[i]) for i in range(3)) + "  " + str(c[3]) for c in [header, *cells]]

    problems = [r for r in rows if not r["present"] or r["checksum_ok"] is False]
    present = sum(r["present"] for r in rows)
    lines.append("")
    lines.append(f"{present} of {len(rows)} files present. Folders searched (in order; the torch hub cache only")
    lines.append("for torchvision/pytorch-fid files):")
    lines += [f"  - {d.absolute()}" for d in search_dirs(weights_dir)]
    lines.append(f"  - {torch_hub_checkpoints()}")
    for row in problems:
        lines.append("")
        if row["checksum_ok"] is False:
            lines.append(
                f"{row['name']}: sha256 {row['sha256']} does not match the published "
                f"{row['expected_sha256']} "
                "(truncated or wrong file?): delete it and get it again."
            )
        lines.append(f"{row['name']}: {how_to_get(row['name'])}")
    if any(not r["present"] and r["urls"] for r in rows):
        lines.append("")
        lines.append("Fetch every missing file that has a download URL: python -m lightning_dr2 weights --fetch-all")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# fetching


def default_dest() -> Path:
    """Where `fetch` saves files by default: `$DR2_WEIGHTS` if set, else `<project>/data/weights`."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return PROJECT_ROOT / "data" / "weights"


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

    dest.mkdir(parents=True, exist_ok=True)
    target, part = dest / name, dest / f"{name}.part"
    failures = []
    for url in urls:
        try:
            actual = _download(url, part, timeout, progress, desc=name)
        except (urllib.error.URLError, http.client.HTTPException, OSError, FetchError) as err:
            part.unlink(missing_ok=True)
            reason = f"HTTP {err.code} {err.reason}" if isinstance(err, urllib.error.HTTPError) else str(err)
            failures.append(f"  {url}: {reason}")
            continue
        except BaseException:  # KeyboardInterrupt etc.: never leave a partial file behind
            part.unlink(missing_ok=True)
            raise
        if expected is not None and not hash_matches(actual, expected):
            part.unlink(missing_ok=True)
            raise ChecksumError(
                f"checksum mismatch for {name} downloaded from {url}: "
                f"expected sha256 {expected}{'...' if len(expected) < 64 else ''}, got {actual}. "
                "The partial file was deleted; nothing was installed."
            )
        os.replace(part, target)  # atomic on one filesystem: a reader never sees a half-written file
        log.info("fetched %s -> %s (sha256 %s)", name, target, actual)
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


def _urls_for(name: str, overrides: Mapping[str, str | Sequence[str]] | None) -> tuple[str, ...]:
    if overrides is not None and name in overrides:
        value = overrides[name]
        return (value,) if isinstance(value, str) else tuple(value)
    entry = WEIGHTS.get(name)
    return entry.urls if entry else ()


# ----------------------------------------------------------------------------------------------------
# CLI


def weights_main(
    fetch: list[str] | None = None,
    all_missing: bool = False,
    weights_dir: str | None = None,
    as_json: bool = False,
) -> int:
    """`python -m lightning_dr2 weights [--fetch NAME ...] [--fetch-all] [--weights-dir DIR] [--json]`.

    Without fetch options: print the status table (or JSON) and return 0. With them: fetch each file
    (into `weights_dir` if given, else `default_dest()`), report each result, return 1 if any failed.
    """
    if not fetch and not all_missing:
        rows = list_weights(weights_dir)
        print(json.dumps(rows, indent=2) if as_json else format_table(rows, weights_dir))
        return 0

    names = list(dict.fromkeys(fetch or []))
    manual: list[str] = []
    if all_missing:
        for row in list_weights(weights_dir):
            if row["present"] and row["checksum_ok"] is not False:
                continue
            (names if row["urls"] else manual).append(row["name"])
        names = list(dict.fromkeys(names))
    dest = Path(weights_dir).expanduser() if weights_dir is not None else default_dest()

    results = []
    for name in names:
        try:
            path, downloaded = _fetch_one(name, dest, _urls_for(name, None), True, FETCH_TIMEOUT_S)
            results.append({"name": name, "ok": True, "path": str(path), "downloaded": downloaded, "error": None})
        except (FetchError, OSError, ValueError) as err:
            results.append({"name": name, "ok": False, "path": None, "downloaded": False, "error": str(err)})
    if as_json:
        print(json.dumps({"results": results, "manual": manual}, indent=2))
    else:
        if not names:
            print("Every file with a download URL is present.")
        for r in results:
            if r["ok"]:
                print(f"{r['name']}: {'downloaded to' if r['downloaded'] else 'already present at'} {r['path']}")
            else:
                print(f"{r['name']}: FAILED\n{r['error']}", file=sys.stderr)
        for name in manual:
            print(f"{name}: not fetched, no direct URL; manual download: {WEIGHTS[name].source}")
    return 0 if all(r["ok"] for r in results) else 1
