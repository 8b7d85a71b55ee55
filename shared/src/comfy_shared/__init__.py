"""Code shared by comfy-service and comfy-balancer."""
