"""The ComfyUI gateway: the balancer as one ComfyUI server to ComfyUI's own clients and web
frontend, over the whole fleet (the routes of a ComfyUI server, answered from Redis and the
nodes' published health, never by splicing a client onto one node)."""
