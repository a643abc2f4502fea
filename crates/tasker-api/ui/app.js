// Tasker's dashboard: one page over the /v1 API. Every element is built with
// textContent (never innerHTML), so nothing a task or template carries becomes markup.
"use strict";

const TOKEN_KEY = "tasker.token";
const TASK_STATES = ["pending", "in_progress", "complete", "error", "cancelled"];
const STATE_LABELS = {
  pending: "pending",
  enqueued: "enqueued",
  in_progress: "in progress",
  complete: "complete",
  waiting_for_retry: "waiting for retry",
  error: "error",
  cancelled: "cancelled",
  resolved_manually: "resolved",
  skipped: "skipped",
  waiting: "waiting for signal",
  lost: "worker lost",
};
const FINAL_TASK_STATES = ["complete", "cancelled"];
/** Results and configs longer than this are cut until the reader asks for all. */
const TRUNCATE_AT = 2000;
const LIST_REFRESH_MS = 3000;

const main = document.getElementById("main");
const notice = document.getElementById("notice");

/** Bumped on every navigation: timers and streams of an older view stop themselves. */
let view = 0;
let streamAbort = null;
/** Opens the task stream again when a hidden tab is shown (hidden tabs read nothing). */
let resumeStream = null;
/** What each redrawn region last showed, so an unchanged region is not rebuilt (which
 * would drop the focus and what is being typed). */
const drawn = new WeakMap();

// ---------------------------------------------------------------- elements

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** A table: a header row naming `columns`, then `rows` (its `tr` elements). */
function table(attrs, columns, rows) {
  return h(
    "table",
    attrs,
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows),
  );
}

/** Replaces the children of `el` (null and false children are left out). */
function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/** Rebuilds `el` with `build()` only when `key` differs from what it shows. */
function redraw(el, key, build) {
  if (drawn.get(el) === key) return;
  drawn.set(el, key);
  fill(el, build());
}

function stopStream() {
  if (streamAbort) streamAbort.abort();
  streamAbort = null;
}

function stateBadge(state) {
  return h("span", { class: `badge st-${state}` }, STATE_LABELS[state] || state);
}

function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return h("time", { datetime: iso, title: iso }, d.toLocaleString());
}

function pretty(value) {
  return JSON.stringify(value, null, 2) ?? "null";
}

/** A JSON value as a <pre>, cut at TRUNCATE_AT characters with a button to see all. */
function jsonBlock(value, label) {
  const text = pretty(value);
  const pre = h("pre", { class: "json", "aria-label": label });
  if (text.length <= TRUNCATE_AT) {
    pre.textContent = text;
    return pre;
  }
  pre.textContent = text.slice(0, TRUNCATE_AT) + "\n…";
  const more = h("button", { type: "button", class: "link" }, `Show all ${text.length} characters`);
  more.addEventListener("click", () => {
    pre.textContent = text;
    more.remove();
  });
  return h("div", {}, pre, more);
}

function setNotice(message, kind) {
  notice.textContent = message || "";
  notice.className = kind || "error";
  notice.hidden = !message;
}

// ---------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, method = "GET", body = undefined) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, body });
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) {
    const message = (data && data.message) || `${res.status} ${res.statusText}`;
    throw new ApiError(res.status, data && data.code, message);
  }
  return data;
}

/** Shows why a request failed; a missing or refused token asks for one. */
function failed(err) {
  if (err instanceof ApiError && err.status === 401) {
    renderToken(err.message);
    return;
  }
  setNotice(err.message || String(err));
}

/** Reads a task's Server-Sent Events (fetch, not EventSource: that cannot send the
 * Authorization header) until the stream ends or `signal` aborts it. */
