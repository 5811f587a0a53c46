"""Training of small V4 models (the bundled demo model): trainable twin, corpus, objective, evaluation."""
