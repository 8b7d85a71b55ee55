// Keys (admin): create one (its secret shown this once), list them, revoke.
import { api } from "./api.js";
import { showError } from "./app.js";
import { field, fill, h, table, when } from "./dom.js";

// The API's name rule, as the browser checks it (the v flag wants "-" escaped in a class).
const NAME_PATTERN = "[A-Za-z0-9][A-Za-z0-9._\\-]{0,63}";
const SCOPES = [
  ["submit", "submit and cancel tasks"],
  ["read", "read tasks, nodes and the queue"],
  ["admin", "everything, every tenant and the keys"],
];
const LIMITS = [
  ["max_running", "Tasks running at once"],
  ["max_queued", "Tasks waiting at once"],
  ["submits_per_minute", "Submits per minute"],
  ["max_priority", "Highest priority"],
  ["gpu_seconds_per_day", "GPU-seconds per day"],
];

export async function render(view, { me }) {
  if (!me.scopes.includes("admin")) {
    fill(view, h("h1", {}, "Keys"), h("p", {}, "Only an admin key manages keys."));
    return null;
  }
  const created = h("div", { "aria-live": "polite" });
  const listing = h("div", {});
  const refresh = async () => fill(listing, keyTable(await api("/api/v1/keys"), view, refresh));
  fill(view, h("h1", {}, "Keys"), createForm(created, refresh), created, h("h2", {}, "Every key"), listing);
  await refresh();
  return null;
}

function createForm(created, refresh) {
  const name = h("input", { type: "text", required: true, pattern: NAME_PATTERN,
    autocomplete: "off", spellcheck: "false" });
  const tenant = h("input", { type: "text", pattern: NAME_PATTERN, autocomplete: "off",
    spellcheck: "false", placeholder: "the name" });
  const scopes = SCOPES.map(([scope, what]) => {
    const box = h("input", { type: "checkbox", id: `scope-${scope}`, value: scope, checked: scope !== "admin" });
    return { scope, box, element: h("div", { class: "field inline" }, box,
      h("label", { for: `scope-${scope}` }, scope), h("span", { class: "hint" }, what)) };
  });
  const limits = LIMITS.map(([key, label]) => ({ key, input: h("input", { type: "number", min: key === "max_priority" ? null : 1, step: key === "gpu_seconds_per_day" ? "any" : 1, placeholder: "no limit" }), label }));
  const button = h("button", { type: "submit" }, "Create the key");
  const form = h("form", { class: "panel", "aria-label": "A new key" },
    h("h2", {}, "A new key"),
    h("div", { class: "filters" }, field("key-name", "Name", name, "Who the key is for."),
      field("key-tenant", "Tenant", tenant, "Whose tasks it sees.")),
    h("fieldset", {}, h("legend", {}, "Scopes"), scopes.map((s) => s.element)),
    h("fieldset", {}, h("legend", {}, "Limits"),
      h("div", { class: "filters" }, limits.map(({ key, input, label }) => field(`limit-${key}`, label, input)))),
    button);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    form.querySelectorAll(".alert").forEach((box) => box.remove());
    const body = {
      name: name.value.trim(),
      scopes: scopes.filter((s) => s.box.checked).map((s) => s.scope),
      limits: Object.fromEntries(limits.filter(({ input }) => input.value !== "")
        .map(({ key, input }) => [key, Number(input.value)])),
    };
    if (tenant.value.trim()) body.tenant = tenant.value.trim();
    button.disabled = true;
    try {
      const key = await api("/api/v1/keys", { method: "POST", json: body });
      fill(created, secretOf(key));
      form.reset();
      await refresh();
      created.querySelector("code")?.focus();
    } catch (error) {
      showError(form, error);
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

function secretOf(key) {
  const secret = h("code", { id: "new-key-secret", tabindex: 0 }, key.key);
  const copy = h("button", { type: "button", class: "quiet", onclick: async () => {
    await navigator.clipboard.writeText(key.key);
    copy.textContent = "Copied";
  } }, "Copy");
  return h("div", { class: "alert ok", role: "status" },
    h("p", {}, h("strong", {}, `Key ${key.id} for ${key.tenant}. `),
      "Its secret is shown this once: copy it now, it cannot be read again."),
    h("div", { class: "secret" }, secret, copy));
}

function keyTable(keys, view, refresh) {
  const limitsOf = (k) => Object.entries(k.limits).filter(([, v]) => v !== null)
    .map(([name, v]) => `${name} ${v}`).join(", ") || "none";
  return table("API keys", [
    ["Id", (k) => h("code", {}, k.id)],
    ["Name", (k) => k.name],
    ["Tenant", (k) => k.tenant],
    ["Scopes", (k) => k.scopes.join(", ")],
    ["Limits", limitsOf, "optional"],
    ["Created", (k) => when(k.created_at), "optional"],
    ["", (k) => h("button", { type: "button", class: "danger", "aria-label": `Revoke ${k.name} (${k.id})`,
      onclick: async (event) => {
        if (!window.confirm(`Revoke ${k.name} (${k.id})? Its holders are refused within seconds.`)) return;
        event.target.disabled = true;
        try { await api(`/api/v1/keys/${k.id}`, { method: "DELETE" }); await refresh(); }
        catch (error) { showError(view, error); event.target.disabled = false; }
      } }, "Revoke")],
  ], keys, { empty: "No key yet: the admin key is set by the deployment." });
}
