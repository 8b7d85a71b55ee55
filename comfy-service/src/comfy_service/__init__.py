"""comfy-service: one ComfyUI behind a dependable API."""
