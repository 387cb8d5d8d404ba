"""Where a run writes and what it resumes from: the output-folder guard, the lock by which a run owns its folder for its
life, the refusal to write into a run's own input model, the choice of a complete checkpoint, and the check that a
resumed run trains the model its checkpoint holds."""

import contextlib
import json
import os
import socket
import sys
import tempfile
import time
import zipfile
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: runs are not locked
    fcntl = None

# What the Trainer needs to continue a run exactly where it stopped (rng_state.pth, or one per process).
CHECKPOINT_FILES = ("trainer_state.json", "config.json", "model.safetensors", "optimizer.pt", "scheduler.pt")
# Besides these and the model code (*.py), a Trainer's checkpoint-N holds one rng_state*.pth per process.
CHECKPOINT_EXTRAS = ("training_args.bin", "scaler.pt", "preprocessor_config.json", "generation_config.json",
                     "model.safetensors.index.json")


def resuming(resume_from_checkpoint) -> bool:
    """Whether --resume_from_checkpoint asks to resume ("false", "none" and "" do not)."""
    return bool(resume_from_checkpoint) and str(resume_from_checkpoint).strip().lower() not in ("false", "none", "0")


LOCK_FILE = ".hf_autoencoders.lock"  # in a run folder while a run owns it (`RunFolderLock`)


class RunFolderBusyError(FileExistsError):
    """Another run owns the output folder (`RunFolderLock`)."""


