// One task: what it is, its events as a timeline (live while it runs), its log from every
// process that handled it, its outputs, its error with ComfyUI's node errors, cancel, run again.
import { api, streamEvents, TERMINAL } from "./api.js";
import { may, navigate, showError } from "./app.js";
import { badge, between, clock, facts, fill, fromNow, h, seconds, when } from "./dom.js";
import { gallery } from "./outputs.js";

export async function render(view, { arg: taskId }) {
  let task = await api(`/api/v1/tasks/${encodeURIComponent(taskId)}`);
  const heading = h("h1", {}, "Task ", h("code", {}, task.id));
  const summary = h("div", { class: "panel" });
  const problem = h("div", {});
  const outputs = h("div", {});
  const timeline = h("ol", { class: "timeline", "aria-label": "Events" });
  const log = h("pre", { class: "log", tabindex: 0, "aria-label": "Log lines" }, "Loading...");
  const actions = h("div", { class: "row" });
  fill(view, heading, actions, summary, problem,
    h("h2", {}, "Outputs"), outputs,
    h("div", { class: "split" },
      h("section", { "aria-labelledby": "events-h" }, h("h2", { id: "events-h" }, "Events"), timeline),
      h("section", { "aria-labelledby": "log-h" }, h("h2", { id: "log-h" }, "Log"),
        h("p", { class: "muted" }, "Lines of the balancer, the service and ComfyUI about this task."), log)));

  let shownStatus = null;
  let shownOutputs = -1;
  const show = (current, standing) => {
    task = current;
    fill(summary, summaryOf(task, standing));
    if (task.outputs.length !== shownOutputs) {
      shownOutputs = task.outputs.length;
      fill(outputs, gallery(task));
    }
    // Redrawn only when the status changes: a button redrawn at every step would lose the
    // keyboard focus.
    if (task.status !== shownStatus) {
      shownStatus = task.status;
      fill(problem, task.error ? errorOf(task.error) : null);
      fill(actions, actionsOf(task, view, (changed) => show(changed)));
    }
  };
  show(task, task.queue_position !== null ? { queue_position: task.queue_position, eta: task.eta } : null);

  const stopping = new AbortController();
  const timelineDone = streamEvents(task.id, {
    signal: stopping.signal,
    onEvent: (event) => { addEvent(timeline, event); show(event.task); },
    onQueue: (standing) => task.status === "queued" && show(task, standing),
  }).catch((error) => { if (!stopping.signal.aborted) showError(timeline.parentElement, error); });
  const refreshLog = async () => fill(log, logLines(await api(`/api/v1/tasks/${task.id}/logs?format=json`)));
  refreshLog().catch((error) => showError(log.parentElement, error));
  timelineDone.then(() => !stopping.signal.aborted && refreshLog().catch(() => {}));
  return () => stopping.abort();
}

function summaryOf(task, standing) {
  const place = task.status === "queued" && standing
    ? `${standing.queue_position} ahead of it${standing.eta ? `, expected to start ${fromNow(standing.eta.start)}` : ""}`
    : "";
  const progress = task.progress?.max ? `step ${task.progress.value} of ${task.progress.max}` : "";
  return facts([
    ["Status", badge(task.status)],
    ["In the queue", place],
    ["Progress", task.status === "running" ? progress : ""],
    ["Workflow", task.workflow || "graph (sent as ComfyUI's API format)"],
    ["Tenant", task.tenant],
    ["Node", task.node_id],
    ["Priority", `${task.priority} (${task.band})`],
    ["Created", when(task.created_at)],
    ["Started", when(task.started_at)],
    ["Finished", when(task.finished_at)],
    ["Ran for", between(task.started_at, task.finished_at)],
    ["Expected GPU time", task.predicted_gpu_s ? seconds(task.predicted_gpu_s) : ""],
    ["Attempts", task.attempt_log.length
      ? task.attempt_log.map((a) => `${a.node_id}${a.outcome ? ` (${a.outcome})` : ""}`).join(", ") : ""],
    ["Parameters", Object.keys(task.params).length ? h("code", {}, JSON.stringify(task.params)) : ""],
  ]);
}

