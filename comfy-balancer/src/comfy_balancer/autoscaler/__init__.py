"""GPUs on demand: start and stop node containers (ComfyUI + comfy-service, one GPU each)
through the Docker Engine API, from the fleet's predicted queue wait.

``policy`` decides (pure), ``containers`` speaks to Docker, ``scaler`` reads the fleet from
Redis with the balancer's own readers and acts; ``python -m comfy_balancer.autoscaler`` runs
it (one instance per scope).
"""
