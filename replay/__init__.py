"""Rebuilding state from history with the same pure folds the processors run."""