async function readStream(path, signal, onEvent) {
  const headers = { Accept: "text/event-stream" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(path, { headers, signal });
  if (!res.ok) {
    const data = await res.json().catch(() => null);
    throw new ApiError(res.status, data && data.code, (data && data.message) || res.statusText);
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let event = "message";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    // A line ends with \r\n, \n or \r (the server breaks data lines at a \r in the
    // JSON too); a \r that ends what has come so far may be half of a \r\n.
    const breaks = /\r\n|\r|\n/g;
    let start = 0;
    let m;
    while ((m = breaks.exec(buffer)) !== null) {
      if (m[0] === "\r" && m.index === buffer.length - 1) break;
      const line = buffer.slice(start, m.index);
      start = breaks.lastIndex;
      if (line === "") {
        if (data.length) onEvent(event, data.join("\n"));
        event = "message";
        data = [];
      } else if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    buffer = buffer.slice(start);
  }
}

function confirmAction(message) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = message;
  return new Promise((resolve) => {
    const yes = document.getElementById("confirm-yes");
    const no = document.getElementById("confirm-no");
    const done = (answer) => {
      yes.removeEventListener("click", onYes);
      no.removeEventListener("click", onNo);
      dialog.removeEventListener("cancel", onNo);
      dialog.close();
      resolve(answer);
    };
    const onYes = () => done(true);
    const onNo = () => done(false);
    yes.addEventListener("click", onYes);
    no.addEventListener("click", onNo);
    dialog.addEventListener("cancel", onNo);
    dialog.showModal();
    no.focus();
  });
}

/** Runs an action the user confirmed; its outcome (or the API's refusal) is shown. */
async function act(question, run, success) {
  if (!(await confirmAction(question))) return;
  try {
    await run();
    setNotice(success, "ok");
  } catch (err) {
    failed(err);
  }
}

// ---------------------------------------------------------------- routing

function route() {
  view += 1;
  stopStream();
  resumeStream = null;
  delete main.dataset.live;
  setNotice("");
  const hash = location.hash.replace(/^#\/?/, "") || "tasks";
  const [path, query] = hash.split("?");
  let parts;
  try {
    parts = path.split("/").map(decodeURIComponent);
  } catch {
    parts = ["?"];
  }
  const params = new URLSearchParams(query || "");
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.section === parts[0]) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  fill(main);
  const current = view;
  const page = {
    tasks: () => (parts[1] ? renderTask(parts[1], current) : renderTasks(params, current)),
    templates: () => renderTemplates(parts.slice(1), current),
    queues: () => renderQueues(current),
    schedules: () => renderSchedules(current),
    token: () => renderToken(""),
  }[parts[0]];
  if (!page) {
    main.append(h("p", {}, "No such page. ", h("a", { href: "#/tasks" }, "Go to the tasks.")));
    return;
  }
  Promise.resolve(page()).catch(failed);
}

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

// ---------------------------------------------------------------- token

function renderToken(message) {
  view += 1;
  stopStream();
  fill(main);
  const input = h("input", {
    type: "password",
    id: "token-input",
    autocomplete: "off",
    "aria-describedby": "token-help",
  });
  const form = h(
    "form",
    { class: "token", id: "token-form" },
    h("h1", {}, "API token"),
    message ? h("p", { class: "error", role: "alert", id: "token-error" }, message) : null,
    h(
      "p",
      { id: "token-help" },
      "This server asks for a token (api.tokens). It is kept in this tab's session storage " +
        "and sent as an Authorization header; closing the tab forgets it. Reading needs a " +
        "read token; cancelling, retrying, resolving and signalling need write.",
    ),
    h("label", { for: "token-input" }, "Token"),
    input,
    h(
      "div",
      { class: "buttons" },
      h("button", { type: "submit", id: "token-save" }, "Use this token"),
      h(
        "button",
        {
          type: "button",
          onclick: () => {
            sessionStorage.removeItem(TOKEN_KEY);
            setNotice("The token is forgotten.", "ok");
          },
        },
        "Forget the token",
      ),
    ),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    if (location.hash.startsWith("#/token")) go("#/tasks");
    else route();
  });
  main.append(form);
  input.focus();
}

// ---------------------------------------------------------------- tasks

async function renderTasks(params, current) {
  const filters = {
    state: params.get("state") || "",
    namespace: params.get("namespace") || "",
    name: params.get("name") || "",
    created_after: params.get("created_after") || "",
    created_before: params.get("created_before") || "",
  };
  const cursor = params.get("cursor") || "";
  const counts = h("div", { class: "counts", role: "group", "aria-label": "Tasks by state" });
  const table = h("div", { class: "table-wrap" });
  const pager = h("div", { class: "pager" });
  main.append(h("h1", {}, "Tasks"), counts, filterForm(filters), table, pager);

  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(filters)) if (v) query.set(k, v);
  const countQuery = new URLSearchParams(query);
  countQuery.delete("state");

  const load = async () => {
    const q = new URLSearchParams(query);
    if (cursor) q.set("cursor", cursor);
    const [page, tally] = await Promise.all([
      api(`/v1/tasks?${q}`),
      api(`/v1/tasks/counts?${countQuery}`),
    ]);
    if (current !== view) return;
    redraw(counts, JSON.stringify(tally.counts), () =>
      TASK_STATES.map((s) => {
        const q2 = new URLSearchParams(query);
        q2.set("state", s);
        return h(
          "a",
          { class: `count st-${s}`, href: `#/tasks?${q2}`, "data-state": s },
          h("span", { class: "n" }, String(tally.counts[s] ?? 0)),
          " ",
          STATE_LABELS[s],
        );
      }),
    );
    redraw(table, JSON.stringify(page.tasks), () => taskTable(page.tasks));
    redraw(pager, page.next_cursor, () => [
      cursor ? h("a", { href: `#/tasks?${query}` }, "← Newest") : null,
      page.next_cursor
        ? h("a", { href: `#/tasks?${withParam(query, "cursor", page.next_cursor)}`, id: "older" }, "Older →")
        : null,
    ]);
  };
  // Reloaded every LIST_REFRESH_MS, or less often when the counts take long (many
  // tasks): the page keeps the store reading for a tenth of the time at most.
  let took = 0;
  const timed = async () => {
    const began = performance.now();
    try {
      await load();
    } finally {
      took = performance.now() - began;
    }
  };
  const again = () => setTimeout(tick, Math.max(LIST_REFRESH_MS, 9 * took));
  const tick = () => {
    if (current !== view) return;
    if (document.hidden) {
      again();
      return;
    }
    timed()
      .catch((err) => current === view && failed(err))
      .finally(() => current === view && again());
  };
  await timed();
  again();
}

