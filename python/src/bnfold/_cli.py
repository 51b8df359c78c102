"""The ``bnfold`` console script: replaces itself with the bundled binary.

It execs rather than runs a child process, so the binary gets the same
process id, standard streams, signals and argv, and its exit status is the
script's exit status with nothing in between to translate.
"""

from __future__ import annotations

import os
import sys

from ._binary import binary_path


def main() -> None:
    path = binary_path()
    try:
        os.execv(path, ["bnfold", *sys.argv[1:]])
    except OSError as error:
        sys.stderr.write(f"bnfold: error: cannot run {path}: {error.strerror}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
