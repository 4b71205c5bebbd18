"""Diffing two versions: the comparison and its model, bit-exact row comparison (also used by regenerate),
statistics, the report and its plots."""