function withParam(query, key, value) {
  const q = new URLSearchParams(query);
  q.set(key, value);
  return q;
}

function filterForm(f) {
  const field = (label, input) => h("label", {}, h("span", {}, label), input);
  const state = h(
    "select",
    { name: "state" },
    h("option", { value: "" }, "any"),
    TASK_STATES.map((s) => h("option", { value: s, selected: f.state === s }, STATE_LABELS[s])),
  );
  const namespace = h("input", { name: "namespace", value: f.namespace, size: 12 });
  const name = h("input", { name: "name", value: f.name, size: 14 });
  const after = h("input", { type: "datetime-local", name: "created_after", value: toLocalInput(f.created_after) });
  const before = h("input", { type: "datetime-local", name: "created_before", value: toLocalInput(f.created_before) });
  const id = h("input", { name: "id", id: "search-id", placeholder: "task id", size: 38 });
  const form = h(
    "form",
    { class: "filters", role: "search" },
    field("State", state),
    field("Namespace", namespace),
    field("Template", name),
    field("Created from", after),
    field("to", before),
    h("button", { type: "submit" }, "Filter"),
    h("a", { href: "#/tasks" }, "Clear"),
    field("Find by id", id),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (id.value.trim()) {
      go(`#/tasks/${encodeURIComponent(id.value.trim())}`);
      return;
    }
    const q = new URLSearchParams();
    if (state.value) q.set("state", state.value);
    if (namespace.value.trim()) q.set("namespace", namespace.value.trim());
    if (name.value.trim()) q.set("name", name.value.trim());
    if (after.value) q.set("created_after", new Date(after.value).toISOString());
    if (before.value) q.set("created_before", new Date(before.value).toISOString());
    go(`#/tasks?${q}`);
  });
  return form;
}

/** An RFC 3339 instant as a datetime-local input's value, in local time. */
function toLocalInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function taskTable(tasks) {
  if (!tasks.length) return h("p", { class: "muted" }, "No tasks match.");
  return table(
    { id: "tasks" },
    ["Task", "Template", "State", "Created", "Updated"],
    tasks.map((t) =>
      h(
        "tr",
        { "data-task": t.task_id },
        h("td", {}, h("a", { href: `#/tasks/${t.task_id}`, class: "mono" }, t.task_id)),
        h("td", {}, `${t.namespace}/${t.name}@${t.version}`),
        h("td", {}, stateBadge(t.state)),
        h("td", {}, when(t.created_at)),
        h("td", {}, when(t.updated_at)),
      ),
    ),
  );
}

// ---------------------------------------------------------------- a task

async function renderTask(id, current) {
  const task = await api(`/v1/tasks/${encodeURIComponent(id)}`);
  if (current !== view) return;
  const definition = await templateDefinition(task).catch(() => null);
  if (current !== view) return;
  const page = {
    task,
    /** The stream's last `task` event, as sent: an equal one changes nothing. */
    raw: null,
    definition,
    selected: null,
    expanded: new Set(),
    history: null,
    /** How many times the history was asked for (the latest answer wins). */
    historyAsked: 0,
    /** What is typed in the action boxes, by box and step, kept across redraws. */
    drafts: new Map(),
    current,
  };
  const head = h("div", { class: "task-head" });
  const graph = h("div", { class: "graph", id: "graph" });
  const summary = h("div");
  const actions = h("div");
  const more = h("div");
  const details = h("aside", { class: "details", id: "details", "aria-live": "polite" }, summary, actions, more);
  main.append(head, h("div", { class: "task-body" }, graph, details));
  page.draw = () => {
    const t = page.task;
    redraw(head, `${t.state} ${t.updated_at}`, () => taskHead(page));
    const steps = t.steps.map((s) => `${s.name}:${s.state}:${s.attempts}`).join();
    redraw(graph, `${steps}|${[...page.expanded]}|${page.selected}`, () => taskGraph(page));
    const step = t.steps.find((x) => x.name === page.selected);
    const seen = page.history ? page.history.transitions.length : -1;
    const key = `${JSON.stringify(step)}|${seen}|${steps}`;
    redraw(summary, key, () => stepSummary(page, step));
    // Rebuilt only when the step's state changes (when what it may do changes), so a
    // box being typed in keeps its focus while the step's other details update.
    redraw(actions, step ? `${step.id}:${step.state}` : "", () => step && stepActions(page, step));
    redraw(more, key, () => step && stepMore(page, step));
  };
  page.draw();
  follow(page, 0);
}

