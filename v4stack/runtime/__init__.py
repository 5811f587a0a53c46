"""Running a loaded model: tokenizer, sampling and the simple generation loop (the engine comes later)."""
