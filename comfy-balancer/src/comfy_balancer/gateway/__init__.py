"""The ComfyUI gateway: the balancer answers ComfyUI's own protocol at its root, beside
``/api/v1``, so a client written for one ComfyUI (a script, the ComfyUI frontend) works
against the whole fleet unchanged.

Design:

- **One virtual ComfyUI per user.** A user is a tenant, recognised by the balancer's API keys
  (``identity``: Bearer, X-API-Key, HTTP Basic with the key as password, ``?token=``; a
  sign-in cookie can join the chain). Everything is scoped to the user: queue, history,
  jobs, ``queue_remaining``, interrupts, files. Another user's prompt is invisible (404,
  ``{}`` or absent), never "forbidden". Tasks the same tenant sent to ``/api/v1`` are the
  user's too and show up alike (``number`` 0, no ``client_id``).
- **A prompt is a task.** ``POST /prompt`` goes through the balancer's intake like
  ``/api/v1/generate`` (durable queue, fair sharing, late binding, failover, budgets, rate
  limits); the ``prompt_id`` is the task id, and what the prompt brought besides its graph
  (``client_id``, ``number``, ``extra_data``) is kept beside it (``PromptOrigin``).
  The intake validates its graph against the fleet's nodes, as ComfyUI would (400 with
  ``node_errors``).
- **Everything read from Redis and the output store.** Queue and history (``queue``,
  ``history``, ``jobs``) are rendered from task records in ComfyUI's shapes; outputs are
  served from the output store by their recorded location (``naming``: every file shown to
  a client has a subfolder that starts with its prompt id), never by asking nodes which file
  has a name. Uploads (``uploads``) live in the output store per user and are staged to
  whichever node runs the prompt. A node can die without the user losing anything.
- **ComfyUI's answers.** Same status codes and bodies as ComfyUI where ComfyUI has them
  (empty 200s, ``{}`` for an unknown history id, 404 with no body from ``/view``); the
  facade's own refusals in ComfyUI's error envelope with the status ``/api/v1`` gives them
  (``errors``: one table).

Modules: ``routes`` (the router, each route at ``/x`` and ``/api/x``), ``identity``,
``errors``, ``naming``, ``prompts``, ``queue``, ``history``, ``jobs``, ``files``,
``uploads``, ``live``. The WebSocket relay, the frontend and its user routes join the same app
(and the same identity chain) beside these. What the relay takes from here:
``identity.user_of`` (the user of its upgrade request), ``queue.queue_remaining`` (every
``status`` frame), ``naming.present_node_output`` (the ``output`` of an ``executed`` frame)
with ``live.LiveOutputs.announce`` (so ``/view`` serves those files until they are stored),
and the history entry being complete (``history.one_history``) before the prompt's last frame.
"""

from __future__ import annotations

from fastapi import FastAPI


def install_gateway(app: FastAPI) -> None:
    """Serve the gateway's routes from ``app`` (``--comfyui-gateway``)."""
    # Imported here: they reach the app state (lifespan), which imports this package's
    # relay; importing them with the package would make that import circular.
    from comfy_balancer.gateway import ws
    from comfy_balancer.gateway.identity import install_identity
    from comfy_balancer.gateway.routes import gateway_router
    from comfy_balancer.gateway.signin import session_user

    install_identity(app).prepend(session_user)
    app.include_router(gateway_router())
    app.include_router(ws.router)  # /ws and /api/ws (authenticated on the upgrade)