/** The registered definition of the task's template version (for step configs). */
async function templateDefinition(task) {
  const q = new URLSearchParams({ namespace: task.namespace, name: task.name, limit: "100" });
  const page = await api(`/v1/templates?${q}`);
  const found = page.templates.find((t) => t.version === task.version);
  return found ? found.definition : null;
}

/** Applies the task's stream to the page until the task is final or the page is left.
 * A stream that ends early (a server restarting) or fails on the way is opened again,
 * waiting longer after each failure in a row (1 s, 2 s, … 30 s); one the API refuses
 * (the task is gone, the token may not read it) is not. A hidden tab closes its stream
 * and opens it again when shown. */
function follow(page, failures) {
  if (page.current !== view || FINAL_TASK_STATES.includes(page.task.state)) return;
  const abort = new AbortController();
  streamAbort = abort;
  let refused = false;
  const path = `/v1/tasks/${page.task.task_id}/stream`;
  readStream(path, abort.signal, (event, data) => {
    if (page.current !== view) return;
    if (event === "error") {
      // The server could not read the task and ends the stream: open it again later
      // each time this happens in a row.
      setNotice(data);
      failures += 1;
      return;
    }
    if (event !== "task" || data === page.raw) return;
    if (page.raw === null) setNotice("");
    page.raw = data;
    page.task = JSON.parse(data);
    failures = 0;
    main.dataset.live = "open";
    if (page.selected) loadHistory(page);
    else page.draw();
  })
    .catch((err) => {
      if (err.name === "AbortError" || page.current !== view) return;
      failures += 1;
      refused = err instanceof ApiError && err.status >= 400 && err.status < 500;
      failed(err);
    })
    .finally(() => {
      if (page.current !== view || FINAL_TASK_STATES.includes(page.task.state) || refused) return;
      if (abort.signal.aborted) {
        if (document.hidden) resumeStream = () => follow(page, 0);
        return;
      }
      const wait = Math.min(30000, 1000 * 2 ** failures);
      setTimeout(() => follow(page, failures), wait);
    });
}

document.addEventListener("visibilitychange", () => {
  if (document.hidden) {
    stopStream();
  } else if (resumeStream) {
    const resume = resumeStream;
    resumeStream = null;
    resume();
  }
});

/** Reads the task's transitions; an answer to an older ask than the latest is dropped,
 * so a slow one never replaces a newer one. */
async function loadHistory(page) {
  const asked = ++page.historyAsked;
  try {
    const history = await api(`/v1/tasks/${page.task.task_id}/history`);
    if (asked !== page.historyAsked) return;
    page.history = history;
  } catch (err) {
    failed(err);
  }
  if (page.current === view) page.draw();
}

function taskHead(page) {
  const t = page.task;
  const actions = h("div", { class: "actions" });
  if (!FINAL_TASK_STATES.includes(t.state)) {
    actions.append(
      h(
        "button",
        {
          type: "button",
          id: "cancel-task",
          class: "danger",
          onclick: () =>
            act(
              `Cancel task ${t.task_id}? Its steps that have not finished will not run.`,
              () => api(`/v1/tasks/${t.task_id}/cancel`, "POST"),
              "The task is cancelled.",
            ),
        },
        "Cancel task",
      ),
    );
  }
  if (t.state === "error") {
    actions.append(
      h(
        "button",
        {
          type: "button",
          id: "retry-task",
          onclick: () =>
            act(
              `Retry the failed steps of task ${t.task_id} with fresh attempts?`,
              () => api(`/v1/tasks/${t.task_id}/retry`, "POST"),
              "The failed steps are enqueued again.",
            ),
        },
        "Retry failed steps",
      ),
    );
  }
  return [
    h("p", { class: "crumbs" }, h("a", { href: "#/tasks" }, "Tasks"), " / ", h("span", { class: "mono" }, t.task_id)),
    h(
      "h1",
      {},
      `${t.namespace}/${t.name}`,
      h("small", {}, ` @${t.version} `),
      h("span", { id: "task-state", "data-state": t.state }, stateBadge(t.state)),
    ),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Created"),
      h("dd", {}, when(t.created_at)),
      h("dt", {}, "Updated"),
      h("dd", {}, when(t.updated_at)),
      t.idempotency_key ? [h("dt", {}, "Idempotency key"), h("dd", {}, t.idempotency_key)] : null,
      t.concurrency_key ? [h("dt", {}, "Concurrency key"), h("dd", {}, t.concurrency_key)] : null,
      t.priority ? [h("dt", {}, "Priority"), h("dd", {}, String(t.priority))] : null,
    ),
    actions,
    h("details", {}, h("summary", {}, "Context"), jsonBlock(t.context, "context")),
  ];
}

