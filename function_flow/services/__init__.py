"""Adapters for the Google services that futures wait on.

gcs.py looks for objects in Cloud Storage (the engine's ports.Watcher);
dataflow.py asks the Dataflow API for a job's state (DataFlowFuture).
Each imports its client library only when first used.
"""
