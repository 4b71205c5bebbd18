"""The recipe: the typed config and its presets, stage parameters, ids and seeds, prompts, answer checking,
model identity and the built-in models. Everything that defines what a run computes."""

from importlib import resources


def preset_names() -> list[str]:
    """The built-in presets (here, not in `config`: the CLI lists them at start-up without importing the stages)."""
    return sorted(p.name.removesuffix(".yaml") for p in resources.files(__package__).joinpath("presets").iterdir()
                  if p.name.endswith(".yaml"))