/** `name[3]` is instance 3 of the for_each step `name`. */
function instanceOf(name) {
  const m = /^(.*)\[(\d+)\]$/.exec(name);
  return m ? m[1] : null;
}

/** The task's graph: one node per step, a for_each step's instances folded into it
 * (with their counts) unless it is expanded. */
function taskModel(page) {
  const steps = page.task.steps;
  const byName = new Map(steps.map((s) => [s.name, s]));
  const instances = new Map();
  for (const s of steps) {
    const base = instanceOf(s.name);
    if (base !== null && byName.has(base)) {
      if (!instances.has(base)) instances.set(base, []);
      instances.get(base).push(s);
    }
  }
  const nodes = [];
  const edges = [];
  for (const s of steps) {
    const base = instanceOf(s.name);
    if (base !== null && instances.has(base)) continue;
    const own = instances.get(s.name);
    let sub = stepLine(s);
    if (own) {
      const tally = {};
      for (const i of own) tally[i.state] = (tally[i.state] || 0) + 1;
      sub = `${own.length} instances: ${Object.entries(tally)
        .map(([st, n]) => `${n} ${STATE_LABELS[st] || st}`)
        .join(", ")}`;
    }
    nodes.push({ id: s.name, step: s, sub, fanOut: own ? own.length : 0 });
    for (const p of s.depends_on) edges.push({ from: p, to: s.name });
    if (own && page.expanded.has(s.name)) {
      for (const i of own) {
        nodes.push({ id: i.name, step: i, sub: stepLine(i), instance: true });
        edges.push({ from: s.name, to: i.name });
      }
    }
  }
  return { nodes, edges: edges.filter((e) => byName.has(e.from)) };
}

function stepLine(s) {
  const label = STATE_LABELS[s.state] || s.state;
  if (!s.attempts) return label;
  return `${label} · attempt ${s.attempts}/${s.max_attempts}`;
}

function taskGraph(page) {
  const { nodes, edges } = taskModel(page);
  return drawGraph(nodes, edges, {
    label: `Steps of task ${page.task.task_id}`,
    selected: page.selected,
    expanded: page.expanded,
    onSelect: (id) => {
      page.selected = id;
      page.history = null;
      loadHistory(page);
      page.draw();
    },
    onToggle: (id) => {
      if (page.expanded.has(id)) page.expanded.delete(id);
      else page.expanded.add(id);
      page.draw();
    },
  });
}

/** Lays nodes and edges out with dagre and draws them as SVG. Each node is a focusable
 * button named by its step and state; Enter or Space selects it. */
function drawGraph(nodes, edges, opts) {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "TB", nodesep: 28, ranksep: 44, marginx: 12, marginy: 12 });
  g.setDefaultEdgeLabel(() => ({}));
  // dagre keeps nodes in plain objects: a step named `constructor` or `toString` would
  // be taken for what every object has, so its ids are prefixed.
  const key = (id) => `step:${id}`;
  for (const n of nodes) {
    const chars = Math.max(n.id.length, (n.sub || "").length);
    g.setNode(key(n.id), { width: Math.max(130, chars * 7 + 28), height: 50 });
  }
  for (const e of edges) g.setEdge(key(e.from), key(e.to));
  dagre.layout(g);
  const { width, height } = g.graph();
  const root = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "group",
    "aria-label": opts.label,
    class: "dag",
  });
  root.append(
    svg(
      "defs",
      {},
      svg(
        "marker",
        { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" },
        svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }),
      ),
    ),
  );
  for (const e of edges) {
    const pts = g.edge(key(e.from), key(e.to)).points;
    const d = pts.map((p, i) => `${i ? "L" : "M"}${p.x.toFixed(1)},${p.y.toFixed(1)}`).join(" ");
    const skipped = nodes.find((n) => n.id === e.to)?.step?.state === "skipped";
    root.append(
      svg("path", { d, class: `edge${skipped ? " skipped" : ""}`, "marker-end": "url(#arrow)", "data-from": e.from, "data-to": e.to }),
    );
  }
  for (const n of nodes) {
    const box = g.node(key(n.id));
    const x = box.x - box.width / 2;
    const y = box.y - box.height / 2;
    const state = n.step ? n.step.state : "definition";
    const group = svg(
      "g",
      {
        class: `node st-${state}${opts.selected === n.id ? " selected" : ""}${n.instance ? " instance" : ""}`,
        transform: `translate(${x.toFixed(1)},${y.toFixed(1)})`,
        tabindex: 0,
        role: "button",
        "data-step": n.id,
        "data-state": state,
        "aria-pressed": opts.selected === n.id ? "true" : "false",
        "aria-label": `${n.id}: ${n.sub}`,
      },
      svg("rect", { width: box.width, height: box.height, rx: 6 }),
      svg("text", { x: 12, y: 20, class: "name" }, n.id),
      svg("text", { x: 12, y: 38, class: "sub" }, n.sub || ""),
      svg("title", {}, `${n.id}: ${n.sub}`),
    );
    if (n.fanOut && opts.onToggle) {
      const toggle = svg(
        "text",
        { x: box.width - 22, y: 20, class: "toggle", "aria-hidden": "true" },
        opts.expanded && opts.expanded.has(n.id) ? "−" : "+",
      );
      group.append(toggle);
    }
    const choose = () => opts.onSelect && opts.onSelect(n.id);
    group.addEventListener("click", (e) => {
      if (n.fanOut && opts.onToggle && e.target.classList.contains("toggle")) opts.onToggle(n.id);
      else choose();
    });
    group.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        choose();
      } else if ((e.key === "+" || e.key === "-") && n.fanOut && opts.onToggle) {
        opts.onToggle(n.id);
      }
    });
    root.append(group);
  }
  const focused = document.activeElement && document.activeElement.dataset && document.activeElement.dataset.step;
  if (focused) queueMicrotask(() => root.querySelector(`[data-step="${CSS.escape(focused)}"]`)?.focus());
  return h("div", {}, root, legend(nodes));
}

