"""A GPU-free ComfyUI emulator."""
