"""Plain PyTorch implementations of every op: the definition every fast path is tested against."""
