"""Public helpers for testing code that uses actorgrid."""
