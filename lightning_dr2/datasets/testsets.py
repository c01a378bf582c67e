"""Benchmark test sets (CelebA-Test 4x/8x/16x x mild/medium/severe, WIDER-Critical): specs, building, reading.

A test set is built once from a folder of HQ faces and a spec YAML (`experiments/testsets/*.yaml`)::

    out/manifest.json            spec, spec hash, versions, per image and split: hashes, seed, params
    out/hq/<relpath>.png         the HQ face resized to `hq_size`, written once
    out/<split>/lq/<relpath>.png the degraded face, one folder per split (x4_mild, ..., x16_severe)

Everything is reproducible from the manifest: the LQ of image i in split k is
`degrade_with_seed(hq, split_spec, seed=(spec.seed, k, i))`, with i the position in the sorted HQ listing,
so the bytes depend neither on the worker count nor on interruptions. PNGs are encoded with fixed options
(no metadata) and written atomically; a rerun skips files whose hash matches the manifest and refuses a
folder built from another spec. `PairedSplit` and `RealLQSet` read built splits and LQ-only sets.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import numbers
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np
import PIL
import yaml
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from lightning_dr2 import __version__
from lightning_dr2.datasets.degradations import DegradationSpec, degrade_with_seed
from lightning_dr2.datasets.images import (
    BadImageError,
    center_crop_resize,
    image_to_tensor,
    list_images,
    load_pil,
    read_image,
    scan,
)

log = logging.getLogger(__name__)

BUILDER_VERSION = 1
"""Bumped whenever the build recipe (seeding, resizing, encoding) changes; part of the spec hash."""

MANIFEST = "manifest.json"
HQ_DIR = "hq"
LQ_DIR = "lq"
TESTSETS_DIR = Path(__file__).resolve().parents[2] / "experiments" / "testsets"
"""Where named specs live: `load_spec("celeba_test")` reads `experiments/testsets/celeba_test.yaml`."""

# Fixed PNG options: the same pixels always give the same bytes (OpenCV writes no time or text chunks).
_PNG_OPTIONS = [int(cv2.IMWRITE_PNG_COMPRESSION), 3]
_MANIFEST_FLUSH_S = 30.0  # how often a long build saves its progress, so an interruption loses little
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TOP_KEYS = ("name", "hq_size", "seed", "source", "description", "defaults", "scales", "severities", "splits")
_DEGRADATION_KEYS = tuple(f.name for f in fields(DegradationSpec))


# --------------------------------------------------------------------------------------------- spec


@dataclass
class TestSetSpec:
    """A named grid of degradation splits applied to HQ faces resized to `hq_size`.

    `splits` is ordered: a split's position is part of its per-image seeds. `source`/`description` are
    notes for people; they, `name` and `origin` (the file it came from) do not enter `spec_hash`, which
    covers exactly what determines the output bytes.
    """

    __test__ = False  # not a pytest test class, despite the name

    name: str
    hq_size: int
    seed: int
    splits: dict[str, DegradationSpec]
    source: str = ""
    description: str = ""
    origin: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        where = self.origin or "TestSetSpec"
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"{where}: name must be a non-empty string, got {self.name!r}")
        self.hq_size = _int(where, "hq_size", self.hq_size, low=1)
        self.seed = _int(where, "seed", self.seed, low=0)
        if not isinstance(self.source, str) or not isinstance(self.description, str):
            raise ValueError(f"{where}: source and description must be strings")
        if not isinstance(self.splits, Mapping) or not self.splits:
            raise ValueError(f"{where}: splits must be a non-empty mapping of split name -> DegradationSpec")
        splits: dict[str, DegradationSpec] = {}
        for name, split in self.splits.items():
            if not isinstance(name, str) or not _SPLIT_NAME.match(name) or name == HQ_DIR:
                raise ValueError(
                    f"{where}: split name {name!r} must be a folder name of letters, digits, '_', '.', '-' "
                    f"(not '{HQ_DIR}')"
                )
            if isinstance(split, Mapping):
                split = _degradation_spec(split, f"splits.{name}", where)
            if not isinstance(split, DegradationSpec):
                raise ValueError(f"{where}: split {name} must be a DegradationSpec, got {type(split).__name__}")
            splits[name] = split
        self.splits = splits

    def to_dict(self) -> dict[str, Any]:
        """The full spec in the explicit `splits:` form; `TestSetSpec.from_dict` reads it back."""
        return {
            "name": self.name,
            "hq_size": self.hq_size,
            "seed": self.seed,
            "source": self.source,
            "description": self.description,
            "splits": {name: split.to_dict() for name, split in self.splits.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], origin: str | None = None) -> TestSetSpec:
        """Parse a spec mapping (grid form `defaults`/`scales`/`severities`, and/or explicit `splits`)."""
        return _parse_spec(data, origin or "test-set spec")

    def canonical(self) -> dict[str, Any]:
        """What the output bytes depend on, in a JSON-stable form (splits as an ordered list)."""
        return {
            "builder": BUILDER_VERSION,
            "hq_size": self.hq_size,
            "seed": self.seed,
            "splits": [[name, split.to_dict()] for name, split in self.splits.items()],
        }

    def spec_hash(self) -> str:
        """sha256 of the canonical JSON: equal hashes mean the same images come out of the same HQ folder."""
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode("ascii")).hexdigest()


def _int(where: str, key: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{where}: {key} must be an integer >= {low}, got {value!r}")
    return int(value)


def _fields(value: Any, section: str, where: str) -> dict[str, Any]:
    """A mapping of DegradationSpec fields; unknown keys are named with their section and file."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: {section} must be a mapping of DegradationSpec fields, got {value!r}")
    unknown = [key for key in value if key not in _DEGRADATION_KEYS]
    if unknown:
        raise ValueError(
            f"{where}: unknown key {unknown[0]!r} in {section}; expected DegradationSpec fields "
            f"{list(_DEGRADATION_KEYS)}"
        )
    return dict(value)


