"""Golden-case tooling: run v4stack like the official reference and compare with its recorded outputs."""
