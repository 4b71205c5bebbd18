"""Versioned stores behind one registry: a local bare git repository (the default) and the Hugging Face Hub.

A store kind is one module here defining `STORE` (a `Store` subclass with `open(target, create)`) and one line in
`KINDS`, keyed by the URL scheme of the targets it serves ("file" for a local path)."""

from __future__ import annotations

import importlib

from .base import (
    Digest,
    RepoLayout,
    RevisionNotFound,
    StaleParentError,
    Store,
    StoreError,
    VerificationError,
)

KINDS: dict[str, str] = {
    "file": "git",  # PATH: a bare git repository on disk
    "hf": "hub",  # hf://datasets/ORG/NAME: the Hugging Face Hub
}


def store_kind(target: str) -> str:
    """The store kind (a module of this package) that serves `target`: by its URL scheme, a path is "file"."""
    scheme = target.split("://", 1)[0] if "://" in target else "file"
    if scheme not in KINDS:
        raise StoreError(f"{target!r}: no store serves {scheme}:// (known: a local path, "
                         f"{', '.join(f'{k}://' for k in KINDS if k != 'file')})")
    return KINDS[scheme]


def open_store(target: str | object, create: bool = False) -> Store:
    """The store at `target` (a local path or a URL such as hf://datasets/ORG/NAME)."""
    text = str(target)
    module = importlib.import_module(f"{__name__}.{store_kind(text)}")
    return module.STORE.open(text, create=create)


__all__ = ["KINDS", "Digest", "RepoLayout", "RevisionNotFound", "StaleParentError", "Store", "StoreError",
           "VerificationError", "open_store", "store_kind"]
