"""docker/comfyui/, the GPU node image, checked without building it (the build needs GitHub, the
CUDA wheel index and hours): every custom node pack and ComfyUI itself pinned to a commit; the
pack installer run for real on local git repositories (pins enforced, OpenCV swapped for its
headless wheel); and the import check run on ComfyUI start-up logs recorded from a real build
of the image (tests/comfyui_startup/README.md)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
IMAGE = ROOT / "docker" / "comfyui"
CUSTOM_NODES = IMAGE / "custom-nodes.txt"
COMMIT = re.compile(r"[0-9a-f]{40}")

# ------------------------------------------------------------------ pins


def pinned_packs() -> list[list[str]]:
    lines = CUSTOM_NODES.read_text().splitlines()
    return [line.split() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_every_custom_node_pack_is_pinned_to_a_commit() -> None:
    packs = pinned_packs()
    assert packs
    for fields in packs:
        assert len(fields) == 3, fields
        name, repository, commit = fields
        assert repository.startswith("https://github.com/"), repository
        assert COMMIT.fullmatch(commit), f"{name} is pinned to {commit!r}, not a full commit"


def test_every_constraint_is_an_exact_version() -> None:
    lines = (IMAGE / "constraints.txt").read_text().splitlines()
    constraints = [line for line in lines if line.strip() and not line.startswith("#")]
    assert constraints
    for line in constraints:
        assert re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", line), line


def test_the_storydiffusion_template_finds_its_pack() -> None:
    assert "ComfyUI_StoryDiffusion" in {fields[0] for fields in pinned_packs()}


def test_comfyui_itself_is_pinned_to_a_commit() -> None:
    dockerfile = (IMAGE / "Dockerfile").read_text()
    (default,) = re.findall(r"^ARG COMFYUI_REF=(\S+)$", dockerfile, re.MULTILINE)
    assert COMMIT.fullmatch(default)
    assert "_REF=main" not in dockerfile
    build_args = yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())["x-comfyui-build"]
    assert re.fullmatch(r"\$\{COMFYUI_REF:-[0-9a-f]{40}\}", build_args["args"]["COMFYUI_REF"])
    assert not any("STORYDIFFUSION" in name for name in build_args["args"])


def test_the_image_build_ends_with_the_import_check() -> None:
    dockerfile = (IMAGE / "Dockerfile").read_text()
    final_stage = dockerfile.rsplit("\nFROM ", 1)[1]
    check = final_stage.index("python /opt/comfy-image/check_imports.py")
    assert final_stage.index("USER comfy") < check < final_stage.index("\nCMD ")
    assert "--quick-test-for-ci --cpu" in final_stage


# ------------------------------------------------------------------ install-custom-nodes.sh


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def make_pack(path: Path, requirements: str) -> str:
    """A git repository holding a node pack; its commit id."""
    path.mkdir()
    git("init", "-q", cwd=path)
    (path / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {}\n")
    (path / "requirements.txt").write_text(requirements)
    git("add", "-A", cwd=path)
    git("-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "c", cwd=path)
    return git("rev-parse", "HEAD", cwd=path)


def install(tmp_path: Path, listing: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "list.txt").write_text(listing)
    (tmp_path / "custom_nodes").mkdir(exist_ok=True)
    return subprocess.run(
        ["sh", str(IMAGE / "install-custom-nodes.sh"), "list.txt", "custom_nodes", "req.txt"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )


def test_packs_are_fetched_at_their_commit_with_headless_opencv(tmp_path: Path) -> None:
    first = make_pack(
        tmp_path / "a", "spaces\nopencv-python\nOpenCV-Python>=4.8 ; python_version>'3'\n"
    )
    second = make_pack(tmp_path / "b", "opencv-contrib-python==4.9.0.80\nopencv-python-headless\n")
    result = install(
        tmp_path,
        f"# comment\n\nPackA file://{tmp_path}/a {first}\nPackB file://{tmp_path}/b {second}\n",
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "custom_nodes" / "PackA" / "__init__.py").exists()
    assert not (tmp_path / "custom_nodes" / "PackA" / ".git").exists()
    requirements = (tmp_path / "req.txt").read_text().split()
    assert requirements == [
        "spaces",
        "opencv-python-headless",
        "OpenCV-Python-headless>=4.8",
        ";",
        "python_version>'3'",
        "opencv-contrib-python-headless==4.9.0.80",
        "opencv-python-headless",
    ]


@pytest.mark.parametrize("ref", ["main", "HEAD", "v1.0", "abc123"])
def test_a_pack_pinned_to_anything_but_a_commit_fails_the_build(tmp_path: Path, ref: str) -> None:
    make_pack(tmp_path / "a", "")
    result = install(tmp_path, f"PackA file://{tmp_path}/a {ref}\n")
    assert result.returncode != 0
    assert "must be pinned to a full 40-hex commit" in result.stderr
    assert not (tmp_path / "custom_nodes" / "PackA").exists()


def test_a_commit_the_repository_lacks_fails_the_build(tmp_path: Path) -> None:
    make_pack(tmp_path / "a", "")
    result = install(tmp_path, f"PackA file://{tmp_path}/a {'0' * 40}\n")
    assert result.returncode != 0


# ------------------------------------------------------------------ check_imports.py

STARTUP_LOGS = Path(__file__).parent / "comfyui_startup"
"""ComfyUI start-up logs (``--quick-test-for-ci --cpu``), stdout and stderr merged; see the
folder's README."""


