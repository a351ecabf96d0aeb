"""Helpers shared by training, evaluation and export."""
