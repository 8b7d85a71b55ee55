"""Learns which models this node's ComfyUI holds and what work costs here: the node's
:class:`~comfy_shared.models.NodeProfile`, published in its health document so the balancer
can place a task where it finishes first, a switch of models included.

Residency: a followed prompt needs the model files its graph names in loader inputs
(``workload.graph_models`` over the capabilities' loaders). Those not believed resident when
it starts are loaded by it, except those of a loader node ComfyUI reports in
``execution_cached`` (its model was still there). When a run that started ends, whatever its
outcome, its models become the most recently used. What ComfyUI evicts is inferred from its
VRAM use (``/system_stats``, read with every health document): while it is clearly below the
known sizes of the believed-resident models, the least recently used are dropped; about no
VRAM in use means none is resident. A reconnection to ComfyUI (it may have restarted) forgets
them all, and so does a restart of this service.

Sizes: ComfyUI logs each load of weights onto the GPU (comfy/model_patcher.py; since late
2025 ``loaded completely; <usable> MB usable, <loaded> MB loaded, full load: True`` or
``loaded partially; ...``, before ``loaded completely <usable MB> <loaded MB> <full load>``;
both are read). The MBs loaded during a run are what its new weights took: a shape's
VRAM is the most any run of it took; a run that loaded one file gives that file's size.

Times, learned from successful runs only, as moving averages (the mean of the first few
samples, then exponential): a run that loaded no model is the shape's hot run time; a run
that loaded models took longer than a hot one by the cost of the switch, split over the files
it loaded in proportion to what each is believed to cost (equally when unknown). The hot time
it is compared with is the shape's, else the node's speed for its sampler steps
(``SpeedMeter.expected_s``). A run whose every node was cached ran nothing and teaches
nothing.

Bounds: the least recently run shapes and least recently used model files beyond
``MAX_SHAPES`` and ``MAX_MODEL_FILES`` are forgotten. What is learned (not the residency) is
kept in Redis (``RedisKeys.node_profile``, :class:`NodeProfile`) and restored at start.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from loguru import logger

from comfy_service.speed import SpeedMeter
from comfy_shared.models import NodeProfile
from comfy_shared.workload import graph_models, graph_shape, sampler_steps

Loaders = Mapping[str, Mapping[str, Sequence[str]]]
"""``Capabilities.models``: loader class -> loader input -> model files."""

AVERAGE_WEIGHT: Final = 0.25
"""Weight of the newest sample once four are in (before, each weighs as much as the others)."""
MAX_SHAPES: Final = 256
MAX_MODEL_FILES: Final = 256
MB: Final = 1024 * 1024
"""ComfyUI's "MB" (model_patcher divides by 1024 * 1024)."""
IDLE_VRAM_BYTES: Final = 128 * MB
"""VRAM in use below this: ComfyUI holds no model."""
VRAM_SLACK_BYTES: Final = 512 * MB
"""How far the VRAM in use may fall short of the believed-resident models' sizes before some
are taken as evicted: sizes are rounded, partial loads and ComfyUI's own buffers blur them."""

_LOADED_LINE: Final = re.compile(
    r"^loaded (?:completely|partially)"
    # The format ComfyUI logs, and the newer one ("loaded completely; 9.00 MB usable, ...").
    r"(?: -?\d+(?:\.\d+)? (?P<mb>\d+(?:\.\d+)?)(?: |$)|; -?[\d.]+ MB usable, (?P<new_mb>[\d.]+) MB)"
)


def loaded_mb(line: str) -> float | None:
    """The MBs of weights a ComfyUI log line says were put on the GPU; None for other lines."""
    match = _LOADED_LINE.match(line.strip())
    if match is None:
        return None
    try:
        return float(match["mb"] or match["new_mb"])
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class FinishedRun:
    """How a followed run went, as far as placement cares."""

    succeeded: bool
    loaded: frozenset[str]
    """Model files it loaded (a switch)."""

    @property
    def hot(self) -> bool:
        """Succeeded with its models resident: its time is work, not switching."""
        return self.succeeded and not self.loaded


@dataclass(slots=True)
class _Average:
    value: float
    samples: int = 1

    def add(self, sample: float) -> None:
        self.samples += 1
        self.value += max(1 / self.samples, AVERAGE_WEIGHT) * (sample - self.value)


def _restored(value: float) -> _Average:
    """An average read back from Redis: its sample count is lost, it goes on exponentially."""
    return _Average(value, samples=round(1 / AVERAGE_WEIGHT))


