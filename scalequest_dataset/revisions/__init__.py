"""Revisions: stores behind one registry, the locator of versions, publish and log, load and the datasets
builder, regenerate and attest, the card and its figures."""
