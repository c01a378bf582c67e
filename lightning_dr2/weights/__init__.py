"""Weight files: the one place where they are registered (`registry`), looked up (`lookup`), verified
(`checksum`), listed (`listing`) and fetched (`download`).

Released weights cannot ship with the code (licences, size), so every part of the framework asks this
package for them by file name. A missing file raises `MissingWeightsError` naming the file, every folder
searched and how to get it. Nothing downloads implicitly: only `fetch` (`python -m lightning_dr2 weights
--fetch NAME`) does, and only from the direct URLs in `WEIGHTS`; it verifies the sha256 before installing.
"""

from lightning_dr2.weights.checksum import hash_matches, sha256sum, verify
from lightning_dr2.weights.download import ChecksumError, FetchError, fetch, fetch_each
from lightning_dr2.weights.listing import format_needed, format_table, list_weights, missing_files, needed_rows
from lightning_dr2.weights.lookup import (
    ENV_VAR,
    MissingWeightsError,
    default_dest,
    find_weight,
    how_to_get,
    missing_message,
    search_dirs,
    torch_hub_checkpoints,
)
from lightning_dr2.weights.registry import WEIGHTS, WeightFile

__all__ = [
    "ENV_VAR",
    "WEIGHTS",
    "ChecksumError",
    "FetchError",
    "MissingWeightsError",
    "format_needed",
    "needed_rows",
    "WeightFile",
    "default_dest",
    "fetch",
    "fetch_each",
    "find_weight",
    "format_table",
    "hash_matches",
    "how_to_get",
    "list_weights",
    "missing_files",
    "missing_message",
    "search_dirs",
    "sha256sum",
    "torch_hub_checkpoints",
    "verify",
]
