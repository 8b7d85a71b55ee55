// Generate: a template's form, made from the JSON Schema of its parameters; submit, follow
// the task live, see the results, run again with edits.
import { api, follow, TERMINAL } from "./api.js";
import { may, showError } from "./app.js";
import { badge, bytes, facts, field, fill, fromNow, h, seconds } from "./dom.js";
import { gallery } from "./outputs.js";

const MAX_SEED = Number.MAX_SAFE_INTEGER;

export async function render(view, { params }) {
  const workflows = await api("/api/v1/workflows");
  const heading = h("h1", {}, "Generate");
  if (!workflows.length) {
    fill(view, heading, h("p", {}, "This balancer has no workflow templates."));
    return null;
  }
  const from = params.get("from");
  const earlier = from ? await api(`/api/v1/tasks/${encodeURIComponent(from)}`) : null;
  const chosen = earlier?.workflow || params.get("workflow") || workflows[0].name;
  const picker = h("select", { name: "workflow" },
    workflows.map((w) => h("option", { value: w.name, selected: w.name === chosen }, w.name)));
  const formArea = h("div", {});
  const live = h("section", { "aria-live": "polite", "aria-label": "The task" });
  let stop = null;
  let form = null;

  const showForm = (name, values) => {
    const workflow = workflows.find((w) => w.name === name) || workflows[0];
    form = new TemplateForm(workflow, values);
    fill(formArea, h("p", { class: "muted" }, workflow.description), form.element);
    form.element.addEventListener("submit", async (event) => {
      event.preventDefault();
      stop?.();
      stop = await submit(form, live);
    });
  };
  picker.addEventListener("change", () => showForm(picker.value, {}));
  showForm(chosen, earlier?.params || {});

  fill(view, heading,
    h("div", { class: "split" },
      h("div", { class: "panel" }, field("workflow", "Workflow template", picker), formArea),
      h("div", { class: "sticky" }, live)));
  if (!may("submit")) {
    showError(view, new Error("this key may only read: it cannot submit tasks"));
  }
  return () => stop?.();
}

async function submit(form, live) {
  let request;
  try {
    request = form.request();
  } catch (error) {
    form.button.disabled = false;
    showError(form.element, error);
    return null;
  }
  form.button.disabled = true;
  form.element.querySelectorAll(".alert").forEach((box) => box.remove());
  let task;
  try {
    task = await api("/api/v1/generate", request);
  } catch (error) {
    showError(form.element, error);
    form.highlight(error);
    return null;
  } finally {
    form.button.disabled = false;
  }
  const panel = new TaskPanel(task);
  fill(live, panel.element);
  return follow(task.id, {
    onTask: (view) => panel.update(view),
    onQueue: (standing) => panel.queued(standing),
  });
}

/** The form of one template: a control per parameter, by its JSON Schema. */
class TemplateForm {
  constructor(workflow, values) {
    this.workflow = workflow;
    this.files = new Map();
    this.controls = new Map();
    const schema = workflow.parameters;
    const required = new Set(schema.required || []);
    const fields = Object.entries(schema.properties || {}).map(([name, spec]) =>
      this.field(name, spec, required.has(name), values[name]));
    this.button = h("button", { type: "submit" }, "Generate");
    this.element = h("form", { novalidate: false, "aria-label": `Parameters of ${workflow.name}` },
      fields, h("div", { class: "row" }, this.button));
  }

