"""The recipe: the typed config and its presets, stage parameters, ids and seeds, prompts, answer checking,
model identity and the built-in models. Everything that defines what a run computes."""
