// Talking to /api/v1 with the browser's session cookie (same origin: the browser sends it and
// the Sec-Fetch-Site header that lets a change through).

export const TERMINAL = ["succeeded", "failed", "cancelled"];

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.detail || `the server answered ${status}`);
    this.status = status;
    this.code = body?.code || String(status);
    this.type = body?.type || "";
    this.body = body || {};
  }
}

/** fetch + JSON + errors in the stable shape: resolves to the body (null for 204), throws
 * ApiError. A 401 means the session ended: go and sign in again. */
export async function api(path, { method = "GET", json, form, headers = {} } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers }, credentials: "same-origin" };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form;
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    window.location.assign("/signin?next=/console");
    throw new ApiError(401, { detail: "signed out" });
  }
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) throw new ApiError(response.status, typeof body === "object" ? body : { detail: body });
  return body;
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== "" && value !== null && value !== undefined) search.set(name, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

/** Follow a task live: calls onTask(task view) on each state/progress/output event and
 * onQueue({queue_position, eta}) while it waits; the browser reconnects by itself with
 * Last-Event-ID. Returns a function that stops following. */
export function follow(taskId, { onTask, onQueue, onEnd }) {
  const source = new EventSource(`/api/v1/tasks/${encodeURIComponent(taskId)}/events`);
  const taskEvent = (event) => {
    const data = JSON.parse(event.data);
    onTask(data.task, data.kind);
    if (TERMINAL.includes(data.task.status)) {
      source.close();
      onEnd?.(data.task);
    }
  };
  for (const kind of ["state", "progress", "output"]) source.addEventListener(kind, taskEvent);
  source.addEventListener("queue", (event) => onQueue?.(JSON.parse(event.data)));
  return () => source.close();
}

/** Every event of a task from its first, then live (the task page's timeline): the event
 * stream read from the start (Last-Event-ID 0-0), each event given to onEvent, until the task
 * ended or ``signal`` aborts. ``queue`` reports go to onQueue. */
export async function streamEvents(taskId, { onEvent, onQueue, signal }) {
  const response = await fetch(`/api/v1/tasks/${encodeURIComponent(taskId)}/events`, {
    headers: { "Last-Event-ID": "0-0", Accept: "text/event-stream" }, signal,
  });
  if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => ({})));
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const frame = parseFrame(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (!frame.data) continue;
        const data = JSON.parse(frame.data);
        if (frame.event === "queue") { onQueue?.(data); continue; }
        onEvent(data);
        if (TERMINAL.includes(data.task.status)) return;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

function parseFrame(text) {
  const frame = { event: "message", data: "" };
  for (const line of text.split("\n")) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const name = line.slice(0, colon);
    const value = line.slice(colon + 1).replace(/^ /, "");
    if (name === "data") frame.data += value;
    else if (name === "event") frame.event = value;
  }
  return frame;
}

