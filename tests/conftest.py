"""Shared fixtures. The emulator fixtures live in tests/emulators.py."""

from emulators import (collection_prefix, firestore_emulator, firestore_env,  # noqa: F401
                       firestore_store, gcloud_available, gcp_env, pubsub_emulator, store,
                       storage_emulator, storage_env)