function legend(nodes) {
  const states = [...new Set(nodes.map((n) => (n.step ? n.step.state : null)).filter(Boolean))];
  if (!states.length) return null;
  return h("p", { class: "legend" }, "States: ", states.map((s) => [stateBadge(s), " "]));
}

/** The selected step's name, state and facts; every step's state when none is. */
function stepSummary(page, s) {
  const t = page.task;
  if (!s) {
    return [
      h("h2", {}, "Steps"),
      h("p", { class: "muted" }, "Select a step (click it, or Tab to it and press Enter) to see its attempts, errors, results and transitions. A step with instances expands with + (or the + key)."),
      stepTable(t.steps),
    ];
  }
  return [
    h("h2", {}, s.name, " ", stateBadge(s.state)),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Handler"),
      h("dd", {}, s.waits_for ? `waits for signal “${s.waits_for}”` : s.handler),
      h("dt", {}, "Queue"),
      h("dd", {}, s.queue),
      h("dt", {}, "Attempts"),
      h("dd", {}, `${s.attempts} of ${s.max_attempts}`),
      h("dt", {}, "Started"),
      h("dd", {}, when(s.started_at)),
      h("dt", {}, "Finished"),
      h("dd", {}, when(s.completed_at)),
      h("dt", {}, "Duration"),
      h("dd", {}, s.duration_ms == null ? "—" : `${s.duration_ms} ms`),
      h("dt", {}, "Depends on"),
      h("dd", {}, s.depends_on.length ? s.depends_on.join(", ") : "—"),
    ),
  ];
}

/** The selected step's error, results, config, attempts and transitions. */
function stepMore(page, s) {
  const t = page.task;
  const config = stepConfig(page.definition, s.name);
  const out = [];
  if (s.error) out.push(h("h3", {}, "Error"), h("pre", { class: "error-text" }, s.error));
  out.push(h("h3", {}, "Results"), s.results == null ? h("p", { class: "muted" }, "None yet.") : jsonBlock(s.results, "results"));
  if (config !== undefined) out.push(h("h3", {}, "Config"), jsonBlock(config, "config"));
  const transitions = page.history ? page.history.transitions.filter((x) => x.step_id === s.id) : null;
  const instances = t.steps.filter((x) => instanceOf(x.name) === s.name);
  if (instances.length) {
    out.push(h("h3", {}, "Instances"), h("p", { class: "muted" }, "Each instance runs its own attempts."), stepTable(instances));
  } else {
    out.push(h("h3", {}, "Attempts"));
    out.push(transitions ? attemptsTable(transitions) : h("p", { class: "muted" }, "Loading…"));
  }
  out.push(h("h3", {}, "Transitions"));
  out.push(transitions ? timeline(transitions) : h("p", { class: "muted" }, "Loading…"));
  out.push(h("p", {}, h("button", { type: "button", class: "link", onclick: () => { page.selected = null; page.draw(); } }, "← All steps")));
  return out;
}

function stepConfig(definition, name) {
  if (!definition || !Array.isArray(definition.steps)) return undefined;
  const base = instanceOf(name) ?? name;
  const step = definition.steps.find((x) => x.name === base);
  return step ? step.config : undefined;
}

