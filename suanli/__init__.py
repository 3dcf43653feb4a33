"""Suanli (算力): a self-hosted AI compute platform for sharing GPU servers."""

__version__ = "0.1.0"
