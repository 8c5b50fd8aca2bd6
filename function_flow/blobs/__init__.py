"""Blob stores (`core.ports.Blobs`): where results and arguments too large for a
record live. local.py: a directory (embedded backend); gcs.py: Cloud Storage."""
