# Sourced by ./dev test: the Prefect flows' test, in an environment of its own
# (.venv-prefect). Prefect's server needs an older FastAPI than the stack's, so the lock
# resolves comfy-stack[prefect] apart from the dev group (see [tool.uv] conflicts in
# pyproject.toml); the main environment, and so `./dev up`, has no Prefect.
UV_PROJECT_ENVIRONMENT=.venv-prefect "$UV" sync --frozen --all-packages --no-dev \
  --group prefect-tests --extra prefect --quiet
.venv-prefect/bin/pytest -q comfy-stack/tests/batch/test_prefect_flows.py