  field(name, spec, required, value) {
    const id = `param-${name}`;
    const label = required ? `${name} (required)` : name;
    const hint = spec.description?.replace(/ \((base64, or an https:\/\/ URL to fetch|random when unset)\)$/, "");
    if (spec.contentEncoding === "base64") return this.imageField(id, name, label, hint, required);
    let control;
    if (spec.enum) {
      control = h("select", { name, required },
        required ? null : h("option", { value: "" }, "(default)"),
        spec.enum.map((choice) => h("option", { value: choice }, choice)));
    } else if (spec.type === "boolean") {
      control = h("input", { type: "checkbox", name });
      control.checked = Boolean(value ?? spec.default);
      this.controls.set(name, { control, spec });
      return h("div", { class: "field inline" }, control, h("label", { for: id }, label),
        hint ? h("span", { class: "hint" }, hint) : null);
    } else if (spec.type === "integer" || spec.type === "number") {
      control = h("input", {
        type: "number", name, required, inputmode: spec.type === "integer" ? "numeric" : "decimal",
        min: spec.minimum, max: spec.maximum === undefined ? null : Math.min(spec.maximum, MAX_SEED),
        step: spec.type === "integer" ? 1 : "any", placeholder: spec.default ?? (spec["x-random"] ? "random" : ""),
      });
    } else if (/prompt|text/.test(name)) {
      control = h("textarea", { name, required, rows: 3, placeholder: spec.default ?? "" });
    } else {
      control = h("input", { type: "text", name, required, placeholder: spec.default ?? "" });
    }
    if (value !== undefined && value !== null) control.value = String(value);
    else if (spec.default !== undefined && spec.enum) control.value = String(spec.default);
    this.controls.set(name, { control, spec });
    const box = field(id, label, control, hint);
    if (spec["x-random"]) {
      const dice = h("button", {
        type: "button", class: "quiet", title: `A random ${name}`, "aria-label": `A random ${name}`,
        onclick: () => { control.value = String(randomSeed()); },
      }, "Random");
      const row = h("div", { class: "with-button" });
      control.replaceWith(row);
      row.append(control, dice);
    }
    return box;
  }

  imageField(id, name, label, hint, required) {
    const input = h("input", { type: "file", name, accept: "image/png,image/jpeg,image/webp", required });
    const zone = h("div", { class: "drop" }, "Drop an image here, or choose a file below.");
    const show = (file) => {
      this.files.set(name, file);
      const preview = h("img", { alt: `The chosen ${name}` });
      preview.src = URL.createObjectURL(file);
      fill(zone, `${file.name} (${bytes(file.size)})`, preview);
    };
    input.addEventListener("change", () => input.files[0] && show(input.files[0]));
    zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      const file = event.dataTransfer.files[0];
      if (file) show(file);
    });
    this.controls.set(name, { control: input, spec: { image: true } });
    return h("div", { class: "field" }, h("label", { for: id }, label), zone,
      Object.assign(input, { id }), hint ? h("span", { class: "hint" }, hint) : null);
  }

  /** The request for /api/v1/generate: JSON, or multipart when an image was chosen. */
  request() {
    const params = {};
    for (const [name, { control, spec }] of this.controls) {
      if (spec.image) continue;
      if (spec.type === "boolean") { params[name] = control.checked; continue; }
      const text = control.value.trim();
      if (text === "") continue;
      if (spec.type === "integer" || spec.type === "number") {
        const number = Number(text);
        if (!Number.isFinite(number)) throw new Error(`${name}: not a number`);
        params[name] = number;
      } else {
        params[name] = control.value;
      }
    }
    const body = { workflow: this.workflow.name, params, previews: true };
    if (!this.files.size) return { method: "POST", json: body };
    const form = new FormData();
    form.append("request", JSON.stringify(body));
    for (const [name, file] of this.files) form.append(name, file, file.name);
    return { method: "POST", form };
  }

  /** Marks the fields an invalid_params answer names. */
  highlight(error) {
    const named = error.body?.errors || {};
    for (const [name, { control }] of this.controls) {
      if (named[name]) {
        control.setAttribute("aria-invalid", "true");
        control.title = named[name];
      } else {
        control.removeAttribute("aria-invalid");
      }
    }
  }
}

function randomSeed() {
  const words = crypto.getRandomValues(new Uint32Array(2));
  return (words[0] & 0x1fffff) * 2 ** 32 + words[1];
}

