"""Building benchmark test sets from a folder of HQ faces and a spec (`testset_spec`), into the layout of `testsets`.

Everything is reproducible from the manifest: the LQ of image i in split k is
`degrade_with_seed(hq, split_spec, seed=(spec.seed, k, i))`, with i the position in the sorted HQ listing,
so the bytes depend neither on the worker count nor on interruptions. PNGs are encoded with fixed options
(no metadata, `io.encode_png`) and written atomically; a rerun skips files whose hash matches the manifest
and refuses a folder built from another spec.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np
import PIL
from tqdm.auto import tqdm

from lightning_dr2 import __version__
from lightning_dr2.datasets.degradations import DegradationSpec, degrade_with_seed
from lightning_dr2.datasets.testset_spec import BUILDER_VERSION, TestSetSpec, load_spec
from lightning_dr2.datasets.testsets import HQ_DIR, LQ_DIR, MANIFEST, audit_testset, folder_of, read_manifest
from lightning_dr2.files import atomic_write
from lightning_dr2.image_io import BadImageError, center_crop_resize, encode_png, list_images, load_pil
from lightning_dr2.outputs import LOCK_NAME, check_output_location, claim_output
from lightning_dr2.runinfo import record_run_info

log = logging.getLogger(__name__)

_MANIFEST_FLUSH_S = 30.0  # how often a long build saves its progress, so an interruption loses little


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
    hq_png = encode_png(hq)
    hq_sha = _sha256(hq_png)
    if _file_sha256(hq_path) == hq_sha:
        reused += 1
    else:
        atomic_write(hq_path, hq_png)
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
        lq_png = encode_png(lq)
        atomic_write(lq_path(name), lq_png)
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


def _sources(hq_dir: Path, out: Path) -> list[Path]:
    """The HQ faces to build from, never the set's own outputs: `out` inside `hq_dir` is left out of the
    listing, `hq_dir` inside `out` (a rebuild from its own files) is refused."""
    if hq_dir.resolve().is_relative_to(out.resolve()):
        raise ValueError(f"--hq {hq_dir} lies inside --out {out}: a test set is never built from its own outputs")
    sources = list_images(hq_dir)
    kept = [p for p in sources if not p.resolve().is_relative_to(out.resolve())]
    if len(kept) < len(sources):
        log.warning(
            "%d files under --out %s (inside --hq) are outputs, not inputs: left out", len(sources) - len(kept), out
        )
    return kept


def _settle_unlisted(out: Path, manifest: dict, remove: bool) -> dict[str, list[str]]:
    """Make the set's files equal its manifest: files in its image folders that the manifest does not list
    (stale outputs of an earlier build, strays) are removed with `remove` (--overwrite), else reported and
    returned for the manifest's "unlisted" entry. A listed file missing after a build is an error."""
    audit = audit_testset(out, manifest)
    missing = {part: names for part, names in audit.missing.items() if names}
    if missing:
        raise RuntimeError(f"{out}: files listed in {MANIFEST} are missing after the build: {missing}; rerun the build")
    unlisted = {part: names for part, names in audit.unlisted.items() if names}
    for part, names in unlisted.items():
        folder = folder_of(out, part)
        if remove:
            for name in names:
                (folder / name).unlink()
            log.warning("%s: removed %d stale file(s) not in %s: %s", folder, len(names), MANIFEST, names[:5])
        else:
            log.warning(
                "%s: %d file(s) not in %s (from an earlier build?): %s; rebuild with --overwrite to remove them",
                folder,
                len(names),
                MANIFEST,
                names[:5],
            )
    return {} if remove else unlisted


def _worker_init() -> None:
    cv2.setNumThreads(1)  # one process per core already; avoid oversubscription


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
        old = read_manifest(out)
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
    elif out.is_dir() and any(p.name != LOCK_NAME for p in out.iterdir()):  # this build's own lock aside
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
    atomic_write(out / MANIFEST, (_dumps(manifest) + "\n").encode())


def build_testset(
    hq_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    spec: TestSetSpec | str | os.PathLike,
    overwrite: bool = False,
    limit: int | None = None,
    workers: int = 0,
    progress: bool = True,
) -> BuildReport:
    """Build (or resume) a benchmark set from the HQ faces in `hq_dir` into `out_dir`; report what was done.

    `spec` is a `TestSetSpec`, a YAML path or a name in `experiments/testsets/`. Bad HQ files are skipped,
    logged and listed in the manifest. `limit` takes the first N images of the sorted listing (seeds are
    unchanged, so a later full build extends it). `workers` > 0 builds in that many processes with
    identical bytes. A folder built from another spec is refused unless `overwrite`, which deletes that
    build's outputs (hq/, its split folders, manifest.json) and nothing else.
    """
    spec = spec if isinstance(spec, TestSetSpec) else load_spec(spec)
    hq_dir, out = Path(hq_dir), Path(out_dir)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be an integer >= 0, got {workers!r}")
    sources = _sources(hq_dir, out)[:limit]
    rels = [p.relative_to(hq_dir).as_posix() for p in sources]
    out_rels = [PurePosixPath(rel).with_suffix(".png").as_posix() for rel in rels]
    first: dict[str, str] = {}
    for rel, out_rel in zip(rels, out_rels, strict=True):
        if out_rel in first:
            raise ValueError(f"{hq_dir}: {first[out_rel]} and {rel} would both be written as {out_rel}; rename one")
        first[out_rel] = rel

    claim_output(check_output_location(out, "--out"), "--out")  # one build per folder at a time
    old = _prepare_out(out, spec, overwrite) or {}
    record_run_info(out)
    old_images: dict[str, dict] = dict(old.get("images") or {})
    old_splits = {name: dict((old.get("splits") or {}).get(name, {}).get("images") or {}) for name in spec.splits}
    # Entries of images outside this run (beyond `limit`, or no longer in the folder) stay listed: their
    # files are still on disk, built from the same spec. `overwrite` makes the set exactly this run's images;
    # the earlier build's other files are then removed by the final audit.
    images = {} if overwrite else dict(old_images)
    split_images = {name: {} if overwrite else dict(old_splits[name]) for name in spec.splits}
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
    manifest["unlisted"] = _settle_unlisted(out, manifest, remove=overwrite)
    _write_manifest(out, manifest)
    if bad:
        log.warning("%s: skipped %d bad HQ image(s), listed under bad_files in %s", hq_dir, len(bad), out / MANIFEST)
    log.info("test set %s in %s: %d files written, %d already present", spec.name, out, written, reused)
    return BuildReport(out=out, spec=spec, images=len(jobs) - len(bad), bad_files=bad, written=written, reused=reused)
