"""Layer 2: models (torch). Import submodules explicitly; this package imports nothing heavy."""