class RunFolderLock:
    """A run's ownership of its output folder, for the run's life: an exclusive `flock` on `LOCK_FILE` in the folder,
    which holds the owner's process id, host and command, so that a second run into the folder is refused with a
    message naming the first.

    The kernel releases the lock when its process ends, however it ends, so the file a killed run leaves behind
    blocks nobody; `release` removes it. (Removing it while holding the lock is safe: a run that opened the old file
    and then locks it sees that it is no longer the file in the folder, and starts over.)

        with RunFolderLock("outputs/vae"):
            ...  # nothing else that locks it writes into outputs/vae meanwhile
    """

    def __init__(self, output_dir):
        self.folder = Path(output_dir)
        self.path = self.folder / LOCK_FILE
        self._fd = None
        self._created_folder = False

    def acquire(self) -> "RunFolderLock":
        """Take the folder (creating it), or raise `RunFolderBusyError` naming the run that holds it."""
        self._created_folder = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if fcntl is None:
                break  # Windows: the file only names the run
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunFolderBusyError(self.busy_message()) from None
            except OSError:  # a file system without locks: the file only names the run
                break
            try:
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)  # its owner removed that file as we locked it: lock the one in the folder now
        command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300]
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                  "started": time.strftime("%Y-%m-%d %H:%M:%S"), "launch": _launch_id()}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(holder) + "\n").encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the folder up: remove the lock file (and the folder, if the run created it and left it empty)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None
        self._remove_created_folder()

    def _remove_created_folder(self) -> None:
        if self._created_folder:
            with contextlib.suppress(OSError):
                self.folder.rmdir()  # only when empty: a refused or failed run leaves no empty folder behind

    def holder(self) -> str | None:
        """'process PID on host HOST, started at TIME: COMMAND' as the lock file says, or None if it names nobody."""
        try:
            holder = json.loads(self.path.read_text())
            return f"process {holder['pid']} on host {holder['host']}, started {holder['started']}: {holder['command']}"
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def held_by_another_run(self) -> bool:
        """Whether a run other than this process's launch holds the lock: the main process of the same `torchrun`
        or `accelerate launch` (`_launch_id`) holds it for all of its processes."""
        if not self.held():
            return False
        try:
            launch = json.loads(self.path.read_text()).get("launch")
        except (OSError, ValueError, AttributeError):
            return True
        return launch is None or launch != _launch_id()

    def busy_message(self) -> str:
        holder = self.holder() or "which did not say who it is"
        return (f"output_dir {self.folder} is in use by another run ({holder}); wait for it to end, or choose another "
                "--output_dir. Nothing was changed.")

    def held(self) -> bool:
        """Whether a run holds the lock now (probed with a shared lock, taken and given back at once)."""
        if fcntl is None:
            return False
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    def __enter__(self) -> "RunFolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _launch_id() -> str | None:
    """What the processes of one multi-process launch share (torchrun's run id, or the rendezvous address that
    accelerate launch and torchrun set), or None for a single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    return os.environ.get("TORCHELASTIC_RUN_ID") or f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"


@contextlib.contextmanager
def output_dir_lock(output_dir, training_args=None):
    """Own `output_dir` for the block (`RunFolderLock`). Under `torchrun` or `accelerate launch` the processes that
    write the folder (`training_args.should_save`: the main one, or each machine's) take it before anything is
    written, and every process learns whether they got it, so that all of them stop alike when another run holds
    it."""
    lock = RunFolderLock(output_dir)
    error = None
    if training_args is None or training_args.should_save:
        try:
            lock.acquire()
        except RunFolderBusyError as err:
            error = str(err)
    world_size = 1 if training_args is None else training_args.world_size
    if world_size > 1:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            errors = [None] * world_size
            dist.all_gather_object(errors, error)
            error = next((e for e in errors if e), None)
    if error:
        lock.release()
        raise RunFolderBusyError(error)
    try:
        yield lock
    finally:
        lock.release()


def check_not_input(output_dir, inputs: dict[str, str | None]) -> None:
    """Refuse an output folder that is, holds or lies inside one of the run's input models (`inputs`: flag -> folder
    or Hub id), symlinks and relative paths resolved: a run never writes into the model it reads."""
    output = Path(output_dir).resolve()
    for flag, name in inputs.items():
        if not name or not (Path(name) / "config.json").is_file():
            continue  # a Hub id, nothing, or no model (which the loading refuses)
        source = Path(name).resolve()
        if output == source or output in source.parents or source in output.parents:
            where = ("is" if output == source else "holds" if output in source.parents else "lies inside")
            raise ValueError(f"--output_dir {output_dir} {where} the folder of {flag} {name} ({source}): the run "
                             f"would write into the model it reads. Choose an --output_dir outside {source}.")


def check_output_dir(output_dir: str, overwrite: bool, resume: bool = False,
                     how_to_resume: str = "continue the run with --resume_from_checkpoint latest") -> None:
    """Refuse to write into a folder another run owns (`RunFolderLock`), that already holds a user's files (unless
    `overwrite`, or `resume` into the run that lives there), or that cannot be written. Checked before any data is
    loaded; changes nothing."""
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"output_dir {output_dir} exists and is not a folder; choose another --output_dir.")
    lock = RunFolderLock(path)
    if lock.held_by_another_run():
        raise RunFolderBusyError(lock.busy_message())
    existing = sorted(p.name for p in path.iterdir() if p.name != LOCK_FILE) if path.is_dir() else []
    if existing and not (overwrite or resume):
        shown = ", ".join(existing[:5]) + (" ..." if len(existing) > 5 else "")
        raise FileExistsError(
            f"output_dir {output_dir} already holds files ({shown}). Nothing was changed. Choose a new --output_dir, "
            f"{how_to_resume}, or pass --overwrite_output_dir to write over it."
        )
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NotADirectoryError(f"output_dir {output_dir} cannot be created: {ancestor} is a file, not a folder.")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as err:
        raise PermissionError(f"output_dir {output_dir} cannot be written ({err.strerror}: {ancestor}); choose a "
                              "folder you can write to as --output_dir.") from None


def clear_previous_run(output_dir) -> list[str]:
    """Remove the run an --overwrite_output_dir run replaces, before it trains: its checkpoint-N folders (so that
    `latest` can never continue it, nor the Trainer's rotation of checkpoints delete the new run's), its model and
    model code, card, pictures and results (`hub.run_files`), so that the folder never mixes two runs. A user's other
    files stay; a checkpoint-N folder holding anything a checkpoint does not is refused, with nothing removed.
    Returns what was removed."""
    import shutil

    from ..hub import model_code_files, run_files

    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    checkpoints = [c for c in folder.glob("checkpoint-*") if c.is_dir() and c.name[11:].isdigit()]
    for checkpoint in checkpoints:
        known = set(CHECKPOINT_FILES + CHECKPOINT_EXTRAS) | set(model_code_files(checkpoint))
        foreign = [p.name for p in checkpoint.iterdir()
                   if p.name not in known and not (p.name.startswith("rng_state") and p.name.endswith(".pth"))]
        if foreign:
            raise FileExistsError(f"--overwrite_output_dir would remove {checkpoint}, which holds "
                                  f"{', '.join(foreign)}: files no checkpoint holds. Move them elsewhere first. "
                                  "Nothing was changed.")
    files = run_files(folder)
    for checkpoint in checkpoints:
        shutil.rmtree(checkpoint)
    for path in files:
        path.unlink(missing_ok=True)
    return sorted(p.name for p in [*checkpoints, *files])


def checkpoint_problems(folder: Path) -> list[str]:
    """What keeps `folder` from being a complete, loadable checkpoint (an empty list if nothing does): missing
    files, a truncated `model.safetensors`, unreadable optimizer, scheduler or RNG states, a broken trainer state."""
    from ..hub import safetensors_problem

    folder = Path(folder)
    problems = [f"no {name}" for name in CHECKPOINT_FILES if not (folder / name).is_file()]
    rng_states = sorted(folder.glob("rng_state*.pth"))
    if not rng_states:
        problems.append("no rng_state.pth")
    # the model's, and the tokenizer recipe's where the run had one (its discriminator and EMA weights, their states)
    for weights in ["model.safetensors", "discriminator.safetensors", "ema.safetensors"]:
        if (folder / weights).is_file() and safetensors_problem(folder / weights):
            problems.append(f"a truncated or corrupt {weights}")
    extra_states = [folder / name for name in ("discriminator_optimizer.pt", "discriminator_scheduler.pt",
                                               "last_good.pt")]
    for state in [folder / "optimizer.pt", folder / "scheduler.pt", *rng_states, *extra_states]:
        if state.is_file() and not _complete_zip(state):
            problems.append(f"a truncated or corrupt {state.name}")
    for name in ("trainer_state.json", "recipe_state.json"):
        if (folder / name).is_file():
            try:
                json.loads((folder / name).read_text())
            except (ValueError, UnicodeDecodeError):
                problems.append(f"a corrupt {name}")
    return problems


def _complete_zip(path: Path) -> bool:
    """torch.save writes zip archives: every member must be readable and pass its CRC."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return False


