"""Shared fixtures. The emulator fixtures live in tests/emulators.py."""

import os

from emulators import (blobs, collection_prefix, firestore_emulator,  # noqa: F401
                       firestore_env, firestore_store, firestore_stores, gcloud_available,
                       gcp_env, gcs_bucket, pubsub_emulator, store, storage_emulator,
                       storage_env)

# `make test` spreads the tests over processes (pytest-xdist, pytest.ini), and
# execnet starts each with COLUMNS=80 and LINES=24. The commands the tests run
# would then wrap their output at 80 columns, as they never do without a
# terminal (cli/progress.py), and the lines the tests look for would break.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.pop("COLUMNS", None)
    os.environ.pop("LINES", None)
