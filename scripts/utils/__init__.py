"""Small utilities: atomic file writes, flag parsing."""