def _degradation_spec(values: Mapping[str, Any], section: str, where: str) -> DegradationSpec:
    try:
        return DegradationSpec.from_dict(_fields(values, section, where))
    except ValueError as err:
        if str(err).startswith(where):
            raise
        raise ValueError(f"{where}: {section}: {err}") from None


def _scale_name(scale: Any, where: str) -> tuple[str, float]:
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"{where}: scales must be positive numbers, got {scale!r}")
    value = float(scale)
    return (f"x{int(value)}" if value.is_integer() else f"x{value:g}"), value


def _parse_spec(data: Any, where: str) -> TestSetSpec:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: a test-set spec must be a mapping, got {type(data).__name__}")
    unknown = [key for key in data if key not in _TOP_KEYS]
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; expected some of {list(_TOP_KEYS)}")
    missing = [key for key in ("name", "hq_size", "seed") if key not in data]
    if missing:
        raise ValueError(f"{where}: missing key {missing[0]!r}")
    defaults = _fields(data.get("defaults"), "defaults", where)
    scales, severities = data.get("scales"), data.get("severities")
    if (scales is None) != (severities is None):
        raise ValueError(f"{where}: scales and severities go together (the grid is scales x severities)")

    splits: dict[str, dict[str, Any]] = {}
    if scales is not None:
        if not isinstance(scales, Sequence) or isinstance(scales, str) or not scales:
            raise ValueError(f"{where}: scales must be a non-empty list of numbers, got {scales!r}")
        if not isinstance(severities, Mapping) or not severities:
            raise ValueError(f"{where}: severities must be a non-empty mapping name -> DegradationSpec fields")
        for scale in scales:
            prefix, value = _scale_name(scale, where)
            for severity, values in severities.items():
                section = f"severities.{severity}"
                values = _fields(values, section, where)
                if "scale_range" in values:
                    raise ValueError(f"{where}: {section} sets scale_range; the scale comes from `scales`")
                name = f"{prefix}_{severity}"
                if name in splits:
                    raise ValueError(f"{where}: split {name} appears twice (repeated scale {scale!r}?)")
                splits[name] = {**defaults, **values, "scale_range": [value, value]}

    explicit = data.get("splits")
    if explicit is not None and not isinstance(explicit, Mapping):
        raise ValueError(f"{where}: splits must be a mapping split name -> DegradationSpec fields")
    for name, values in (explicit or {}).items():
        # A grid split named again is overridden field by field; a new name starts from `defaults`.
        splits[str(name)] = {**splits.get(str(name), defaults), **_fields(values, f"splits.{name}", where)}
    if not splits:
        raise ValueError(f"{where}: no splits; give `scales` + `severities` and/or `splits`")

    built = {name: _degradation_spec(values, f"split {name}", where) for name, values in splits.items()}
    return TestSetSpec(
        name=data["name"],
        hq_size=data["hq_size"],
        seed=data["seed"],
        splits=built,
        source=data.get("source") or "",
        description=data.get("description") or "",
        origin=where,
    )


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; a spec with a repeated key is an error."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def spec_path(name_or_path: str | os.PathLike) -> Path:
    """Resolve `celeba_test`, `experiments/testsets/celeba_test.yaml` or any YAML path to an existing file."""
    candidate = Path(name_or_path)
    if candidate.is_file():
        return candidate
    named = TESTSETS_DIR / f"{name_or_path}.yaml"
    if named.is_file():
        return named
    known = sorted(p.stem for p in TESTSETS_DIR.glob("*.yaml"))
    raise FileNotFoundError(f"test-set spec '{name_or_path}' not found: no file {candidate} or {named}; known: {known}")


