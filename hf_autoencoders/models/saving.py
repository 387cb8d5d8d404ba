"""`save_pretrained` into a folder only: a path that is a file is refused with an error (transformers' models only log
it and save nothing; its image processors raise a bare AssertionError)."""

import os


class SavesToFolder:
    """Mixed into a `PreTrainedModel` or an image processor, before it: `save_pretrained(path)` with `path` an
    existing file raises a ValueError that says to pass a folder."""

    def save_pretrained(self, save_directory, *args, **kwargs):
        if os.path.isfile(save_directory):
            raise ValueError(f"save_pretrained({str(save_directory)!r}): that path is a file, not a folder; pass the "
                             "folder to save the model in (it is created if missing).")
        return super().save_pretrained(save_directory, *args, **kwargs)
