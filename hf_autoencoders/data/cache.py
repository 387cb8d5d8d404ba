"""The decoded-image cache: a split decoded once per machine into a uint8 `.npy` file that every process maps.

Each entry is two files in the cache folder (default `<HF_DATASETS_CACHE>/hf_autoencoders_decoded`, about
N x C x H x W bytes per split):
- `<key>.npy`: the images, uint8 (N, C, H, W), memory-mapped (`np.load(mmap_mode="c")`), so the processes of a
  machine share one copy through the page cache and only the pages a process touches count in its memory;
- `<key>.json`: the manifest: format version, what was decoded (dataset fingerprint, rows, column, size, channels,
  filter), the array's shape and header size, the SHA-256 of its bytes, and the rows skipped as unreadable.

The key hashes what was decoded, so a changed dataset, size or decoder gets a new entry. Both files are written to
temporary names and renamed (atomic); the first process to build an entry holds `<key>.lock` while the others wait.
A build killed half-way leaves its temporary files; the next build in the folder removes them
(`results.remove_stale_partials`: only those of processes that are gone).
An entry is used only if its manifest matches, its file has exactly the announced size and its bytes hash to the
recorded SHA-256 (checked at every load, about 1 s per GB); otherwise it is rebuilt, never read.
"""

import hashlib
import io
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import datasets
import numpy as np
from filelock import FileLock

from ..results import fingerprint, partial_path, remove_stale_partials

logger = logging.getLogger(__name__)
CACHE_VERSION = 2  # bump when decoding changes (2: 16-bit and float images scaled, not clipped)
CACHE_FOLDER = "hf_autoencoders_decoded"
_READ_CHUNK = 16 * 2**20


def default_cache_dir() -> Path:
    """`<HF_DATASETS_CACHE>/hf_autoencoders_decoded` (move it with the HF_DATASETS_CACHE environment variable or
    --decoded_cache_dir)."""
    return Path(datasets.config.HF_DATASETS_CACHE) / CACHE_FOLDER


class DecodedCache:
    """One cache entry: `load()` maps a valid entry (or returns None), `build(fill)` writes it."""

    def __init__(self, directory: str | os.PathLike, what: dict):
        self.what = json.loads(json.dumps(what))  # as it reads back from the manifest
        key = fingerprint("decoded images", CACHE_VERSION, self.what)
        directory = Path(directory)
        self.data_path = directory / f"{key[:24]}.npy"
        self.manifest_path = directory / f"{key[:24]}.json"
        self.lock_path = directory / f"{key[:24]}.lock"

    def load(self) -> tuple[np.ndarray, list[int]] | None:
        """(the memory-mapped images, the skipped indices) of a valid entry; None (and a log line saying why, for an
        entry that exists but is not valid) otherwise."""
        if not self.manifest_path.is_file() and not self.data_path.is_file():
            return None
        problem = self._check()
        if isinstance(problem, str):
            logger.warning("The decoded-image cache %s is %s; it is rebuilt.", self.data_path, problem)
            return None
        return problem

    def _check(self):
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            return "missing its manifest (an interrupted write)"
        except (OSError, ValueError) as err:
            return f"unreadable ({type(err).__name__}: {err})"
        if manifest.get("version") != CACHE_VERSION or manifest.get("what") != self.what:
            return "stale (written by another version or for other images)"
        try:
            shape, offset = tuple(manifest["shape"]), int(manifest["header_bytes"])
            expected = offset + int(np.prod(shape))
            size = self.data_path.stat().st_size
        except (KeyError, TypeError, ValueError, OSError) as err:
            return f"incomplete ({type(err).__name__}: {err})"
        if size != expected:
            return f"truncated or damaged ({size} bytes instead of {expected})"
        if _sha256(self.data_path, offset) != manifest.get("sha256"):
            return "corrupted (its bytes do not match the recorded SHA-256)"
        try:
            images = np.load(self.data_path, mmap_mode="c")
        except (OSError, ValueError) as err:
            return f"unreadable ({type(err).__name__}: {err})"
        if images.shape != shape or images.dtype != np.uint8 or images.offset != offset:
            return "inconsistent with its manifest"
        return images, list(manifest.get("skipped", []))

    def build(self, shape: tuple[int, ...], decode: Callable[[Callable], list[int]], source: str) -> tuple:
        """Write the entry, unless another process did while this one waited for the lock, and map it.
        `decode(write)` hands the decoded images, uint8 arrays (n, C, H, W) in order, to `write` and returns the
        indices it skipped; they go straight to the file (not through this process's memory). Returns (images,
        skipped) as `load` does."""
        self.data_path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.lock_path)):
            found = self.load()
            if found is not None:
                return found
            for leftover in remove_stale_partials(self.data_path.parent):
                logger.info("Removed %s, left by a cache build that was killed.", leftover)
            partial = partial_path(self.data_path)
            rewritten = partial_path(self.data_path.with_suffix(".kept.npy"))
            try:
                digest, count = hashlib.sha256(), 0
                with open(partial, "wb") as file:
                    header_bytes = _write_header(file, shape)

                    def write(arrays: np.ndarray) -> None:
                        nonlocal count
                        data = np.ascontiguousarray(arrays, dtype=np.uint8).tobytes()
                        file.write(data)
                        digest.update(data)
                        count += len(arrays)

                    skipped = decode(write)
                    file.flush()
                    os.fsync(file.fileno())
                final_shape = [count, *shape[1:]]
                if count != shape[0]:  # images were skipped: the header must announce fewer
                    with open(partial, "rb") as source_file, open(rewritten, "wb") as file:
                        header_bytes = _write_header(file, final_shape)
                        source_file.seek(_header_size(shape))
                        shutil.copyfileobj(source_file, file, _READ_CHUNK)
                        file.flush()
                        os.fsync(file.fileno())
                    os.replace(rewritten, partial)
                manifest = {
                    "version": CACHE_VERSION, "what": self.what, "source": source, "shape": final_shape,
                    "dtype": "uint8", "header_bytes": header_bytes, "sha256": digest.hexdigest(), "skipped": skipped,
                }
                os.replace(partial, self.data_path)  # atomic: a reader never sees half a file
                temporary = partial_path(self.manifest_path)
                temporary.write_text(json.dumps(manifest) + "\n")
                _fsync(temporary)
                os.replace(temporary, self.manifest_path)
            finally:
                for leftover in (partial, rewritten):
                    leftover.unlink(missing_ok=True)
            logger.info("Decoded %s images into %s.", count, self.data_path)
            found = self.load()
            if found is None:
                raise OSError(f"The decoded-image cache {self.data_path} could not be read back after writing it.")
            return found


def _write_header(file, shape) -> int:
    """Write the .npy header of a C-ordered uint8 array of `shape`; return its size in bytes."""
    np.lib.format.write_array_header_1_0(file, {"descr": "|u1", "fortran_order": False, "shape": tuple(shape)})
    return file.tell()


def _header_size(shape) -> int:
    buffer = io.BytesIO()
    return _write_header(buffer, shape)


def _sha256(path: Path, offset: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        file.seek(offset)
        buffer = bytearray(_READ_CHUNK)
        view = memoryview(buffer)
        while n := file.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    with open(path, "rb+") as file:
        os.fsync(file.fileno())
