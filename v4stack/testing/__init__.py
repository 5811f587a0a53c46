"""Test support: small random checkpoints in the official layout."""
