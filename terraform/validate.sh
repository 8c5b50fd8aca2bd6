#!/usr/bin/env bash
# terraform validate for the module and its example. Needs network access:
# `terraform init` downloads the google and random providers. Creates nothing
# in any project and needs no credentials.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if ! command -v terraform >/dev/null 2>&1; then
  echo "terraform is not installed: get 1.11 or newer from https://developer.hashicorp.com/terraform/install" >&2
  exit 1
fi

for dir in "$here" "$here/examples/basic"; do
  echo "== terraform${dir#"$here"}"
  terraform -chdir="$dir" init -backend=false -input=false >/dev/null
  terraform -chdir="$dir" validate
done
