// Queue and usage: what waits, by band and tenant, in the order it will start with its ETA;
// and the GPU-seconds each tenant used.
import { api, query } from "./api.js";
import { showError } from "./app.js";
import { every, fill, fromNow, h, seconds, table } from "./dom.js";

const REFRESH_MS = 3000;
const LISTED = 100;

export async function render(view, { me }) {
  const stats = h("div", { class: "stats" });
  const waiting = h("div", {});
  const usage = h("div", {});
  fill(view, h("h1", {}, "Queue and usage"), stats,
    h("h2", {}, "Waiting, in the order they will start"), waiting,
    h("h2", {}, "GPU time used this month"), usage);
  const today = new Date().toISOString().slice(0, 10);
  api(`/api/v1/usage${query({ since: `${today.slice(0, 8)}01`, until: today })}`)
    .then((report) => fill(usage, usageTable(report)))
    .catch((error) => showError(usage, error));
  let shownError = null;
  return every(REFRESH_MS, async () => {
    try {
      const [queue, listed] = await Promise.all([
        api("/api/v1/queue"), api(`/api/v1/queue/tasks${query({ limit: LISTED })}`)]);
      shownError?.remove();
      shownError = null;
      fill(stats, statsOf(queue, me));
      fill(waiting, waitingTable(listed, me.scopes.includes("admin")));
    } catch (error) {
      shownError?.remove();
      shownError = showError(view, error);
    }
  });
}

function stat(label, value) {
  return h("div", { class: "stat" }, h("b", {}, String(value)), label);
}

function statsOf(queue) {
  const bands = Object.entries(queue.by_band || {});
  const tenants = Object.entries(queue.by_tenant || {});
  return [
    stat("waiting in all", queue.pending),
    bands.map(([band, n]) => stat(`${band}`, n)),
    tenants.map(([tenant, n]) => stat(`of ${tenant}`, n)),
    queue.oldest_wait_s !== null ? stat("oldest wait", seconds(queue.oldest_wait_s)) : null,
  ];
}

function waitingTable(listed, admin) {
  const tasks = Array.isArray(listed) ? listed : listed.tasks || [];
  return table("Waiting tasks", [
    ["Place", (t) => String(t.position), "num"],
    ["Task", (t) => h("a", { href: `#/tasks/${t.task_id}` }, h("code", {}, t.task_id.slice(0, 12)))],
    admin ? ["Tenant", (t) => t.tenant] : null,
    ["Workflow", (t) => t.workflow || "graph"],
    ["Band", (t) => t.band, "optional"],
    ["Priority", (t) => String(t.priority), "num optional"],
    ["Expected start", (t) => (t.eta ? fromNow(t.eta.start) : "")],
    ["Expected end", (t) => (t.eta ? fromNow(t.eta.finish) : ""), "optional"],
  ].filter(Boolean), tasks, { empty: "Nothing is waiting." });
}

function usageTable(report) {
  return table("GPU time per tenant", [
    ["Tenant", (t) => t.tenant],
    ["GPU time", (t) => seconds(t.totals.gpu_s), "num"],
    ["Succeeded", (t) => String(t.totals.tasks.succeeded ?? 0), "num"],
    ["Failed", (t) => String(t.totals.tasks.failed ?? 0), "num optional"],
    ["Cancelled", (t) => String(t.totals.tasks.cancelled ?? 0), "num optional"],
  ], report.tenants, { empty: "No task ended this month." });
}
