"""The field table of upstream_types.py still matches the Go sources it was transcribed from.

The sources come from the Go module cache (the e2e control-plane build fills it); without a
cache holding these modules there is nothing to compare against and the check is skipped
(the field-by-field checks in the other tests use the table either way).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.manifests.upstream_types import STRUCTS

_TAG = re.compile(r'^\s*(?P<first>[\w.*\[\]]+)(?:\s+(?P<second>[\w.*\[\]]+))?\s+`[^`]*json:"(?P<json>[^"]*)"')


@functools.cache
def _module_cache() -> Path | None:
    if os.environ.get("GOMODCACHE"):
        return Path(os.environ["GOMODCACHE"])
    go = shutil.which("go")
    if go:
        result = subprocess.run([go, "env", "GOMODCACHE"], capture_output=True, text=True, check=False)
        if result.returncode == 0 and result.stdout.strip():
            return Path(result.stdout.strip())
    default = Path.home() / "go" / "pkg" / "mod"
    return default if default.is_dir() else None


def _version_key(path: Path) -> tuple[int, ...]:
    version = path.name.split("@v", 1)[1]
    return tuple(int(part) for part in re.findall(r"\d+", version.split("-")[0])[:3])


def _source(relative: str) -> Path | None:
    """``k8s.io/api/admissionregistration/v1/types.go`` → the file in the newest cached k8s.io/api."""
    cache = _module_cache()
    if cache is None:
        return None
    module, _, rest = relative.partition("/")
    module_name, _, rest = rest.partition("/")
    candidates = [
        p
        for p in (cache / module).glob(f"{module_name}@v0.*")
        if re.fullmatch(rf"{re.escape(module_name)}@v0\.\d+\.\d+", p.name)
    ]
    if not candidates:
        return None
    path = max(candidates, key=_version_key) / rest
    return path if path.is_file() else None


def parse_struct(source: str, name: str) -> tuple[set[str], set[str]]:
    """JSON names and inline-embedded type names of ``type <name> struct`` in Go source."""
    match = re.search(rf"^type {re.escape(name)} struct {{\n(.*?)^}}", source, re.S | re.M)
    assert match, f"type {name} struct not found"
    names: set[str] = set()
    inline: set[str] = set()
    for line in match.group(1).splitlines():
        tag = _TAG.match(line)
        if not tag:
            continue
        json_name = tag.group("json").split(",")[0]
        if json_name == "":  # embedded with `json:""` or `json:",inline"`: its fields are ours
            inline.add(tag.group("first").rsplit(".", 1)[-1].lstrip("*"))
        elif json_name != "-":
            names.add(json_name)
    return names, inline


@pytest.mark.parametrize("struct", sorted(STRUCTS))
def test_table_matches_upstream_source(struct: str) -> None:
    spec = STRUCTS[struct]
    path = _source(spec.source)
    if path is None:
        pytest.skip(f"{spec.source} is not in the Go module cache (fill it with tests/e2e/build.sh)")
    names, inline = parse_struct(path.read_text(encoding="utf-8"), struct)
    assert set(spec.fields) == names, f"{struct} in {path}"
    assert set(spec.inline) == inline, f"{struct} in {path}"
