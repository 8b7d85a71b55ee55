"""What ``comfy-stack batch`` costs over submitting the same tasks straight to the API.

Starts an emulated fleet (Redis, ``--nodes`` emulator + service pairs with a tiny step time,
one balancer, each its own process) and makes two sets of ``--files`` small PNGs in
``--folders`` folders (different pixels, so neither run reuses the other's stored images).
Then, after a short warm-up:

- **direct**: a plain loop with ``--concurrency`` workers: multipart ``POST /generate``
  (img2img-sdxl, one step), poll the task (the same pauses as the batch: 50 ms growing to 1 s),
  download its output;
- **batch**: ``run_batch`` over the other set with the same concurrency: scan and signature
  checks, parameters typed by the template's schema, a content key per file, the manifest
  written at each step, outputs mirrored and moved into place.

Each round runs both (the order swapped every round, each on fresh images); prints files per
second for every run and the batch's overhead (its mean wall time over the direct loop's),
and checks that every file of every run succeeded and has its output.

    ./dev bench batch [--files 1000] [--folders 10] [--nodes 3] [--concurrency 16] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
from _common import API, TERMINAL, cpu_seconds, local_cluster, print_grid

from comfy_stack.batch import BatchSpec, GraphMapping, run_batch, scan, template_mapping
from comfy_stack.batch.plan import make_items
from comfy_stack.batch.runner import POLL_S
from comfy_stack.client import AsyncStackClient
from comfy_testkit.image_files import image_bytes
from comfy_testkit.stack import AUTH_HEADERS

PARAMS = {"prompt": "a pencil sketch", "steps": 1}
WARM_UP_FILES = 40


@dataclass(frozen=True)
class Run:
    name: str
    files: int
    wall_s: float
    outputs: int
    client_cpu_s: float = 0.0
    """CPU this process (the client) used during the run."""
    balancer_cpu_s: float = 0.0

    @property
    def files_per_s(self) -> float:
        return self.files / self.wall_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000, help="images per run")
    parser.add_argument("--folders", type=int, default=10, help="folders they are spread over")
    parser.add_argument("--nodes", type=int, default=3, help="emulated ComfyUIs")
    parser.add_argument("--step-time", type=float, default=0.001, help="emulated s per step")
    parser.add_argument("--concurrency", type=int, default=16, help="tasks in flight")
    parser.add_argument(
        "--rounds", type=int, default=2, help="rounds of both runs, the order swapped each round"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as scratch:
        root = Path(scratch)
        _make_images(root / "warm", WARM_UP_FILES, args.folders, 0)
        for n in range(args.rounds):
            for shade, name in enumerate(("direct", "batch"), start=1 + 2 * n):
                _make_images(root / f"{name}-{n}", args.files, args.folders, shade)
        plan_s = _time_plan(root / "batch-0")
        with local_cluster(args.nodes, step_time_s=args.step_time) as cluster:
            runs = asyncio.run(
                _rounds(cluster.balancer.url, cluster.balancer.process.pid, root, args)
            )
    _report(runs, args, plan_s)


async def _rounds(url: str, balancer_pid: int, root: Path, args: argparse.Namespace) -> list[Run]:
    runs = []
    balancer = {"balancer": balancer_pid}
    async with httpx.AsyncClient(base_url=url, headers=AUTH_HEADERS, timeout=60) as http:
        await _direct(http, root / "warm", root / "warm-out", args.concurrency)
        for n in range(args.rounds):
            order = ("direct", "batch") if n % 2 == 0 else ("batch", "direct")
            for name in order:
                images, out = root / f"{name}-{n}", root / f"{name}-{n}-out"
                client_cpu, balancer_cpu = time.process_time(), cpu_seconds(balancer)["balancer"]
                if name == "direct":
                    run = await _direct(http, images, out, args.concurrency)
                else:
                    run = await _batch(AsyncStackClient(http), images, out, args.concurrency)
                runs.append(
                    replace(
                        run, client_cpu_s=time.process_time() - client_cpu,
                        balancer_cpu_s=cpu_seconds(balancer)["balancer"] - balancer_cpu,
                    )
                )  # fmt: skip
    return runs


def _time_plan(images: Path) -> float:
    """Seconds the batch spends before its first submit: scan, signatures, keys (with a
    mapping that needs no API: a template's costs one request more)."""
    mapping = GraphMapping({"10": {"class_type": "LoadImage", "inputs": {}}}, "10")
    started = time.perf_counter()
    make_items(scan([images]).files, mapping)
    return time.perf_counter() - started


def _make_images(folder: Path, count: int, folders: int, shade: int) -> None:
    """``count`` distinct 8x8 PNGs: colour from the index, a set's own blue channel."""
    for index in range(count):
        path = folder / f"folder-{index % folders:02}" / f"img-{index:05}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        color = f"#{index % 256:02x}{index // 256 % 256:02x}{shade * 60:02x}"
        path.write_bytes(image_bytes(".png", color, (8, 8)))


async def _direct(http: httpx.AsyncClient, images: Path, out: Path, concurrency: int) -> Run:
    files = sorted(images.rglob("*.png"))  # noqa: ASYNC240 (the batch scans the same way)
    pending: asyncio.Queue[Path] = asyncio.Queue()
    for path in files:
        pending.put_nowait(path)
    outputs: list[int] = []
    started = time.perf_counter()

    async def worker() -> None:
        while not pending.empty():
            path = pending.get_nowait()
            outputs.append(await _one_direct(http, path, out / path.relative_to(images)))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Run("direct", len(files), time.perf_counter() - started, sum(outputs))


async def _one_direct(http: httpx.AsyncClient, path: Path, target: Path) -> int:
    form = {"request": json.dumps({"workflow": "img2img-sdxl", "params": PARAMS})}
    data = path.read_bytes()  # noqa: ASYNC240 (a small file, read as the batch reads it)
    files = {"image": (path.name, data, "image/png")}
    submitted = await http.post(f"{API}/generate", data=form, files=files)
    submitted.raise_for_status()
    task_id = submitted.json()["id"]
    pause_s, longest_s = POLL_S
    while (task := (await http.get(f"{API}/tasks/{task_id}")).json())["status"] not in TERMINAL:
        await asyncio.sleep(pause_s)
        pause_s = min(pause_s * 1.5, longest_s)
    if task["status"] != "succeeded":
        raise RuntimeError(f"{path}: {task['status']}: {task.get('error')}")
    target.parent.mkdir(parents=True, exist_ok=True)
    for index, output in enumerate(task["outputs"]):
        data = (await http.get(output["url"])).content
        target.with_name(f"{target.stem}-{index}.png").write_bytes(data)
    return len(task["outputs"])


async def _batch(client: AsyncStackClient, images: Path, out: Path, concurrency: int) -> Run:
    started = time.perf_counter()
    raw = [f"{name}={value}" for name, value in PARAMS.items()]
    mapping = await template_mapping(client, "img2img-sdxl", raw)
    spec = BatchSpec(roots=(images,), mapping=mapping, output_root=out, concurrency=concurrency)
    summary = await run_batch(spec, client)
    wall_s = time.perf_counter() - started
    if summary.failed or summary.done != summary.found:
        raise RuntimeError(f"batch did not finish every file: {summary.text()}")
    return Run("batch", summary.found, wall_s, summary.outputs)


def _report(runs: list[Run], args: argparse.Namespace, plan_s: float) -> None:
    print(
        f"{args.files} PNGs (8x8) in {args.folders} folders, img2img-sdxl 1 step, "
        f"{args.nodes} emulated nodes at {args.step_time * 1000:g} ms/step, "
        f"{args.concurrency} in flight, {args.rounds} round(s)\n"
    )
    direct_s = statistics.fmean(run.wall_s for run in runs if run.name == "direct")
    rows = [
        [
            run.name, str(run.files), str(run.outputs), f"{run.wall_s:.1f}",
            f"{run.files_per_s:.1f}", f"{run.wall_s / direct_s:.2f}",
            f"{1000 * run.client_cpu_s / run.files:.2f}",
            f"{1000 * run.balancer_cpu_s / run.files:.2f}",
        ]
        for run in runs
    ]  # fmt: skip
    header = ["run (in order)", "files", "outputs", "wall s", "files/s", "x direct mean"]
    print_grid([*header, "client CPU ms/file", "balancer CPU ms/file"], rows)
    batch_s = statistics.fmean(run.wall_s for run in runs if run.name == "batch")
    print(
        f"\nmean: direct {args.files / direct_s:.1f} files/s, batch {args.files / batch_s:.1f} "
        f"files/s, overhead {100 * (batch_s / direct_s - 1):+.1f} %; the batch's scan, "
        f"signature checks and keys before its first submit: {plan_s * 1000:.0f} ms"
    )
    for run in runs:
        if run.outputs != run.files:
            raise SystemExit(f"{run.name}: {run.outputs} outputs for {run.files} files")


if __name__ == "__main__":
    main()