def startup_log(name: str) -> str:
    return (STARTUP_LOGS / f"{name}.log").read_text()


def check(tmp_path: Path, log: str, exit_code: int = 0) -> subprocess.CompletedProcess[str]:
    """check_imports.py run on a stand-in ComfyUI that prints ``log`` (half of it on stderr,
    as ComfyUI's logger does for warnings) and exits with ``exit_code``."""
    fake = tmp_path / "fake_main.py"
    fake.write_text(
        textwrap.dedent(f"""\
        import sys
        lines = {log.splitlines(keepends=True)!r}
        for i, line in enumerate(lines):
            (sys.stderr if i % 2 else sys.stdout).write(line)
            (sys.stderr if i % 2 else sys.stdout).flush()
        sys.exit({exit_code})
        """)
    )
    return subprocess.run(
        [
            sys.executable,
            str(IMAGE / "check_imports.py"),
            "--custom-nodes",
            str(CUSTOM_NODES),
            "--",
            sys.executable,
            str(fake),
            "--quick-test-for-ci",
        ],
        capture_output=True,
        text=True,
    )


def test_a_start_where_every_node_imports_passes(tmp_path: Path) -> None:
    result = check(tmp_path, startup_log("every-node-imported"))
    assert result.returncode == 0, result.stderr
    assert "every node imported; custom node packs: ComfyUI_StoryDiffusion" in result.stdout
    # the build log still shows ComfyUI's own lines
    assert "Import times for custom nodes:" in result.stdout


def test_a_custom_node_pack_that_fails_to_import_fails_the_build(tmp_path: Path) -> None:
    result = check(tmp_path, startup_log("storydiffusion-cv2-failed"))
    assert result.returncode == 1
    assert "Cannot import /opt/ComfyUI/custom_nodes/ComfyUI_StoryDiffusion" in result.stderr
    assert "libxcb.so.1: cannot open shared object file" in result.stderr
    assert "(IMPORT FAILED): /opt/ComfyUI/custom_nodes/ComfyUI_StoryDiffusion" in result.stderr
    assert "custom node pack ComfyUI_StoryDiffusion is not among the imported" in result.stderr
    assert result.stderr.rstrip().endswith("FAILED: some nodes did not import (see above)")


def test_a_library_too_new_for_a_pack_fails_the_build(tmp_path: Path) -> None:
    result = check(tmp_path, startup_log("storydiffusion-diffusers-failed"))
    assert result.returncode == 1
    assert "cannot import name 'MultiControlNetModel'" in result.stderr


def test_a_builtin_node_that_fails_to_import_fails_the_build(tmp_path: Path) -> None:
    result = check(tmp_path, startup_log("comfy-extras-failed"))
    assert result.returncode == 1
    assert "ComfyUI: IMPORT FAILED: nodes_audio.py" in result.stderr


def test_a_pack_missing_from_the_table_fails_the_build(tmp_path: Path) -> None:
    result = check(tmp_path, startup_log("pack-not-loaded"))
    assert result.returncode == 1
    assert "ComfyUI_StoryDiffusion is not among the imported ones" in result.stderr


def test_a_comfyui_that_cannot_start_fails_the_build(tmp_path: Path) -> None:
    crash = "Traceback (most recent call last):\nModuleNotFoundError: No module named 'torch'\n"
    result = check(tmp_path, crash, exit_code=1)
    assert result.returncode == 1
    assert "ComfyUI exited with code 1" in result.stderr
