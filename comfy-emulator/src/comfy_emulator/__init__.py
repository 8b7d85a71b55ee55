"""A GPU-free ComfyUI emulator that speaks ComfyUI 0.8.0's HTTP and WebSocket protocol (or
0.26.0's, with `EmulatorConfig(comfyui_version="0.26.0")`: see `versions.py`).

Public API:

- `EmulatorConfig` (config.py): host/port, folders, installed models, timing, faults.
- `create_app(config)` (app.py): the aiohttp application.
- `start_emulator(config) -> RunningEmulator` (runner.py): serve it; `.url`, `.port`,
  `await .stop()`, async context manager; `port=0` picks a free port.
- `Node`, `NodeEnv`, `NodeOutput`, `ExecContext` (nodes/base.py): to add node classes
  (`EmulatorConfig(extra_nodes=(MyNode,))`).

Fault injection (emulator-only, never under /api; details in `routes/control.py` and the
README): GET /emulator/stats (executions per prompt_id, node runs, outcomes, restarts,
model_loads per file, load_seconds, resident models least recent first),
POST /emulator/stats/reset (counters only), GET/POST /emulator/timing (speed, step_time,
node_time, load_scale), POST /emulator/speed, POST /emulator/fail-next (default: CUDA out of
memory), POST /emulator/hang-next, POST /emulator/release, POST /emulator/reset-faults,
POST /emulator/drop-websockets, POST /emulator/restart (also empties the VRAM),
POST /emulator/down. CLI: --speed, --fail-next, --hang-next, --node-time, --load-scale,
--model-cost FILE=SECONDS[:MB], --vram-total-mb.

Model switching (`model_memory`): every installed model file has a `ModelCost(load_s,
vram_mb)` (family defaults from the file name, or `EmulatorConfig.model_costs`); a loader, or
the first node given a handle of an evicted model, pays `load_s * load_scale / speed` when the
file is not resident in the emulated VRAM, which evicts least recently used models and logs
ComfyUI's "Requested to load ..." / "loaded completely; ..." lines. `/system_stats` shows the
VRAM they take; `POST /free` unloads them.

Design, by module: `core` (the emulated process: submission, the single worker, interrupts,
restarts), `prompt_queue` (heap + history), `validation` (validate_prompt), `cache` (classic
signature cache), `graph` (execution order), `executor` (one prompt's run and its event stream),
`progress` (progress_state), `model_memory` (load costs and resident models in VRAM),
`versions` (what 0.26.0 changes), `jobs` (the /api/jobs view of
0.26.0), `hub` (sockets and the ordered outbound queue), `logbuffer` (the
300-entry log ring), `faults` (fault injection and statistics), `files` (folder rules),
`nodes/*` (the node catalogue), `routes/*` (HTTP/WS handlers; `routes/control.py` documents the
emulator-only `/emulator/*` fault-injection API).
"""

from comfy_emulator.app import create_app
from comfy_emulator.config import EmulatorConfig
from comfy_emulator.nodes.base import ExecContext, Node, NodeEnv, NodeOutput
from comfy_emulator.runner import RunningEmulator, start_emulator

__all__ = [
    "EmulatorConfig",
    "ExecContext",
    "Node",
    "NodeEnv",
    "NodeOutput",
    "RunningEmulator",
    "create_app",
    "start_emulator",
]
