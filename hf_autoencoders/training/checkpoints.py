"""Where a run writes and what it resumes from: the output-folder guard and the choice of checkpoint."""

from pathlib import Path


def check_output_dir(output_dir: str, overwrite: bool, resume_from_checkpoint) -> None:
    """Refuse to write into a folder that already holds a user's files, unless asked to."""
    path = Path(output_dir)
    if not path.exists() or overwrite or resume_from_checkpoint:
        return
    if not path.is_dir():
        raise ValueError(f"output_dir {output_dir} exists and is not a folder; choose another --output_dir.")
    existing = sorted(p.name for p in path.iterdir())
    if existing:
        shown = ", ".join(existing[:5]) + (" ..." if len(existing) > 5 else "")
        raise ValueError(
            f"output_dir {output_dir} already holds files ({shown}). Nothing was changed. Choose a new --output_dir, "
            "continue the run with --resume_from_checkpoint, or pass --overwrite_output_dir to write over it."
        )


def resolve_checkpoint(resume_from_checkpoint, output_dir: str) -> str | None:
    """The checkpoint folder to resume from: a given checkpoint folder, or with "true"/"latest" (or the output_dir
    itself) the newest *complete* `checkpoint-N` in output_dir, so a run killed while saving resumes from the last
    checkpoint that was fully written."""
    if not resume_from_checkpoint or str(resume_from_checkpoint).lower() == "false":
        return None
    path = Path(str(resume_from_checkpoint))
    if str(resume_from_checkpoint).lower() in ("true", "latest") or path.resolve() == Path(output_dir).resolve():
        complete = [
            c for c in Path(output_dir).glob("checkpoint-*")
            if c.name.split("-")[-1].isdigit() and (c / "trainer_state.json").is_file()
            and (c / "model.safetensors").is_file()
        ]
        if not complete:
            raise ValueError(f"--resume_from_checkpoint: {output_dir} holds no complete checkpoint-N folder to "
                             "resume from; start a new run instead.")
        return str(max(complete, key=lambda c: int(c.name.split("-")[-1])))
    if not (path / "trainer_state.json").is_file():
        raise ValueError(f"--resume_from_checkpoint {path} is not a complete checkpoint folder (no "
                         "trainer_state.json); pass a checkpoint-N folder, or 'latest' for the newest one.")
    return str(path)
