"""comfy-balancer: one API in front of many comfy-service nodes."""
