"""The ComfyUI gateway: the balancer serves ComfyUI's own protocol at its root, so the
ComfyUI frontend and existing ComfyUI clients use the whole fleet as one ComfyUI."""
