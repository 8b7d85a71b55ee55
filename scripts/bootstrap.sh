# Sourced by ./dev: makes sure uv and the locked environment exist.
# uv lives in its own small venv under .tools/ so nothing is installed system-wide.
UV_VERSION="0.13.9"
TOOLS_DIR=".tools"
UV="$TOOLS_DIR/bin/uv"

python_bin="${PYTHON:-python3}"
if ! "$python_bin" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "comfy-stack needs Python 3.11 or newer as '$python_bin' (set PYTHON=... to choose another)" >&2
  exit 1
fi
if [ ! -x "$UV" ] || [ "$("$UV" --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  echo "installing uv $UV_VERSION into $TOOLS_DIR/ ..." >&2
  "$python_bin" -m venv "$TOOLS_DIR"
  "$TOOLS_DIR/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
export UV_PYTHON="${UV_PYTHON:-$python_bin}"
"$UV" sync --frozen --all-packages --quiet
