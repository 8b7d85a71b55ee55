// Nodes: every node's state, GPUs, models in VRAM, measured speed and load, refreshed live.
import { api } from "./api.js";
import { showError } from "./app.js";
import { badge, bytes, every, facts, fill, fromNow, h } from "./dom.js";

const REFRESH_MS = 2000;

export async function render(view) {
  const cards = h("div", { class: "cards", "aria-busy": "true" }); // not live: redrawn every 2 s
  const counts = h("p", { class: "muted" });
  fill(view, h("h1", {}, "Nodes"), counts, cards);
  let shownError = null;
  return every(REFRESH_MS, async () => {
    try {
      const nodes = await api("/api/v1/nodes");
      shownError?.remove();
      shownError = null;
      const live = nodes.filter((n) => n.state !== "dead");
      fill(counts, `${live.length} of ${nodes.length} nodes alive, `,
        `${nodes.reduce((sum, n) => sum + n.in_flight, 0)} tasks in flight on ${nodes.reduce((sum, n) => sum + n.slots, 0)} slots.`);
      nodes.sort((a, b) => a.node_id.localeCompare(b.node_id));
      fill(cards, nodes.length ? nodes.map(nodeCard) : h("p", { class: "muted" }, "No node has published its health yet."));
      cards.setAttribute("aria-busy", "false");
    } catch (error) {
      shownError?.remove();
      shownError = showError(view, error);
    }
  });
}

function nodeCard(node) {
  const health = node.health;
  const comfy = health?.comfyui;
  const speed = health?.speed;
  const resident = health?.profile?.resident || [];
  return h("article", { class: "panel", "data-node": node.node_id, "aria-labelledby": `node-${node.node_id}` },
    h("h2", { id: `node-${node.node_id}` }, node.node_id, " ", badge(node.state)),
    facts([
      ["Tasks in flight", `${node.in_flight} of ${node.slots} slots`],
      ["Recent failures", String(node.recent_failures)],
      ["ComfyUI", comfy ? (comfy.reachable ? `up${comfy.version ? `, ${comfy.version}` : ""}` : `down: ${comfy.error || "unreachable"}`) : ""],
      ["Speed", speed ? `${speed.seconds_per_step.toFixed(3)} s a step + ${speed.overhead_s.toFixed(1)} s (from ${speed.tasks_measured} tasks)` : "not measured yet"],
      ["Models in VRAM", resident.length ? resident.join(", ") : "none known"],
      ["CPU", health ? `${health.cpu_percent.toFixed(0)} %` : ""],
      ["RAM", health ? `${bytes(health.ram_used_bytes)} of ${bytes(health.ram_total_bytes)}` : ""],
      ["Last seen", fromNow(node.last_seen)],
      ["Address", node.url],
    ]),
    (health?.gpus || []).map(gpuOf));
}

function gpuOf(gpu) {
  const used = gpu.memory_used_bytes;
  const total = gpu.memory_total_bytes;
  return h("section", { class: "gpu", "aria-label": `GPU ${gpu.index}` },
    h("h3", {}, `GPU ${gpu.index}: ${gpu.name}`),
    facts([
      ["Utilisation", gpu.utilization_percent !== null ? h("span", {},
        h("meter", { min: 0, max: 100, value: gpu.utilization_percent, "aria-label": "GPU utilisation" }),
        ` ${gpu.utilization_percent.toFixed(0)} %`) : ""],
      ["VRAM", used !== null && total ? h("span", {},
        h("meter", { min: 0, max: total, value: used, high: total * 0.9, "aria-label": "VRAM used" }),
        ` ${bytes(used)} of ${bytes(total)}`) : ""],
      ["Temperature", gpu.temperature_c !== null ? `${gpu.temperature_c.toFixed(0)} °C` : ""],
    ]));
}
