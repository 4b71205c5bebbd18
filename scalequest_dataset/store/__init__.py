"""Versioned stores: a local bare git repository (the default) and the Hugging Face Hub."""

from .base import Digest, RevisionNotFound, StaleParentError, Store, StoreError, VerificationError, open_store

__all__ = ["Digest", "RevisionNotFound", "StaleParentError", "Store", "StoreError", "VerificationError", "open_store"]
