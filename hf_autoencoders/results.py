"""Results files: JSON that every reader can parse, and folders, written so that a crash never leaves half of one
(`write_text`, `write_folder`); the one scheme of cache keys (`fingerprint`); and the partial files of atomic writes
(`partial_path`), which a writer killed half-way leaves behind and the next writer removes (`remove_stale_partials`).

Python's `json` writes NaN and Infinity as bare tokens that are not JSON; here a non-finite float becomes `null`
(a metric that could not be measured), tensors and numpy numbers become plain numbers, and paths strings.
"""

import hashlib
import json
import math
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]  # this machine, in partial files' names
_PARTIAL = re.compile(r"\.(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)\.partial$")


def jsonable(value):
    """`value` with every non-finite float replaced by None and tensors, numpy values and paths made plain."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # torch tensors, numpy arrays and scalars
        return jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    return getattr(value, "value", str(value))  # enums such as SchedulerType by their value


def dumps(value, indent: int | None = 2) -> str:
    """Strict JSON text of `value` (see `jsonable`)."""
    return json.dumps(jsonable(value), indent=indent, allow_nan=False)


def write_text(path, text: str) -> Path:
    """Write `text` to `path` atomically: a temporary file, then a rename, so a reader sees all of it or none."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(text)
    os.replace(partial, path)
    return path


def write_json(path, value) -> Path:
    """Write `value` as strict JSON to `path` atomically (`write_text`)."""
    return write_text(path, dumps(value) + "\n")


def fingerprint(*parts) -> str:
    """The key of a cache entry: the SHA-256 (hex) of `parts`, in order. A part that is an array (a torch tensor or a
    numpy array) counts by its dtype, shape and bytes, `bytes` as they are, anything else as canonical JSON (sorted
    keys, `jsonable` values), so that the same inputs give the same key in every process, run and machine. Each
    cache keeps its own format version among its parts."""
    digest = hashlib.sha256()
    for part in parts:
        if hasattr(part, "detach"):  # a torch tensor: its bytes, whatever its dtype (numpy has no bfloat16)
            import torch

            part = part.detach().cpu().contiguous()
            header, part = f"{part.dtype}{tuple(part.shape)}", part.reshape(-1).view(torch.uint8).numpy()
        elif hasattr(part, "dtype") and hasattr(part, "tobytes"):  # a numpy array
            header = f"{part.dtype}{part.shape}"
        else:
            header = None
        data = (part.tobytes() if header else part if isinstance(part, bytes)
                else json.dumps(jsonable(part), sort_keys=True, separators=(",", ":")).encode())
        for piece in ((header or "").encode(), data):
            digest.update(len(piece).to_bytes(8, "little") + piece)  # length-prefixed: parts never run together
    return digest.hexdigest()


def check_destination(output_dir, overwrite: bool = False) -> None:
    """Refuse an output folder that is a file, or that holds files (unless `overwrite`), before any work."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"{output_dir} exists and is not a folder; choose another output folder.")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise ValueError(f"{output_dir} already holds files; choose an empty or new folder (or overwrite it "
                         "explicitly).")


def write_folder(output_dir, write, overwrite: bool = False) -> Path:
    """Call `write(folder)` on a temporary folder beside `output_dir`, then rename it into place, so that
    `output_dir` holds all of it or nothing of it; an `output_dir` holding files is refused unless `overwrite`
    (it is then replaced only once the new folder is whole)."""
    output_dir = Path(output_dir)
    check_destination(output_dir, overwrite)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=f".{output_dir.name}.partial-"))
    try:
        write(partial)
        old = None
        if output_dir.exists():
            old = Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=f".{output_dir.name}.old-"))
            os.replace(output_dir, old / output_dir.name)
        os.replace(partial, output_dir)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return output_dir


def partial_path(path, pid: int | None = None) -> Path:
    """Where `path` is written before it is renamed into place (atomic): beside it, `<name>.<host>-<pid>.partial`,
    named after this machine and process (`pid`, default this one) so that `remove_stale_partials` can tell a dead
    writer's leftovers from a live writer's work."""
    path = Path(path)
    return path.with_name(f"{path.name}.{_HOST}-{os.getpid() if pid is None else pid}.partial")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, and belongs to someone else
        return True
    return True


def remove_stale_partials(folder) -> list[Path]:
    """Delete the partial files (`partial_path`) in `folder` whose writer, a process of this machine, is gone: what a
    cache build killed half-way left behind. Never a live process's file, nor another machine's (a shared folder),
    nor anything on Windows (where no such check is safe). Returns the paths removed."""
    removed = []
    if os.name != "posix" or not Path(folder).is_dir():
        return removed
    for path in Path(folder).glob("*.partial"):
        match = _PARTIAL.search(path.name)
        if match and match["host"] == _HOST and not _alive(int(match["pid"])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