function actionsOf(task, view, changed) {
  const buttons = [];
  if (!TERMINAL.includes(task.status) && may("submit")) {
    buttons.push(h("button", { type: "button", class: "danger", onclick: async (event) => {
      event.target.disabled = true;
      try { changed(await api(`/api/v1/tasks/${task.id}`, { method: "DELETE" })); }
      catch (error) { showError(view, error); event.target.disabled = false; }
    } }, "Cancel"));
  }
  if (task.workflow && may("submit")) {
    buttons.push(h("button", { type: "button", class: "quiet",
      onclick: () => navigate("generate", { from: task.id }) }, "Run again with edits"));
  }
  buttons.push(h("a", { class: "button quiet", href: `/api/v1/tasks/${task.id}/logs`, download: `${task.id}.log` }, "Download the log"));
  return buttons;
}

/** The error, and ComfyUI's own words for each graph node it blamed. */
function errorOf(error) {
  const details = error.details || {};
  const nodeErrors = details.node_errors && typeof details.node_errors === "object" ? details.node_errors : {};
  const blamed = Object.entries(nodeErrors).map(([nodeId, problem]) =>
    h("div", { class: "node-error", "data-node": nodeId },
      h("strong", {}, `Graph node ${nodeId}`, problem.class_type ? ` (${problem.class_type})` : ""),
      h("ul", {}, (problem.errors || []).map((e) =>
        h("li", {}, e.message || e.type, e.details ? `: ${e.details}` : "")))));
  if (details.node_id) {
    blamed.push(h("div", { class: "node-error", "data-node": details.node_id },
      h("strong", {}, `Graph node ${details.node_id}`, details.node_type ? ` (${details.node_type})` : ""),
      details.exception_message ? h("p", {}, details.exception_message) : null));
  }
  const rest = Object.fromEntries(Object.entries(details).filter(([k]) =>
    !["node_errors", "node_id", "node_type", "exception_message"].includes(k)));
  return h("section", { class: "alert", role: "alert", "aria-label": "What went wrong" },
    h("p", {}, h("strong", {}, `${error.type} error: `), error.message),
    blamed,
    Object.keys(rest).length ? h("details", {}, h("summary", {}, "Details"), h("pre", {}, JSON.stringify(rest, null, 2))) : null);
}

/** One line per state change and output; a run of progress events is one line, updated. */
function addEvent(timeline, event) {
  const last = timeline.lastElementChild;
  const task = event.task;
  if (event.kind === "progress" && last?.dataset.kind === "progress") {
    fill(last.querySelector("span"), progressText(task));
    return;
  }
  if (event.kind === "state" && last?.dataset.status === task.status) return; // a detail changed
  let text;
  if (event.kind === "progress") text = progressText(task);
  else if (event.kind === "output") text = `output: ${task.outputs.length} file(s)`;
  else text = [badge(task.status), task.node_id && task.status !== "queued" ? ` on ${task.node_id}` : "",
    task.error ? ` - ${task.error.message}` : ""];
  timeline.append(h("li", { "data-kind": event.kind, "data-status": event.kind === "state" ? task.status : null },
    h("time", { datetime: event.at }, clock(event.at)), h("span", {}, text)));
}

function progressText(task) {
  const p = task.progress;
  return p?.max ? `progress: step ${p.value} of ${p.max}${p.node ? ` (graph node ${p.node})` : ""}` : "progress";
}

function logLines(records) {
  if (!records.length) return "No log lines yet.";
  return records.map((r) => h("span", { class: r.level },
    `${clock(r.time)} ${r.level.padEnd(7)} ${r.service}/${r.node ?? "-"}${r.source ? ` [${r.source}]` : ""} ${r.message}\n`));
}
