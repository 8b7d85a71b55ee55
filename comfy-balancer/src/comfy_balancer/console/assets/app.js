// The console's frame: who is signed in, the page for the location's hash, light and dark.
import { api, ApiError } from "./api.js";
import { fill, h } from "./dom.js";

const PAGES = {
  generate: () => import("./generate.js"),
  tasks: () => import("./tasks.js"),
  task: () => import("./task.js"),
  nodes: () => import("./nodes.js"),
  queue: () => import("./queue.js"),
  keys: () => import("./keys.js"),
};
const THEME_KEY = "comfy-console-theme";

const main = document.getElementById("main");
let leave = null; // what the current page stops when another opens (timers, streams)
let me = null;

/** "#/tasks/abc?status=failed" -> {page: "task", arg: "abc", params} */
export function parseHash(hash) {
  const [path, search = ""] = hash.replace(/^#\/?/, "").split("?");
  const [first = "", ...rest] = path.split("/").filter(Boolean);
  const params = new URLSearchParams(search);
  if (first === "tasks" && rest.length) return { page: "task", arg: decodeURIComponent(rest[0]), params };
  return { page: PAGES[first] ? first : "generate", arg: null, params };
}

export function navigate(page, params = {}) {
  const search = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v != null));
  const text = search.toString();
  window.location.hash = `#/${page}${text ? `?${text}` : ""}`;
}

/** Whether the signed-in key may do ``scope`` (an admin may do everything). */
export function may(scope) {
  return Boolean(me && (me.scopes.includes(scope) || me.scopes.includes("admin")));
}

export function showError(where, error) {
  const message = error instanceof ApiError
    ? [h("strong", {}, `${error.code}: `), error.message]
    : [h("strong", {}, "error: "), String(error?.message || error)];
  const box = h("div", { class: "alert", role: "alert" }, ...message);
  where.prepend(box);
  return box;
}

let routed = 0; // the latest navigation: a slower earlier one must not draw over it

async function route(moved = true) {
  leave?.();
  leave = null;
  const mine = ++routed;
  const { page, arg, params } = parseHash(window.location.hash);
  for (const link of document.querySelectorAll("#nav a")) {
    const current = link.dataset.page === (page === "task" ? "tasks" : page);
    if (current) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  const module = await PAGES[page]();
  if (mine !== routed) return;
  const view = h("div", {});
  fill(main, view);
  try {
    const stop = (await module.render(view, { me, arg, params })) || null;
    if (mine !== routed) { stop?.(); return; }
    leave = stop;
  } catch (error) {
    showError(view, error);
  }
  document.title = `${view.querySelector("h1")?.textContent || "Console"} - comfy-stack`;
  if (moved) main.focus({ preventScroll: true }); // a keyboard user lands on the new page
}

function applyTheme(theme) {
  const button = document.getElementById("theme");
  const dark = theme ? theme === "dark" : window.matchMedia("(prefers-color-scheme: dark)").matches;
  if (theme) document.documentElement.dataset.theme = theme;
  button.textContent = dark ? "Light" : "Dark";
  button.setAttribute("aria-label", dark ? "Use the light theme" : "Use the dark theme");
  button.onclick = () => {
    const next = dark ? "light" : "dark";
    localStorage.setItem(THEME_KEY, next);
    applyTheme(next);
  };
}

async function boot() {
  applyTheme(localStorage.getItem(THEME_KEY));
  try {
    me = await api("/api/v1/whoami");
  } catch (error) {
    fill(main, h("div", {}));
    showError(main, error);
    return;
  }
  const roles = me.scopes.includes("admin") ? "admin" : me.scopes.join(", ");
  fill(document.getElementById("who"), h("span", { class: "muted" }, "Signed in as "),
    h("strong", {}, me.tenant), h("span", { class: "muted" }, ` (${roles})`));
  document.getElementById("nav-keys").hidden = !me.scopes.includes("admin");
  document.getElementById("signout").hidden = !me.authentication;
  window.addEventListener("hashchange", () => route(true));
  await route(false);
}

boot();
