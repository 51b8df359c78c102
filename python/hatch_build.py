"""Hatchling hooks for the bnfold wheel.

The wheel is a carrier for one native executable, so it is built differently
from a pure-Python package in three ways, all decided here:

* the version is the binary's own ``--version``, so the wheel can never claim
  a version the binary it carries does not have;
* the binary named by the BNFOLD_BINARY environment variable (``make wheel``
  sets it to the stripped static build) is put into the package as
  ``bnfold/_bin/bnfold``; it is not copied into the source tree, so a stale
  copy can never be picked up;
* the wheel is tagged for this platform (``py3-none-linux_x86_64``), not
  ``py3-none-any``: it runs on any Python 3, but only on this OS and CPU.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sysconfig
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface
from hatchling.metadata.plugin.interface import MetadataHookInterface


def _binary() -> str:
    path = os.environ.get("BNFOLD_BINARY", "")
    if not path:
        raise RuntimeError(
            "BNFOLD_BINARY is not set: build the wheel with `make wheel` from the "
            "repository root, which builds the static binary and points BNFOLD_BINARY at it"
        )
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise RuntimeError(f"BNFOLD_BINARY={path} is not an executable file")
    return os.path.abspath(path)


def _binary_version(path: str) -> str:
    return subprocess.run(
        [path, "--version"], check=True, capture_output=True, text=True
    ).stdout.strip()


class CustomMetadataHook(MetadataHookInterface):
    def update(self, metadata: dict[str, Any]) -> None:
        metadata["version"] = _binary_version(_binary())


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        path = _binary()
        mode = os.stat(path).st_mode
        if not mode & stat.S_IXOTH:
            raise RuntimeError(f"{path} is not executable by everyone")
        build_data["force_include"][path] = "bnfold/_bin/bnfold"
        build_data["pure_python"] = False
        platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
        build_data["tag"] = f"py3-none-{platform}"