def _step(folder: Path) -> int:
    return int(folder.name.rsplit("-", 1)[-1])


def resolve_checkpoint(resume_from_checkpoint, output_dir: str) -> str | None:
    """The checkpoint to resume from, or None for a new run.

    "latest" (or "true", or the output_dir itself) picks the newest checkpoint-N in output_dir that is complete and
    loadable (`checkpoint_problems`), passing over one that a killed run left half-written. A checkpoint given by
    path must be complete and must belong to this run: it has to live in output_dir, so that resuming never writes
    into another run's folder."""
    if not resuming(resume_from_checkpoint):
        return None
    output = Path(output_dir)
    path = Path(str(resume_from_checkpoint))
    if str(resume_from_checkpoint).lower() in ("true", "latest") or path.resolve() == output.resolve():
        candidates = sorted((c for c in output.glob("checkpoint-*") if c.name.rsplit("-", 1)[-1].isdigit()),
                            key=_step, reverse=True)
        for candidate in candidates:
            if not checkpoint_problems(candidate):
                return str(candidate)
        found = (f" ({', '.join(f'{c.name}: {checkpoint_problems(c)[0]}' for c in candidates[:3])})"
                 if candidates else "")
        raise FileNotFoundError(f"--resume_from_checkpoint latest: {output_dir} holds no complete checkpoint-N folder "
                                f"to resume from{found}; start a new run (another --output_dir, or "
                                "--overwrite_output_dir).")
    if not path.is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint {path} is not a folder; pass a checkpoint-N folder of "
                                "this run, or 'latest' for its newest complete one.")
    if path.resolve().parent != output.resolve():
        raise ValueError(f"--resume_from_checkpoint {path} belongs to the run in {path.resolve().parent}, not to "
                         f"--output_dir {output_dir}: a run resumes only into its own folder. Pass --output_dir "
                         f"{path.parent} to continue that run.")
    problems = checkpoint_problems(path)
    if problems:
        raise ValueError(f"--resume_from_checkpoint {path} is not a complete checkpoint ({', '.join(problems)}): "
                         "resuming from it would not continue the run exactly. Pass 'latest' for the newest complete "
                         "one.")
    return str(path)


def check_resume_settings(checkpoint: str, model_type: str, requested: dict) -> None:
    """Refuse to resume a checkpoint of another model type, or with model settings that differ from those it was
    trained with (they would silently change the objective mid-run), naming each setting."""
    saved = json.loads((Path(checkpoint) / "config.json").read_text())
    if saved.get("model_type") != model_type:
        raise ValueError(f"--resume_from_checkpoint {checkpoint} holds a {saved.get('model_type')!r} model, not a "
                         f"{model_type!r}; pass the --model_type it was trained with, or start a new run.")
    differing = [f"{name}={value!r} (the checkpoint has {saved[name]!r})" for name, value in requested.items()
                 if name in saved and _normalized(saved[name]) != _normalized(value)]
    if differing:
        raise ValueError(f"--resume_from_checkpoint {checkpoint} was trained with other settings than "
                         f"{', '.join(differing)}. Resume with the checkpoint's settings (drop those flags), or start "
                         "a new run in another --output_dir.")


def _normalized(value):
    return list(value) if isinstance(value, (list, tuple)) else value
