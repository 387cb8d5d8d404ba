"""Where a run writes and what it resumes from: the output-folder guard, the choice of a complete checkpoint, and the
check that a resumed run trains the model its checkpoint holds."""

import json
import os
import tempfile
import zipfile
from pathlib import Path

# What the Trainer needs to continue a run exactly where it stopped (rng_state.pth, or one per process).
CHECKPOINT_FILES = ("trainer_state.json", "config.json", "model.safetensors", "optimizer.pt", "scheduler.pt")


def resuming(resume_from_checkpoint) -> bool:
    """Whether --resume_from_checkpoint asks to resume ("false", "none" and "" do not)."""
    return bool(resume_from_checkpoint) and str(resume_from_checkpoint).strip().lower() not in ("false", "none", "0")


def check_output_dir(output_dir: str, overwrite: bool, resume: bool = False,
                     how_to_resume: str = "continue the run with --resume_from_checkpoint latest") -> None:
    """Refuse to write into a folder that already holds a user's files (unless `overwrite`, or `resume` into the run
    that lives there), or a folder that cannot be written. Checked before any data is loaded; changes nothing."""
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"output_dir {output_dir} exists and is not a folder; choose another --output_dir.")
    existing = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
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


def checkpoint_problems(folder: Path) -> list[str]:
    """What keeps `folder` from being a complete, loadable checkpoint (an empty list if nothing does): missing
    files, a truncated `model.safetensors`, unreadable optimizer, scheduler or RNG states, a broken trainer state."""
    folder = Path(folder)
    problems = [f"no {name}" for name in CHECKPOINT_FILES if not (folder / name).is_file()]
    rng_states = sorted(folder.glob("rng_state*.pth"))
    if not rng_states:
        problems.append("no rng_state.pth")
    # the model's, and the tokenizer recipe's where the run had one (its discriminator and EMA weights, their states)
    for weights in ["model.safetensors", "discriminator.safetensors", "ema.safetensors"]:
        if (folder / weights).is_file() and not _complete_safetensors(folder / weights):
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


def _complete_safetensors(path: Path) -> bool:
    """The file is as long as its header says: 8 bytes of header length, the JSON header, then every tensor."""
    try:
        with open(path, "rb") as f:
            header_length = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(header_length))
        ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
        return os.path.getsize(path) == 8 + header_length + max(ends, default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError):
        return False


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
