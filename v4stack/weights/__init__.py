"""Checkpoint formats, files and loading (official DeepSeek-V4 layout)."""
