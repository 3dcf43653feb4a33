"""Datasets and models: stored files, previews and imports."""