def load_spec(path: str | os.PathLike) -> TestSetSpec:
    """Load and validate a spec YAML (or a name in `experiments/testsets/`); errors name the key and file."""
    path = spec_path(path)
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: invalid YAML: {err}") from None
    return _parse_spec(data, str(path))


# -------------------------------------------------------------------------------------------- build


@dataclass
class BuildReport:
    """What one `build_testset` run did (the CLI prints it)."""

    out: Path
    spec: TestSetSpec
    images: int
    bad_files: dict[str, str]
    written: int
    reused: int


@dataclass
class _Job:
    """One HQ image: everything a (possibly remote) worker needs to write its HQ and all its LQs."""

    index: int
    source: str
    rel: str
    out_rel: str
    out: str
    hq_size: int
    seed: int
    splits: list[tuple[int, str, DegradationSpec]]
    old: dict[str, dict | None]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> str | None:
    try:
        return _sha256(path.read_bytes())
    except OSError:
        return None


def _encode_png(rgb: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]), _PNG_OPTIONS)
    if not ok:
        raise OSError(f"OpenCV could not PNG-encode a {rgb.shape} image")
    return buffer.tobytes()


def _write_atomic(path: Path, data: bytes) -> None:
    """tmp file + os.replace: an interrupted run never leaves a half-written file under the real name.
    The tmp name starts with '.', which `list_images` ignores."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _reusable(entry: dict | None, path: Path, sha_key: str, **expected: Any) -> bool:
    """An output is kept when its manifest entry matches what we would write and the file on disk still
    has the recorded hash (`entry[sha_key]`)."""
    if not entry or any(entry.get(key) != value for key, value in expected.items()):
        return False
    return _file_sha256(path) == entry.get(sha_key)


def _build_image(job: _Job) -> dict[str, Any]:
    """Write (or verify) image `job.index`'s HQ and every split's LQ; return its manifest entries."""
    source = Path(job.source)
    try:
        source_sha = _sha256(source.read_bytes())
    except OSError as err:
        return {"bad": f"unreadable: {type(err).__name__}: {err}"}
    out = Path(job.out)
    hq_path = out / HQ_DIR / job.out_rel
    seeds = {name: [job.seed, k, job.index] for k, name, _ in job.splits}

    def lq_path(name: str) -> Path:
        return out / name / LQ_DIR / job.out_rel

    # Fast path (a resumed run): everything matches the manifest, so nothing is decoded.
    old_hq = job.old.get(HQ_DIR)
    if _reusable(old_hq, hq_path, "hq_sha256", source_sha256=source_sha, index=job.index) and all(
        _reusable(
            job.old.get(name),
            lq_path(name),
            "lq_sha256",
            seed=seeds[name],
            source_sha256=source_sha,
            hq_sha256=old_hq["hq_sha256"],
        )
        for _, name, _ in job.splits
    ):
        return {
            "hq": old_hq,
            "splits": {name: job.old[name] for _, name, _ in job.splits},
            "written": 0,
            "reused": 1 + len(job.splits),
        }

    try:
        hq = np.array(center_crop_resize(load_pil(source), job.hq_size))
    except BadImageError as err:
        return {"bad": err.reason}
    written = reused = 0
    hq_png = _encode_png(hq)
    hq_sha = _sha256(hq_png)
    if _file_sha256(hq_path) == hq_sha:
        reused += 1
    else:
        _write_atomic(hq_path, hq_png)
        written += 1
    hq_entry = {
        "source": job.rel,
        "source_sha256": source_sha,
        "index": job.index,
        "hq": f"{HQ_DIR}/{job.out_rel}",
        "hq_sha256": hq_sha,
    }
    splits: dict[str, dict[str, Any]] = {}
    for _, name, split in job.splits:
        old = job.old.get(name)
        if _reusable(old, lq_path(name), "lq_sha256", seed=seeds[name], source_sha256=source_sha, hq_sha256=hq_sha):
            splits[name] = old
            reused += 1
            continue
        lq, params = degrade_with_seed(hq, split, seeds[name])
        lq_png = _encode_png(lq)
        _write_atomic(lq_path(name), lq_png)
        written += 1
        splits[name] = {
            "source": job.rel,
            "source_sha256": source_sha,
            "hq_sha256": hq_sha,
            "lq": f"{name}/{LQ_DIR}/{job.out_rel}",
            "lq_sha256": _sha256(lq_png),
            "seed": seeds[name],
            "params": params.to_dict(),
        }
    return {"hq": hq_entry, "splits": splits, "written": written, "reused": reused}


def _worker_init() -> None:
    cv2.setNumThreads(1)  # one process per core already; avoid oversubscription


def _read_manifest(out: Path) -> dict | None:
    path = out / MANIFEST
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def _remove_outputs(out: Path, split_names: Sequence[str]) -> None:
    """Delete what a build writes (hq/, the named split folders, the manifest), never anything else."""
    for name in (HQ_DIR, *split_names):
        folder = out / name
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder)
    (out / MANIFEST).unlink(missing_ok=True)


def _prepare_out(out: Path, spec: TestSetSpec, overwrite: bool) -> dict | None:
    """Return the existing manifest when it was built from the same spec; refuse or clear otherwise."""
    new_hash = spec.spec_hash()
    try:
        old = _read_manifest(out)
    except (OSError, ValueError) as err:
        if not overwrite:
            raise ValueError(
                f"{out / MANIFEST} is unreadable ({err}); use overwrite=True (--overwrite) to rebuild {out}"
            ) from None
        old = {}
    if old is not None:
        if old.get("spec_hash") == new_hash:
            return old
        old_name, old_hash = old.get("name", "?"), old.get("spec_hash", "?")
        if not overwrite:
            raise ValueError(
                f"{out} already holds a test set built from spec '{old_name}' (hash {old_hash}), not from "
                f"'{spec.name}' (hash {new_hash}); use another folder or overwrite=True (--overwrite)"
            )
        log.warning("overwriting test set %s built from spec '%s' (%s)", out, old_name, old_hash)
        old_splits = list((old.get("splits") or {}).keys())
        _remove_outputs(out, [*old_splits, *spec.splits])
    elif out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ValueError(
                f"{out} is not empty and has no {MANIFEST}, so it was not built by build_testset; "
                "use an empty or new folder, or overwrite=True (--overwrite)"
            )
        _remove_outputs(out, list(spec.splits))
    return None


def _created_with() -> dict[str, str]:
    """Versions that can change output bytes (OpenCV resize/JPEG, PIL resize, zlib via OpenCV)."""
    return {"lightning_dr2": __version__, "numpy": np.__version__, "opencv": cv2.__version__, "pillow": PIL.__version__}


def _dumps(obj: Any, indent: int = 0, inline: int = 800) -> str:
    """JSON with one line per small object (one image's entry, one split's spec) and indented big ones:
    `indent=2` alone makes a 3,000-image manifest tens of MB of one-number lines."""
    compact = json.dumps(obj, ensure_ascii=False)
    if not isinstance(obj, dict) or not obj or (indent and len(compact) <= inline):
        return compact
    pad = "  " * (indent + 1)
    items = [f"{pad}{json.dumps(k)}: {_dumps(v, indent + 1, inline)}" for k, v in obj.items()]
    return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"


def _write_manifest(out: Path, manifest: dict) -> None:
    _write_atomic(out / MANIFEST, (_dumps(manifest) + "\n").encode())


def _build(
    hq_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    spec: TestSetSpec | str | os.PathLike,
    overwrite: bool = False,
    limit: int | None = None,
    workers: int = 0,
    progress: bool = True,
) -> BuildReport:
    spec = spec if isinstance(spec, TestSetSpec) else load_spec(spec)
    hq_dir, out = Path(hq_dir), Path(out_dir)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be an integer >= 0, got {workers!r}")
    sources = list_images(hq_dir)[:limit]
    rels = [p.relative_to(hq_dir).as_posix() for p in sources]
    out_rels = [PurePosixPath(rel).with_suffix(".png").as_posix() for rel in rels]
    first: dict[str, str] = {}
    for rel, out_rel in zip(rels, out_rels, strict=True):
        if out_rel in first:
            raise ValueError(f"{hq_dir}: {first[out_rel]} and {rel} would both be written as {out_rel}; rename one")
        first[out_rel] = rel

    old = _prepare_out(out, spec, overwrite) or {}
    out.mkdir(parents=True, exist_ok=True)
    old_images: dict[str, dict] = dict(old.get("images") or {})
    old_splits = {name: dict((old.get("splits") or {}).get(name, {}).get("images") or {}) for name in spec.splits}
    # Entries of images outside this run (beyond `limit`, or no longer in the folder) stay listed: their
    # files are still on disk, built from the same spec.
    images = dict(old_images)
    split_images = {name: dict(old_splits[name]) for name in spec.splits}
    bad: dict[str, str] = {}
    manifest: dict[str, Any] = {
        "format": BUILDER_VERSION,
        "name": spec.name,
        "spec_hash": spec.spec_hash(),
        "spec": spec.to_dict(),
        "created_with": _created_with(),
        "hq_dir": str(hq_dir),
        "complete": False,
    }

    def save(complete: bool) -> None:
        manifest["complete"] = complete
        manifest["n_images"] = len(images)
        manifest["bad_files"] = dict(sorted(bad.items()))
        manifest["images"] = dict(sorted(images.items()))
        manifest["splits"] = {
            name: {"index": k, "images": dict(sorted(split_images[name].items()))} for k, name in enumerate(spec.splits)
        }
        _write_manifest(out, manifest)

    save(complete=False)  # the folder is claimed by this spec from the start, even if interrupted
    split_list = [(k, name, split) for k, (name, split) in enumerate(spec.splits.items())]
    jobs = [
        _Job(
            index=i,
            source=str(path),
            rel=rel,
            out_rel=out_rel,
            out=str(out),
            hq_size=spec.hq_size,
            seed=spec.seed,
            splits=split_list,
            old={HQ_DIR: old_images.get(out_rel), **{name: old_splits[name].get(out_rel) for name in spec.splits}},
        )
        for i, (path, rel, out_rel) in enumerate(zip(sources, rels, out_rels, strict=True))
    ]
    written = reused = 0
    bar = tqdm(total=len(jobs), desc=f"test set {spec.name} -> {out}", unit="img", disable=not progress)
    # "spawn": a forked child deadlocks in OpenCV when the parent has already used OpenCV's thread pool.
    pool = (
        ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init)
        if workers > 0
        else None
    )
    try:
        results = pool.map(_build_image, jobs, chunksize=1) if pool else map(_build_image, jobs)
        last_save = time.monotonic()
        for job, result in zip(jobs, results, strict=True):
            bar.update()
            if "bad" in result:
                bad[job.rel] = result["bad"]
                log.warning("skipping bad HQ image %s: %s", job.source, result["bad"])
                images.pop(job.out_rel, None)
                for name in spec.splits:
                    split_images[name].pop(job.out_rel, None)
                continue
            images[job.out_rel] = result["hq"]
            for name, entry in result["splits"].items():
                split_images[name][job.out_rel] = entry
            written += result["written"]
            reused += result["reused"]
            if time.monotonic() - last_save > _MANIFEST_FLUSH_S:
                save(complete=False)
                last_save = time.monotonic()
    except BaseException:
        save(complete=False)  # keep what was done (Ctrl-C, a full disk): the rerun resumes from here
        raise
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    save(complete=True)
    if bad:
        log.warning("%s: skipped %d bad HQ image(s), listed under bad_files in %s", hq_dir, len(bad), out / MANIFEST)
    log.info("test set %s in %s: %d files written, %d already present", spec.name, out, written, reused)
    return BuildReport(out=out, spec=spec, images=len(jobs) - len(bad), bad_files=bad, written=written, reused=reused)


def build_testset(
    hq_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    spec: TestSetSpec | str | os.PathLike,
    overwrite: bool = False,
    limit: int | None = None,
    workers: int = 0,
    progress: bool = True,
) -> Path:
    """Build (or resume) a benchmark set from the HQ faces in `hq_dir`; return `out_dir`.

    `spec` is a `TestSetSpec`, a YAML path or a name in `experiments/testsets/`. Bad HQ files are skipped,
    logged and listed in the manifest. `limit` takes the first N images of the sorted listing (seeds are
    unchanged, so a later full build extends it). `workers` > 0 builds in that many processes with
    identical bytes. A folder built from another spec is refused unless `overwrite`, which deletes that
    build's outputs (hq/, its split folders, manifest.json) and nothing else.
    """
    return _build(hq_dir, out_dir, spec, overwrite, limit, workers, progress).out


def testset_main(
    hq: str, out: str, spec: str, overwrite: bool = False, limit: int | None = None, workers: int = 0
) -> int:
    """CLI entry (`python -m lightning_dr2 testset --hq data/celeba_test_hq --out data/celeba_test
    --spec celeba_test`): build, then print one summary line per split."""
    report = _build(hq, out, spec, overwrite=overwrite, limit=limit, workers=workers, progress=True)
    print(
        f"{report.out}: test set '{report.spec.name}' (spec {report.spec.spec_hash()[:12]}), "
        f"{len(report.spec.splits)} splits x {report.images} images at {report.spec.hq_size}px; "
        f"{report.written} files written, {report.reused} already present"
    )
    for name in report.spec.splits:
        print(f"  {name}: {report.out / name / LQ_DIR}")
    if report.bad_files:
        print(f"  {len(report.bad_files)} bad HQ file(s) skipped (see bad_files in {report.out / MANIFEST})")
    return 0


testset_main.__test__ = False  # pytest would otherwise collect it from any test module importing it


# ------------------------------------------------------------------------------------------ reading


def list_splits(testset_dir: str | os.PathLike) -> list[str]:
    """Split names of a built set: manifest order first, then any other folder holding an `lq/` folder."""
    root = Path(testset_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"test set folder {root} does not exist or is not a folder")
    on_disk = sorted(d.name for d in root.iterdir() if d.name != HQ_DIR and (d / LQ_DIR).is_dir())
    try:
        ordered = list((_read_manifest(root) or {}).get("splits") or {})
    except (OSError, ValueError):
        ordered = []
    return [name for name in ordered if name in on_disk] + [name for name in on_disk if name not in ordered]


def _drop_bad(files: dict[str, list[Path]], check: bool, workers: int) -> dict[str, str]:
    """Decode every file up front (when `check`) and return {name: reason} for the items to skip."""
    if not check:
        return {}
    reasons = scan([p for paths in files.values() for p in paths], workers=workers, progress=False)
    skipped = {}
    for name, paths in files.items():
        bad = [f"{p}: {reasons[str(p)]}" for p in paths if str(p) in reasons]
        if bad:
            skipped[name] = "; ".join(bad)
    return skipped


class PairedSplit(Dataset):
    """One split of a built set as {"lq": (3,H,W) in [-1,1], "hq": (3,H,W), "name": relpath, "index": i}.

    Pairs are matched by relative path (`<split>/lq/<rel>` with `hq/<rel>`). With `check` (default) every
    file is decoded once here and pairs with a missing or undecodable file are skipped, logged and listed
    in `skipped`, so no metric is silently computed on a substitute image; with `check=False` a file that
    fails later raises `BadImageError` naming it.
    """

    def __init__(self, testset_dir: str | os.PathLike, split: str, check: bool = True, workers: int = 0):
        self.root = Path(testset_dir)
        self.split = split
        if not self.root.is_dir():
            raise FileNotFoundError(f"test set folder {self.root} does not exist or is not a folder")
        lq_dir = self.root / split / LQ_DIR
        if not lq_dir.is_dir():
            raise FileNotFoundError(
                f"test set {self.root} has no split '{split}' (no folder {lq_dir}); "
                f"splits there: {list_splits(self.root)}"
            )
        hq_dir = self.root / HQ_DIR
        self.skipped: dict[str, str] = {}
        pairs: dict[str, list[Path]] = {}
        for lq in list_images(lq_dir):
            rel = lq.relative_to(lq_dir).as_posix()
            hq = hq_dir / rel
            if hq.is_file():
                pairs[rel] = [lq, hq]
            else:
                self.skipped[rel] = f"no HQ file {hq}"
        self.skipped.update(_drop_bad(pairs, check, workers))
        self.pairs = [(rel, lq, hq) for rel, (lq, hq) in pairs.items() if rel not in self.skipped]
        total = len(self.pairs) + len(self.skipped)
        if self.skipped:
            log.warning(
                "%s: skipped %d of %d LQ/HQ pairs (missing or bad files): %s",
                lq_dir,
                len(self.skipped),
                total,
                "; ".join(f"{k}: {v}" for k, v in list(self.skipped.items())[:5]),
            )
        if not self.pairs:
            raise ValueError(f"no readable LQ/HQ pairs in {lq_dir} ({total} LQ files, all skipped)")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rel, lq, hq = self.pairs[index]
        return {
            "lq": image_to_tensor(read_image(lq)),
            "hq": image_to_tensor(read_image(hq)),
            "name": rel,
            "index": index,
        }


class RealLQSet(Dataset):
    """A folder of real LQ faces without ground truth (WIDER-Critical, ...) as {"lq", "name", "index"}.

    Same skip rules as `PairedSplit`: undecodable files are found up front (when `check`), logged, listed
    in `skipped` and left out.
    """

    def __init__(self, folder: str | os.PathLike, check: bool = True, workers: int = 0):
        self.root = Path(folder)
        files = {p.relative_to(self.root).as_posix(): [p] for p in list_images(self.root)}
        self.skipped = _drop_bad(files, check, workers)
        self.files = [(rel, paths[0]) for rel, paths in files.items() if rel not in self.skipped]
        if self.skipped:
            log.warning(
                "%s: skipped %d of %d bad LQ image(s): %s",
                self.root,
                len(self.skipped),
                len(files),
                "; ".join(list(self.skipped.values())[:5]),
            )
        if not self.files:
            raise ValueError(f"no readable images in {self.root} ({len(files)} files, all bad)")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rel, path = self.files[index]
        return {"lq": image_to_tensor(read_image(path)), "name": rel, "index": index}
