"""API keys: who may call the balancer, as which tenant, with which scopes and limits.

``keys`` stores them (only a hash of each secret), ``callers`` turns a request's credentials
into a :class:`comfy_shared.access.Caller`, ``rate_limit`` meters submits per key.
"""
