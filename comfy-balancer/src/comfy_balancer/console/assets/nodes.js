// Nodes: every node's state, GPUs, models in VRAM, measured speed and load, refreshed live;
// an admin drains a node for maintenance (it finishes its tasks, takes no new one) and undrains it.
import { api } from "./api.js";
import { may, showError } from "./app.js";
import { badge, bytes, every, facts, fill, fromNow, h } from "./dom.js";

const REFRESH_MS = 2000;

export async function render(view) {
  const cards = h("div", { class: "cards", "aria-busy": "true" }); // not live: redrawn every 2 s
  const counts = h("p", { class: "muted" });
  fill(view, h("h1", {}, "Nodes"), counts, cards);
  let shownError = null;
  const shown = new Map(); // node id -> its card, kept across redraws (see drawCard)
  const onError = (error) => { shownError?.remove(); shownError = showError(view, error); };
  return every(REFRESH_MS, async () => {
    try {
      const nodes = await api("/api/v1/nodes");
      shownError?.remove();
      shownError = null;
      const live = nodes.filter((n) => n.state !== "dead");
      fill(counts, `${live.length} of ${nodes.length} nodes alive, `,
        `${nodes.reduce((sum, n) => sum + n.in_flight, 0)} tasks in flight on ${nodes.reduce((sum, n) => sum + n.slots, 0)} slots.`);
      nodes.sort((a, b) => a.node_id.localeCompare(b.node_id));
      for (const node of nodes) drawCard(shown, node, onError);
      const order = nodes.map((n) => n.node_id).join("\n");
      if (!nodes.length || cards.dataset.order !== order) { // a card put back in place loses focus
        cards.dataset.order = order;
        fill(cards, nodes.length ? nodes.map((n) => shown.get(n.node_id).card) : h("p", { class: "muted" }, "No node has published its health yet."));
      }
      cards.setAttribute("aria-busy", "false");
    } catch (error) {
      onError(error);
    }
  });
}

/** Draw ``node`` into its card in ``shown``. Its heading and buttons are redrawn only when its
 * state changes, so a button keeps the keyboard focus through the redraws every 2 s (and the
 * one that replaces it, Drain for Undrain, takes the focus over: ``focus``, as the clicked
 * button lost it when disabled); its facts, every time. */
function drawCard(shown, node, onError, { focus = false } = {}) {
  let card = shown.get(node.node_id);
  if (!card) {
    const head = h("div", { class: "node-head" });
    const body = h("div");
    card = { head, body, state: null, card: h("article", { class: "panel", "data-node": node.node_id, "aria-labelledby": `node-${node.node_id}` }, head, body) };
    shown.set(node.node_id, card);
  }
  const shownState = `${node.state} ${node.drained}`;
  if (focus || card.state !== shownState) {
    const focused = focus || card.head.contains(document.activeElement);
    card.state = shownState;
    fill(card.head, h("h2", { id: `node-${node.node_id}` }, node.node_id, " ", badge(node.state)),
      may("admin") ? drainButton(node, (changed) => drawCard(shown, changed, onError, { focus: true }), onError) : null);
    if (focused) card.head.querySelector("button")?.focus();
  }
  fill(card.body, ...nodeFacts(node));
}

function drainButton(node, redraw, onError) {
  const [label, action] = node.drained ? ["Undrain", "undrain"] : ["Drain", "drain"];
  return h("button", { type: "button", class: "quiet", "aria-label": `${label} node ${node.node_id}`,
    onclick: async (event) => {
      const button = event.currentTarget;
      button.disabled = true;
      try { redraw(await api(`/api/v1/nodes/${encodeURIComponent(node.node_id)}/${action}`, { method: "POST" })); }
      catch (error) { onError(error); button.disabled = false; }
    } }, label);
}

function nodeFacts(node) {
  const health = node.health;
  const comfy = health?.comfyui;
  const speed = health?.speed;
  const resident = health?.profile?.resident || [];
  return [
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
    (health?.gpus || []).map(gpuOf)];
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