function stepTable(steps) {
  return table(
    { class: "compact" },
    ["Step", "State", "Attempts"],
    steps.map((s) =>
      h("tr", {}, h("td", {}, s.name), h("td", {}, stateBadge(s.state)), h("td", {}, `${s.attempts}/${s.max_attempts}`)),
    ),
  );
}

/** A JSON box whose text survives the page's redraws. */
function draftBox(page, id, step, label) {
  const key = `${id}:${step.id}`;
  const box = h("textarea", { id, rows: 3, "aria-label": label });
  box.value = page.drafts.get(key) ?? "{}";
  box.addEventListener("input", () => page.drafts.set(key, box.value));
  return box;
}

function stepActions(page, s) {
  const t = page.task;
  const box = h("div", { class: "actions" });
  if (s.state === "error") {
    const results = draftBox(page, "resolve-results", s, "Results to resolve the step with (JSON)");
    box.append(
      h("label", { for: "resolve-results" }, "Resolve with results (JSON)"),
      results,
      h(
        "button",
        {
          type: "button",
          id: "resolve-step",
          onclick: () => {
            let parsed;
            try {
              parsed = JSON.parse(results.value);
            } catch (e) {
              setNotice(`The results are not JSON: ${e.message}`);
              return;
            }
            act(
              `Mark step ${s.name} done with these results? Its children will run with them.`,
              () => api(`/v1/steps/${s.id}/resolve`, "POST", JSON.stringify({ results: parsed })),
              "The step is resolved.",
            );
          },
        },
        "Resolve step",
      ),
    );
  }
  if (s.waits_for && !["complete", "resolved_manually", "skipped", "cancelled"].includes(s.state)) {
    const payload = draftBox(page, "signal-payload", s, "Signal payload (JSON)");
    box.append(
      h("label", { for: "signal-payload" }, `Signal “${s.waits_for}” payload (JSON)`),
      payload,
      h(
        "button",
        {
          type: "button",
          id: "deliver-signal",
          onclick: () => {
            try {
              JSON.parse(payload.value);
            } catch (e) {
              setNotice(`The payload is not JSON: ${e.message}`);
              return;
            }
            act(
              `Deliver signal “${s.waits_for}” to task ${t.task_id}?`,
              () => api(`/v1/tasks/${t.task_id}/signals/${encodeURIComponent(s.waits_for)}`, "POST", payload.value),
              "The signal is delivered.",
            );
          },
        },
        "Deliver signal",
      ),
    );
  }
  return box.childElementCount ? box : null;
}

/** Each attempt: from a claim (enqueued → in_progress, or in_progress again when a
 * lost worker's attempt is taken over) to the step's next move. */
function attemptsTable(transitions) {
  const attempts = [];
  let open = null;
  for (const x of transitions) {
    if (open && x.from === "in_progress") {
      open.ended = x.at;
      open.outcome = x.to === "in_progress" ? "lost" : x.to;
      open.reason = x.reason;
      open = null;
    }
    if (x.to === "in_progress" && (x.from === "enqueued" || x.from === "in_progress")) {
      open = { started: x.at, ended: null, outcome: null, reason: "" };
      attempts.push(open);
    }
  }
  if (!attempts.length) return h("p", { class: "muted" }, "No attempt yet.");
  return table(
    { class: "compact", id: "attempts" },
    ["#", "Started", "Duration", "Outcome"],
    attempts.map((a, i) =>
      h(
        "tr",
        {},
        h("td", {}, String(i + 1)),
        h("td", {}, when(a.started)),
        h("td", {}, a.ended ? `${new Date(a.ended) - new Date(a.started)} ms` : "running"),
        h("td", {}, a.outcome ? [stateBadge(a.outcome), a.reason ? ` ${a.reason}` : ""] : "—"),
      ),
    ),
  );
}

function timeline(transitions) {
  if (!transitions.length) return h("p", { class: "muted" }, "None.");
  return h(
    "ol",
    { class: "timeline" },
    transitions.map((x) =>
      h("li", {}, when(x.at), " ", x.from ? [stateBadge(x.from), " → "] : "", stateBadge(x.to), x.reason ? h("span", { class: "reason" }, ` ${x.reason}`) : null),
    ),
  );
}

// ---------------------------------------------------------------- templates

