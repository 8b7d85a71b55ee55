"""pytest fixtures for comfy-stack."""