/** The submitted task, live: place in the queue and ETA, then node and step, then results. */
class TaskPanel {
  constructor(task) {
    this.status = h("span", {});
    this.where = h("div", {});
    this.progress = h("progress", { max: 1, value: 0, "aria-label": "Progress" });
    this.preview = new LivePreview(task.id);
    this.results = h("div", {});
    this.actions = h("div", { class: "row" });
    this.element = h("div", { class: "panel", id: "live-task" },
      h("h2", {}, "Task ", h("a", { href: `#/tasks/${task.id}` }, task.id)),
      h("p", {}, this.status), this.where, this.progress, this.actions, this.preview.element,
      this.results);
    this.update(task);
    if (task.queue_position !== null && task.queue_position !== undefined) {
      this.queued({ queue_position: task.queue_position, eta: task.eta });
    }
  }

  queued(standing) {
    if (this.task?.status !== "queued") return;
    const ahead = standing.queue_position;
    const place = ahead === 0 ? "next to start" : `${ahead} ahead of it`;
    const eta = standing.eta ? `, expected to start ${fromNow(standing.eta.start)}` : "";
    fill(this.where, h("span", { class: "queue-place" }, `In the queue: ${place}${eta}`));
  }

  update(task) {
    this.task = task;
    fill(this.status, badge(task.status), " ", task.workflow || "graph");
    const progress = task.progress;
    if (task.status === "running" || task.status === "dispatched") {
      const step = progress?.max ? `step ${progress.value} of ${progress.max}` : "starting";
      fill(this.where, `On node ${task.node_id || "?"}: ${step}`, progress?.node ? ` (graph node ${progress.node})` : "");
      this.progress.max = progress?.max || 1;
      this.progress.value = progress?.value || 0;
      if (progress?.value) this.preview.step(progress.value);
    }
    if (task.status === this.shownStatus) return; // the Cancel button keeps its focus
    this.shownStatus = task.status;
    if (TERMINAL.includes(task.status)) this.finished(task);
    else if (may("submit")) {
      fill(this.actions, h("button", {
        type: "button", class: "danger", onclick: async (event) => {
          event.target.disabled = true;
          try { this.update(await api(`/api/v1/tasks/${task.id}`, { method: "DELETE" })); }
          catch (error) { showError(this.element, error); event.target.disabled = false; }
        },
      }, "Cancel"));
    }
  }

  finished(task) {
    this.preview.end();
    this.progress.max = 1;
    this.progress.value = task.status === "succeeded" ? 1 : 0;
    const took = task.started_at && task.finished_at
      ? seconds((new Date(task.finished_at) - new Date(task.started_at)) / 1000) : "";
    fill(this.where, facts([["Node", task.node_id], ["Ran for", took], ["Seed and values", JSON.stringify(task.params)]]));
    fill(this.actions);
    if (task.error) {
      this.results.before(h("div", { class: "alert", role: "alert" },
        h("strong", {}, `${task.error.type}: `), task.error.message));
    }
    fill(this.results, gallery(task));
  }
}

/** The sampler's newest preview while the task runs: asked for at most once at a time, at
 * the steps the event stream reports (GET /api/v1/tasks/{id}/preview: 204 until there is
 * one). */
class LivePreview {
  constructor(taskId) {
    this.url = `/api/v1/tasks/${encodeURIComponent(taskId)}/preview`;
    this.image = h("img", { class: "preview", alt: "" });
    this.element = h("figure", { class: "live-preview", hidden: true }, this.image,
      h("figcaption", { class: "muted" }, "Preview"));
    this.asking = false;
    this.wanted = 0;
    this.shown = 0;
  }

  async step(value) {
    this.wanted = value;
    if (this.asking || this.ended) return;
    this.asking = true;
    try {
      while (this.wanted > this.shown && !this.ended) {
        const asked = this.wanted;
        const response = await fetch(this.url, { credentials: "same-origin" });
        if (response.status !== 200) break;
        const image = await response.blob();
        if (this.ended) break; // the task ended while the image came: its results show
        const old = this.image.src;
        this.image.src = URL.createObjectURL(image);
        this.image.alt = `Preview at step ${asked}`;
        if (old) URL.revokeObjectURL(old);
        this.element.hidden = false;
        this.shown = asked;
      }
    } finally {
      this.asking = false;
    }
  }

  end() {
    this.ended = true;
    this.element.hidden = true;
  }
}
