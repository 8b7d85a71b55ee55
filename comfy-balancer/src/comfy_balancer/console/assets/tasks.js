// Tasks: the list, filtered and paged by the server (GET /api/v1/tasks), newest first.
import { api, query } from "./api.js";
import { navigate } from "./app.js";
import { badge, between, field, fill, h, when } from "./dom.js";

const STATUSES = ["queued", "dispatched", "running", "succeeded", "failed", "cancelled"];
const FILTERS = ["status", "tenant", "workflow", "node", "since", "until"];
const PAGE_SIZE = 50;
const MAX_REQUESTS_A_PAGE = 10;

export async function render(view, { me, params }) {
  const workflows = await api("/api/v1/workflows");
  const admin = me.scopes.includes("admin");
  const controls = {
    status: h("select", {}, h("option", { value: "" }, "any"), STATUSES.map((s) => h("option", { value: s }, s))),
    tenant: h("input", { type: "text", size: 12, autocomplete: "off", spellcheck: "false" }),
    workflow: h("select", {}, h("option", { value: "" }, "any"), workflows.map((w) => h("option", { value: w.name }, w.name))),
    node: h("input", { type: "text", size: 12, autocomplete: "off", spellcheck: "false" }),
    since: h("input", { type: "datetime-local", step: 1 }),
    until: h("input", { type: "datetime-local", step: 1 }),
  };
  for (const name of FILTERS) controls[name].value = localValue(name, params.get(name) || "");
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter the tasks" },
    field("f-status", "Status", controls.status),
    admin ? field("f-tenant", "Tenant", controls.tenant) : null,
    field("f-workflow", "Workflow", controls.workflow),
    field("f-node", "Node", controls.node),
    field("f-since", "Created from", controls.since),
    field("f-until", "Created until", controls.until),
    h("div", { class: "row" }, h("button", { type: "submit" }, "Filter"),
      h("button", { type: "button", class: "quiet", onclick: () => navigate("tasks") }, "Clear")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = {};
    for (const name of FILTERS) chosen[name] = apiValue(name, controls[name].value.trim());
    navigate("tasks", chosen);
  });

  const listing = h("div", { "aria-live": "polite" });
  fill(view, h("h1", {}, "Tasks"), form, listing);

  const filters = {};
  for (const name of FILTERS) if (params.get(name)) filters[name] = params.get(name);
  const cursors = [params.get("cursor") || ""];
  const showPage = async () => {
    const page = await fullPage(filters, cursors[cursors.length - 1]);
    const older = h("button", { type: "button", class: "quiet", disabled: !page.next_cursor,
      onclick: () => { cursors.push(page.next_cursor); showPage(); } }, "Older");
    const newer = h("button", { type: "button", class: "quiet", disabled: cursors.length === 1,
      onclick: () => { cursors.pop(); showPage(); } }, "Newer");
    fill(listing, taskTable(page.tasks, admin),
      h("div", { class: "pager" }, newer, older,
        h("span", { class: "muted" }, `page ${cursors.length}, ${page.tasks.length} tasks`)));
  };
  await showPage();
  return null;
}

/** A page of PAGE_SIZE tasks: the server bounds the work of one request, so with a rare
 * filter a page can come back short with a cursor to go on from; follow it a few times. */
async function fullPage(filters, cursor) {
  const tasks = [];
  let next = cursor;
  for (let request = 0; request < MAX_REQUESTS_A_PAGE; request += 1) {
    const page = await api(`/api/v1/tasks${query({ ...filters, limit: PAGE_SIZE - tasks.length, cursor: next })}`);
    tasks.push(...page.tasks);
    next = page.next_cursor;
    if (!next || tasks.length >= PAGE_SIZE) break;
  }
  return { tasks, next_cursor: next };
}

export function taskTable(tasks, showTenant) {
  const columns = [
    ["Task", (t) => h("a", { href: `#/tasks/${t.id}` }, h("code", {}, t.id.slice(0, 12)))],
    ["Status", (t) => badge(t.status)],
    ["Workflow", (t) => t.workflow || "graph"],
    showTenant ? ["Tenant", (t) => t.tenant, "optional"] : null,
    ["Node", (t) => t.node_id || "", "optional"],
    ["Created", (t) => when(t.created_at)],
    ["Ran for", (t) => between(t.started_at, t.finished_at), "num optional"],
  ].filter(Boolean);
  return h("div", { id: "task-list" }, taskTableBody(columns, tasks));
}

function taskTableBody(columns, tasks) {
  if (!tasks.length) return h("p", { class: "muted" }, "No task matches.");
  return h("div", { class: "table-wrap" }, h("table", {},
    h("caption", { class: "skip" }, "Tasks, newest first"),
    h("thead", {}, h("tr", {}, columns.map(([head, , cls]) => h("th", { scope: "col", class: cls }, head)))),
    h("tbody", {}, tasks.map((task) => h("tr", { "data-task": task.id },
      columns.map(([, cell, cls]) => h("td", { class: cls }, cell(task))))))));
}

/** The API takes times as ISO 8601 with a zone; the input shows local time. */
function apiValue(name, value) {
  if (!value || (name !== "since" && name !== "until")) return value;
  return new Date(value).toISOString();
}

function localValue(name, value) {
  if (!value || (name !== "since" && name !== "until")) return value;
  const at = new Date(value);
  if (Number.isNaN(at.getTime())) return "";
  return new Date(at.getTime() - at.getTimezoneOffset() * 60000).toISOString().slice(0, 19);
}
