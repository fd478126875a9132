"""Build the archive krew downloads for ``kubectl confidential-pods``: the launcher beside this file, in a zip
whose bytes depend on nothing but the launcher (stored, fixed timestamp and mode), so that the ``sha256`` in
``confidential-pods.yaml`` can be checked against the repository.

    python3 plugins/krew/archive.py kubectl-confidential_pods.zip   # attach it to the release
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

LAUNCHER = Path(__file__).with_name("kubectl-confidential_pods")
#: 1980-01-01, the earliest time a zip entry can carry.
EPOCH = (1980, 1, 1, 0, 0, 0)


def build(out: Path) -> None:
    entry = zipfile.ZipInfo(LAUNCHER.name, date_time=EPOCH)
    entry.external_attr = 0o100755 << 16  # a regular file, rwxr-xr-x
    entry.create_system = 3  # Unix: the mode above is read
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(entry, LAUNCHER.read_bytes())


if __name__ == "__main__":
    build(Path(sys.argv[1]))
