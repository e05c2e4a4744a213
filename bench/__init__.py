"""The emulator's benchmark: ``python bench/run.py`` (side by side with the peers) and a tiny fan-out driver."""
