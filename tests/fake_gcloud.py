"""A stand-in `gcloud` for deploy tests: records each argv, keeps what it "created".

`install(directory, log, state)` writes an executable named gcloud and
returns the environment that puts it first on PATH, so neither
`function-flow deploy` nor the script `--dry-run` prints can reach Google
Cloud. It is a bash script (a deployment makes about a hundred calls; a
Python interpreter per call would cost seconds), and follows gcloud's
contract where the deployment depends on it:

- `... describe NAME` exits 0 when NAME was created (or deployed) before,
  else 1 with NOT_FOUND, as gcloud does;
- `... create NAME` of an existing NAME fails with ALREADY_EXISTS, and
  `... update NAME` of a missing one with NOT_FOUND, so a deployment that
  is not idempotent fails the second time;
- the describes whose output is captured print a value: the project
  number, a function's URL, a sink's writer identity;
- `firestore indexes composite create` is keyed by its collection group
  and fields (the index has no name of ours), so creating it again fails
  with ALREADY_EXISTS, as Firestore's API answers;
- `secrets create` fails unless it read a key of 32 characters or more;
- FAKE_GCLOUD_FAIL=TEXT makes any command whose argv contains TEXT fail.

`calls(log)` reads the log: one {"argv", "stdin" (characters read)} per call.
"""

from __future__ import annotations

import os
import pathlib

PROJECT_NUMBER = "123456789012"

SCRIPT = r"""#!/usr/bin/env bash
set -u
input=""
if [ ! -t 0 ]; then input="$(cat)"; fi
{ printf '%s' "${#input}"; for a in "$@"; do printf '\037%s' "$a"; done; printf '\036'; } \
    >> "$FAKE_GCLOUD_LOG"
all=" $* "
if [ -n "${FAKE_GCLOUD_FAIL:-}" ] && [[ "$all" == *"$FAKE_GCLOUD_FAIL"* ]]; then
    echo "ERROR: (gcloud) failing as asked: $FAKE_GCLOUD_FAIL" >&2; exit 1
fi
if [ "${1:-}" = projects ] && [ "${2:-}" = describe ]; then echo "@NUMBER@"; exit 0; fi
group=(); verb=""; name=""; database=""; format=""; index=""
for a in "$@"; do
    case "$a" in
        --database=*) database="${a#--database=}" ;;
        --collection-group=*|--field-config=*) index="$index ${a#--*=}" ;;
        --format=*) format="${a#--format=}" ;;
        --*) ;;
        *) if [ -z "$verb" ]; then
               case "$a" in describe|create|deploy|update) verb="$a" ;; *) group+=("$a") ;; esac
           elif [ -z "$name" ] && [ "$a" != http ]; then name="$a"; fi ;;
    esac
done
[ -z "$verb" ] && exit 0
[ -z "$name" ] && name="$database"
g="${group[*]}"
[ "$g" = "firestore indexes composite" ] && name="$database$index"
[ "$g" = "iam service-accounts" ] && name="${name%%@*}"  # described by e-mail, made by id
mkdir -p "$FAKE_GCLOUD_STATE"
key="$FAKE_GCLOUD_STATE/$(printf '%s %s' "$g" "$name" | tr ' /()' '_~[]')"
case "$verb" in
    describe)
        [ -e "$key" ] || { echo "ERROR: (gcloud) NOT_FOUND: $g $name" >&2; exit 1; }
        case "$format" in
            "value(serviceConfig.uri)") echo "https://$name-abc123-ew.a.run.app" ;;
            "value(writerIdentity)") echo "serviceAccount:service-@NUMBER@@gcp-sa-logging.iam.gserviceaccount.com" ;;
        esac
        exit 0 ;;
    update)
        if [ ! -e "$key" ] && [[ "$all" != *" fields "* ]]; then  # a field's settings
            echo "ERROR: (gcloud) NOT_FOUND: $g $name" >&2; exit 1
        fi
        exit 0 ;;
    create)
        [ -e "$key" ] && { echo "ERROR: (gcloud) ALREADY_EXISTS: $g $name" >&2; exit 1; }
        if [ "$g" = secrets ] && [ "${#input}" -lt 32 ]; then
            echo "ERROR: (gcloud) the secret's data is missing" >&2; exit 1
        fi ;;
esac
touch "$key"
""".replace("@NUMBER@", PROJECT_NUMBER)


def url_of(name: str) -> str:
    """The URL the stand-in reports for a deployed function."""
    return f"https://{name}-abc123-ew.a.run.app"


def writer_of(sink: str) -> str:
    """The writer identity the stand-in reports for any log sink."""
    return f"serviceAccount:service-{PROJECT_NUMBER}@gcp-sa-logging.iam.gserviceaccount.com"


def install(directory: pathlib.Path, log: pathlib.Path, state: pathlib.Path) -> dict[str, str]:
    """Write the executable; returns the environment that puts it first on PATH."""
    directory.mkdir(parents=True, exist_ok=True)
    executable = directory / "gcloud"
    executable.write_text(SCRIPT, encoding="utf-8")
    executable.chmod(0o755)
    return {"PATH": f"{directory}{os.pathsep}{os.environ.get('PATH', '')}",
            "FAKE_GCLOUD_LOG": str(log), "FAKE_GCLOUD_STATE": str(state)}


def calls(log: pathlib.Path) -> list[dict]:
    """Every call so far, in order."""
    if not log.exists():
        return []
    found = []
    for record in log.read_text(encoding="utf-8").split("\x1e"):
        if record:
            stdin, *argv = record.split("\x1f")
            found.append({"argv": argv, "stdin": int(stdin)})
    return found
