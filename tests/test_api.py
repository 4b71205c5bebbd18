"""The package-level API: one function per user job, importable lazily and never shadowed by a module."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys

import pytest

import scalequest_dataset


def test_api_names_stay_functions_after_every_module_is_imported():
    for module in pkgutil.walk_packages(scalequest_dataset.__path__, "scalequest_dataset."):
        if not module.name.endswith((".vllm", ".ray")):  # heavy optional engines/backends
            importlib.import_module(module.name)
    for name in ("load_dataset", "publish", "log", "diff", "regenerate"):
        value = getattr(scalequest_dataset, name)
        assert inspect.isfunction(value), (name, value)
        assert name in scalequest_dataset.__all__ and name in dir(scalequest_dataset)


def test_import_is_cheap_and_lazy():
    code = "import sys, scalequest_dataset; print(sorted(m for m in sys.modules if m in ('datasets', 'pyarrow', 'torch')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'difff'"):
        scalequest_dataset.difff  # noqa: B018
