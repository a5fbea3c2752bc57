"""A model file's header (format, variant, architecture, classes, stage, ``extra``) without torch.

The workflow checks, when the working directory has no Snakemake metadata, whether an existing
model file was trained with the configured settings (`workflow/rules/integrity.smk`). Loading it
with ``torch.load`` would import torch (about 2 s) and read every weight at each workflow start.
A file written by ``torch.save`` is a zip archive whose ``<name>/data.pkl`` pickles the payload;
its tensors are persistent references to other archive entries. Unpickling ``data.pkl`` with every
torch object replaced by a placeholder gives the payload's plain-Python fields, in a few
milliseconds, without reading a weight (`segfusion.training.checkpoint.save_model` writes them).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path


class _Placeholder:
    """Stands for any torch object (tensor, storage, dtype, size) of the pickle."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return self

    def __setstate__(self, state):
        pass


class _HeaderUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module == "torch" or module.startswith("torch."):
            return _Placeholder
        return super().find_class(module, name)

    def persistent_load(self, pid):
        return _Placeholder()


def read_model_header(path: str | os.PathLike) -> dict:
    """The payload of a segfusion model file with its ``state_dict`` dropped. Raises ValueError
    naming the file when it is not a ``torch.save`` zip archive of a dict."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if not names:
                raise ValueError(f"{path}: no data.pkl in the archive")
            with archive.open(names[0]) as f:
                payload = _HeaderUnpickler(f).load()
    except (zipfile.BadZipFile, OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as err:
        raise ValueError(f"{path}: not a readable model file ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: not a segfusion model file (payload {type(payload).__name__})")
    payload.pop("state_dict", None)
    return payload
