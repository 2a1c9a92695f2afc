"""tokenization layer."""
