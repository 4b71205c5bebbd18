"""Versioned stores: a local bare git repository (the default) and the Hugging Face Hub."""

from .base import (
    Digest,
    RepoLayout,
    RevisionNotFound,
    StaleParentError,
    Store,
    StoreError,
    VerificationError,
    open_store,
)

__all__ = ["Digest", "RepoLayout", "RevisionNotFound", "StaleParentError", "Store", "StoreError", "VerificationError", "open_store"]