@dataclass(slots=True)
class _Shape:
    run_s: _Average | None = None
    vram_bytes: int | None = None


@dataclass(slots=True)
class _ModelFile:
    load_s: _Average | None = None
    size_bytes: int | None = None


@dataclass(slots=True)
class _Run:
    prompt_id: str
    started: float
    shape: str
    steps: int
    nodes: frozenset[str]
    needed: tuple[str, ...]
    loaded: set[str]
    loader_files: dict[str, tuple[str, ...]]
    """Loader node id -> the model files it loads."""
    cached: set[str] = field(default_factory=set)
    loaded_mb: float = 0.0
    succeeded: bool = False


class ModelProfiler:
    """The one owner of this node's profile; fed by the event tracker (runs, log lines) and
    the health publisher (VRAM), read by the health publisher."""

    def __init__(
        self,
        speed: SpeedMeter,
        initial: NodeProfile | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_switch: Callable[[str, float], None] | None = None,
    ) -> None:
        """``on_switch``: called with each model file a successful run loaded and the seconds
        its load took (its share of the switch), as they are learned."""
        self._speed = speed
        self._clock = clock
        self._on_switch = on_switch
        self._resident: OrderedDict[str, None] = OrderedDict()  # least recently used first
        self._shapes: OrderedDict[str, _Shape] = OrderedDict()  # least recently run first
        self._files: OrderedDict[str, _ModelFile] = OrderedDict()  # least recently used first
        self._run: _Run | None = None
        self.version = 0
        """Bumped whenever something worth keeping was learned (the residency is not)."""
        if initial is not None:
            self._restore(initial)

    # --- a run ---------------------------------------------------------------------------------

    def started(self, prompt_id: str, graph: Mapping[str, Any], loaders: Loaders | None) -> None:
        """A followed prompt started. ``loaders`` None: ComfyUI's capabilities are not known
        yet, so which models it needs is not either, and the run is not followed."""
        if loaders is None:
            self._run = None
            return
        loader_files = _loader_files(graph, loaders)
        needed = graph_models(graph, loaders)
        self._run = _Run(
            prompt_id=prompt_id,
            started=self._clock(),
            shape=graph_shape(graph),
            steps=sampler_steps(graph),
            nodes=frozenset(graph),
            needed=needed,
            loaded={name for name in needed if name not in self._resident},
            loader_files=loader_files,
        )

    def cached(self, prompt_id: str, nodes: Iterable[str]) -> None:
        """ComfyUI took these nodes' outputs from its cache: a cached loader's model was
        still loaded."""
        if (run := self._running(prompt_id)) is None:
            return
        run.cached.update(nodes)
        for node in run.cached:
            run.loaded.difference_update(run.loader_files.get(node, ()))

    def log_line(self, line: str) -> None:
        """A line ComfyUI logged; one saying weights were loaded counts for the run."""
        if self._run is not None and (mb := loaded_mb(line)) is not None:
            self._run.loaded_mb += mb

    def succeeded(self, prompt_id: str) -> None:
        if (run := self._running(prompt_id)) is not None:
            run.succeeded = True

    def ended(self, prompt_id: str) -> FinishedRun | None:
        """The prompt is over (``executing`` with no node); None if its start was not seen."""
        if (run := self._running(prompt_id)) is None:
            return None
        self._run = None
        run_s = self._clock() - run.started
        self._mark_used(run.needed)
        self._learn_vram(run)
        if run.succeeded and not run.cached >= run.nodes:
            if run.loaded:
                self._learn_switch(run, run_s)
            else:
                self._shape(run.shape).run_s = _averaged(self._shape(run.shape).run_s, run_s)
        self._bound()
        self.version += 1
        return FinishedRun(succeeded=run.succeeded, loaded=frozenset(run.loaded))

    def _running(self, prompt_id: str) -> _Run | None:
        run = self._run
        return run if run is not None and run.prompt_id == prompt_id else None

    def _mark_used(self, names: Iterable[str]) -> None:
        for name in names:
            self._resident[name] = None
            self._resident.move_to_end(name)
            if name in self._files:
                self._files.move_to_end(name)

    def _learn_vram(self, run: _Run) -> None:
        if run.loaded_mb <= 0:
            return
        took = round(run.loaded_mb * MB)
        shape = self._shape(run.shape)
        shape.vram_bytes = max(shape.vram_bytes or 0, took)
        if len(run.loaded) == 1:
            (name,) = run.loaded
            self._file(name).size_bytes = took

    def _learn_switch(self, run: _Run, run_s: float) -> None:
        shape = self._shapes.get(run.shape)
        hot = shape.run_s if shape is not None else None
        hot_s = hot.value if hot is not None else self._speed.expected_s(run.steps)
        switch_s = max(0.0, run_s - hot_s)
        for name, share in self._shares(sorted(run.loaded)).items():
            model = self._file(name)
            model.load_s = _averaged(model.load_s, switch_s * share)
            if self._on_switch is not None:
                self._on_switch(name, switch_s * share)

    def _shares(self, names: list[str]) -> dict[str, float]:
        """Each file's part of a switch: in proportion to what each is believed to cost,
        equal while any is unknown."""
        believed = [self._believed_load_s(name) for name in names]
        total = sum(value for value in believed if value is not None)
        if total <= 0 or None in believed:
            return {name: 1 / len(names) for name in names}
        return {name: (value or 0.0) / total for name, value in zip(names, believed, strict=True)}

    def _believed_load_s(self, name: str) -> float | None:
        file = self._files.get(name)
        return file.load_s.value if file is not None and file.load_s is not None else None

    def _shape(self, shape: str) -> _Shape:
        known = self._shapes.setdefault(shape, _Shape())
        self._shapes.move_to_end(shape)
        return known

    def _file(self, name: str) -> _ModelFile:
        known = self._files.setdefault(name, _ModelFile())
        self._files.move_to_end(name)
        return known

    def _bound(self) -> None:
        for table, limit in (
            (self._shapes, MAX_SHAPES),
            (self._files, MAX_MODEL_FILES),
            (self._resident, MAX_MODEL_FILES),
        ):
            while len(table) > limit:
                table.popitem(last=False)

    # --- what ComfyUI did on its own -----------------------------------------------------------

    def reconnected(self) -> None:
        """ComfyUI's socket was (re)opened: it may have restarted with nothing loaded, and a
        run in progress may have ended unseen."""
        self._resident.clear()
        self._run = None

    def observe_vram(self, total_bytes: int | None, free_bytes: int | None) -> None:
        """ComfyUI's VRAM now: drop the models it must have evicted."""
        if total_bytes is None or free_bytes is None:
            return  # no GPU (or not reported): nothing to infer from
        in_use = max(0, total_bytes - free_bytes)
        evicted = []
        while self._resident and (
            in_use < IDLE_VRAM_BYTES or self._resident_bytes() > in_use + VRAM_SLACK_BYTES
        ):
            evicted.append(self._resident.popitem(last=False)[0])
        if evicted:
            logger.info("models taken as evicted from vram", models=evicted, vram_in_use=in_use)

    def _resident_bytes(self) -> int:
        files = (self._files.get(name) for name in self._resident)
        return sum(file.size_bytes or 0 for file in files if file is not None)

    # --- reading and keeping -------------------------------------------------------------------

    def current(self) -> NodeProfile:
        return self.learned().model_copy(update={"resident": list(self._resident)})

    def learned(self) -> NodeProfile:
        """What is kept across restarts (tables least recently used first)."""
        return NodeProfile(
            load_s={n: f.load_s.value for n, f in self._files.items() if f.load_s is not None},
            model_bytes={
                n: f.size_bytes for n, f in self._files.items() if f.size_bytes is not None
            },
            shape_run_s={s: v.run_s.value for s, v in self._shapes.items() if v.run_s is not None},
            shape_vram_bytes={
                s: v.vram_bytes for s, v in self._shapes.items() if v.vram_bytes is not None
            },
        )

    def _restore(self, initial: NodeProfile) -> None:
        # Recency survives only per table; the merge below is close enough for the bounds.
        for shape, run_s in initial.shape_run_s.items():
            self._shape(shape).run_s = _restored(run_s)
        for shape, vram_bytes in initial.shape_vram_bytes.items():
            self._shapes.setdefault(shape, _Shape()).vram_bytes = vram_bytes
        for name, load_s in initial.load_s.items():
            self._file(name).load_s = _restored(load_s)
        for name, size_bytes in initial.model_bytes.items():
            self._files.setdefault(name, _ModelFile()).size_bytes = size_bytes
        self._bound()


def _averaged(average: _Average | None, sample: float) -> _Average:
    if average is None:
        return _Average(sample)
    average.add(sample)
    return average


def _loader_files(graph: Mapping[str, Any], loaders: Loaders) -> dict[str, tuple[str, ...]]:
    """Each loader node of the graph -> the model files it loads."""
    found = {}
    for node_id, node in graph.items():
        files = graph_models({node_id: node}, loaders)
        if files:
            found[node_id] = files
    return found
