"""A package only so that mypy tells this conftest from shared/tests/comfyui/conftest.py."""
