"""Deploying one size of a trained run: the export file format and the recommender that serves it."""
