"""The built-in design-space files, shipped inside dsd as the package `dsd.builtin_spaces`."""
