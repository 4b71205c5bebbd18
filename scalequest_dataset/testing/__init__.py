"""Test helpers that ship with the package (a local Hugging Face Hub API server, see `hub_server`)."""
