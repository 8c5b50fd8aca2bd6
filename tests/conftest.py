"""Shared fixtures. The emulator fixtures live in tests/emulators.py."""

from emulators import (blobs, collection_prefix, firestore_emulator,  # noqa: F401
                       firestore_env, firestore_store, firestore_stores, gcloud_available,
                       gcp_env, gcs_bucket, pubsub_emulator, store, storage_emulator,
                       storage_env)