async function renderTemplates(key, current) {
  main.append(h("h1", {}, "Templates"));
  const list = h("div", { class: "table-wrap" });
  const detail = h("section", { id: "template" });
  main.append(h("div", { class: "split" }, list, detail));
  const templates = [];
  let cursor = null;
  const loadPage = async () => {
    const q = new URLSearchParams({ limit: "100" });
    if (cursor) q.set("cursor", cursor);
    const page = await api(`/v1/templates?${q}`);
    templates.push(...page.templates);
    cursor = page.next_cursor;
  };
  await loadPage();
  if (current !== view) return;
  const draw = () => {
    fill(list, 
      templates.length
        ? table(
            { class: "compact" },
            ["Template", "Version", "Registered"],
            templates.map((t) =>
              h(
                "tr",
                {},
                h("td", {}, h("a", { href: `#/templates/${t.namespace}/${t.name}/${t.version}` }, `${t.namespace}/${t.name}`)),
                h("td", {}, t.version),
                h("td", {}, when(t.created_at)),
              ),
            ),
          )
        : h("p", { class: "muted" }, "No template is registered (tasker register FILE, or POST /v1/templates)."),
      cursor
        ? h("button", { type: "button", onclick: () => loadPage().then(draw).catch(failed) }, "More templates")
        : null,
    );
  };
  draw();
  if (key.length === 3) {
    // Its versions, wherever it falls in the list's pages.
    const q = new URLSearchParams({ namespace: key[0], name: key[1], limit: "100" });
    const versions = await api(`/v1/templates?${q}`);
    if (current !== view) return;
    const t = versions.templates.find((x) => x.version === key[2]);
    fill(detail, t ? templateDetail(t) : h("p", {}, "No such template version."));
  } else {
    fill(detail, h("p", { class: "muted" }, "Select a template to see its graph."));
  }
}

function templateDetail(t) {
  const steps = (t.definition && t.definition.steps) || [];
  const nodes = steps.map((s) => ({
    id: s.name,
    sub: s.wait_for ? `waits for ${s.wait_for.signal || "a signal"}` : `${s.handler || ""}${s.for_each ? " · for each" : ""}`,
  }));
  const names = new Set(steps.map((s) => s.name));
  const edges = steps.flatMap((s) => (s.depends_on || []).filter((p) => names.has(p)).map((p) => ({ from: p, to: s.name })));
  return [
    h("h2", {}, `${t.namespace}/${t.name}`, h("small", {}, ` @${t.version}`)),
    h("p", {}, h("a", { href: `#/tasks?namespace=${encodeURIComponent(t.namespace)}&name=${encodeURIComponent(t.name)}` }, "Its tasks")),
    h("div", { class: "graph" }, drawGraph(nodes, edges, { label: `Steps of template ${t.name}` })),
    h("details", {}, h("summary", {}, "Definition"), jsonBlock(t.definition, "definition")),
  ];
}

// ---------------------------------------------------------------- queues

async function renderQueues(current) {
  const [queues, dead] = await Promise.all([api("/v1/queues"), api("/v1/dead-letters")]);
  if (current !== view) return;
  main.append(
    h("h1", {}, "Queues"),
    queues.queues.length
      ? table(
          { id: "queues" },
          ["Queue", "Messages", "Paused"],
          queues.queues.map((q) =>
            h("tr", {}, h("td", {}, q.queue), h("td", {}, String(q.messages)), h("td", {}, q.paused ? "paused" : "no")),
          ),
        )
      : h("p", { class: "muted" }, "No queue yet."),
    h("h2", {}, "Dead letters"),
    dead.dead_letters.length
      ? table(
          { id: "dead-letters" },
          ["Queue", "Message", "Reads", "Reason", "Archived"],
          dead.dead_letters.map((d) =>
            h(
              "tr",
              {},
              h("td", {}, d.queue),
              h("td", {}, h("code", {}, d.message)),
              h("td", {}, String(d.read_ct)),
              h("td", {}, d.reason),
              h("td", {}, when(d.archived_at)),
            ),
          ),
        )
      : h("p", { class: "muted" }, "No dead letters."),
  );
}

// ---------------------------------------------------------------- schedules

async function renderSchedules(current) {
  const list = await api("/v1/schedules");
  if (current !== view) return;
  main.append(
    h("h1", {}, "Schedules"),
    list.schedules.length
      ? table(
          { id: "schedules" },
          ["Name", "Template", "When", "Next", "Last", "Catch-up", "Paused"],
          list.schedules.map((s) =>
            h(
              "tr",
              {},
              h("td", {}, s.name),
              h(
                "td",
                {},
                h(
                  "a",
                  { href: `#/tasks?namespace=${encodeURIComponent(s.namespace)}&name=${encodeURIComponent(s.template)}` },
                  `${s.namespace}/${s.template}@${s.version}`,
                ),
              ),
              h("td", {}, `${s.cron} (${s.timezone})`),
              h("td", {}, when(s.next_fire)),
              h("td", {}, when(s.last_fire)),
              h("td", {}, s.catch_up),
              h("td", {}, s.paused ? "paused" : "no"),
            ),
          ),
        )
      : h("p", { class: "muted" }, "No schedule (tasker schedule create, or POST /v1/schedules)."),
  );
}

window.addEventListener("hashchange", route);
route();
