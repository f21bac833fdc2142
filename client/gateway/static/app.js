// jobwire dashboard: three pages (queues, one queue, one job) over the gateway's JSON API.
// No framework, no build step. Rules that keep it usable:
// - data is put in the page with textContent only (never innerHTML), so job data cannot inject;
// - a page is built once, then live refreshes (every 2 s) change text in place: rows keep their
//   place and size, so nothing jumps under the reader's cursor;
// - every action is a <button> (keyboard reachable); destructive ones ask in a modal <dialog>.
"use strict";

const REFRESH_MS = 2000;
const PAGE = 50;
const SPARK_POINTS = 30;
const STATES = ["waiting", "delayed", "active", "completed", "failed"];
const app = document.getElementById("app");
let timer = null;

// ------------------------------------------------------------------ helpers

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function setText(node, text) {
  const value = String(text);
  if (node.textContent !== value) node.textContent = value;
}

const pad = (n) => String(n).padStart(2, "0");
function when(ms) {
  if (ms === null || ms === undefined) return "—";
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
function ago(ms) {
  if (ms === null || ms === undefined) return "";
  const s = Math.round((Date.now() - ms) / 1000);
  const abs = Math.abs(s);
  const text = abs < 60 ? `${abs}s` : abs < 3600 ? `${Math.round(abs / 60)}m`
    : abs < 86400 ? `${Math.round(abs / 3600)}h` : `${Math.round(abs / 86400)}d`;
  return s >= 0 ? `${text} ago` : `in ${text}`;
}
function duration(ms) {
  if (ms === null || ms === undefined) return "—";
  return ms < 1000 ? `${ms} ms` : ms < 60000 ? `${(ms / 1000).toFixed(1)} s`
    : `${Math.round(ms / 60000)} min`;
}
const firstLine = (text) => (text || "").split("\n", 1)[0];
const pretty = (value) => JSON.stringify(value, null, 2);
const queueHref = (name) => `/queues/${encodeURIComponent(name)}`;
const jobHref = (id) => `/jobs/${encodeURIComponent(id)}`;

function notice(text, kind) {
  const node = document.getElementById("notice");
  node.className = `notice ${kind || ""}`;
  setText(node, text);
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => setText(node, ""), 6000);
}

function setStatus(ok, text) {
  const node = document.getElementById("status");
  node.className = `status ${ok ? "ok" : "down"}`;
  setText(node, text);
}

// ------------------------------------------------------------------ API and dialogs

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  for (;;) {
    const headers = {};
    const token = sessionStorage.getItem("jobwire-token");
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const reply = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
    const payload = await reply.json().catch(() => ({}));
    if (reply.status === 401 && await askToken()) continue;
    if (!reply.ok) {
      const error = payload.error || {};
      throw new ApiError(reply.status, error.code || "HTTP_ERROR", error.message || reply.statusText);
    }
    return payload;
  }
}

function askToken() {
  const dialog = document.getElementById("login");
  if (dialog.open) return Promise.resolve(false);
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const value = document.getElementById("login-token").value;
      if (dialog.returnValue === "ok" && value) sessionStorage.setItem("jobwire-token", value);
      resolve(dialog.returnValue === "ok" && Boolean(value));
    }, { once: true });
    dialog.showModal();
  });
}

function confirmAction(title, text, action) {
  const dialog = document.getElementById("confirm");
  setText(document.getElementById("confirm-title"), title);
  setText(document.getElementById("confirm-text"), text);
  setText(document.getElementById("confirm-ok"), action);
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "cancel";
    dialog.showModal();
    document.getElementById("confirm-cancel").focus();
  });
}

// Run an action button: disable it meanwhile, report the outcome, refresh the page.
async function act(button, work, done) {
  button.disabled = true;
  try {
    const message = await work();
    if (message) notice(message, "ok");
  } catch (error) {
    notice(`${error.code || "ERROR"}: ${error.message}`, "error");
  } finally {
    button.disabled = false;
  }
  if (done) await done();
}

// Poll `refresh` every 2 s; the broker's reachability shows in the header.
function live(refresh) {
  clearTimeout(timer);
  const tick = async () => {
    try {
      await refresh();
      setStatus(true, `live · ${when(Date.now()).slice(11)}`);
    } catch (error) {
      setStatus(false, error.code === "BROKER_UNAVAILABLE" ? "broker unreachable" : `error: ${error.code || error.message}`);
    }
    timer = setTimeout(tick, REFRESH_MS);
  };
  return tick();
}

// ------------------------------------------------------------------ overview

const trends = new Map(); // queue → {last: [completed, failed], done: [], failed: []}

function sparkline(points, label) {
  const max = Math.max(1, ...points);
  const width = 80;
  const step = width / (SPARK_POINTS - 1);
  const offset = SPARK_POINTS - points.length;
  const coords = points.map((v, i) => `${((offset + i) * step).toFixed(1)},${(18 - (v / max) * 16).toFixed(1)}`);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${width} 20`);
  svg.setAttribute("class", "spark");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  if (coords.length > 1) {
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", coords.join(" "));
    svg.append(line);
  }
  return svg;
}

function track(queue) {
  let entry = trends.get(queue.name);
  if (!entry) {
    entry = { last: null, done: [], failed: [] };
    trends.set(queue.name, entry);
  }
  if (entry.last) {
    entry.done.push(Math.max(0, queue.total_completed - entry.last[0]));
    entry.failed.push(Math.max(0, queue.total_failed - entry.last[1]));
    if (entry.done.length > SPARK_POINTS) { entry.done.shift(); entry.failed.shift(); }
  }
  entry.last = [queue.total_completed, queue.total_failed];
  return entry;
}

async function overviewPage() {
  document.title = "Queues · jobwire";
  const body = h("tbody");
  const broker = h("p", { class: "meta", id: "broker" }, "\u00a0");
  const empty = h("p", { class: "empty", hidden: true }, "No queues yet: they appear with their first job.");
  app.replaceChildren(
    h("h1", {}, "Queues"), broker,
    h("table", { class: "grid", id: "queues" },
      h("caption", { class: "sr" }, "Queues with their job counts"),
      h("colgroup", {}, h("col", { class: "c-name" }), STATES.map(() => h("col", { class: "c-num" })),
        h("col", { class: "c-spark" }), h("col", { class: "c-state" }), h("col", { class: "c-act" })),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Queue"),
        STATES.map((s) => h("th", { scope: "col", class: "num" }, s[0].toUpperCase() + s.slice(1))),
        h("th", { scope: "col" }, "Done / failed per 2 s"), h("th", { scope: "col" }, "State"),
        h("th", { scope: "col" }, h("span", { class: "sr" }, "Actions")))),
      body),
    empty);
  const rows = new Map();

  const refresh = async () => {
    const data = await api("GET", "/api/queues");
    const b = data.broker;
    setText(broker, `broker ${b.version || "?"} · ${b.connections ?? "?"} connections · up ${duration(b.uptime_ms)}`);
    empty.hidden = data.queues.length > 0;
    const present = new Set(data.queues.map((q) => q.name));
    for (const [name, row] of rows) {  // a queue the broker no longer has
      if (!present.has(name)) { row.tr.remove(); rows.delete(name); }
    }
    for (const queue of data.queues) {
      let row = rows.get(queue.name);
      if (!row) {
        row = queueRow(queue.name, refresh);
        rows.set(queue.name, row);
        const after = [...rows.keys()].sort().filter((n) => n > queue.name)[0];
        body.insertBefore(row.tr, after ? rows.get(after).tr : null);
      }
      const trend = track(queue);
      for (const state of STATES) {
        setText(row.cells[state], queue[state].toLocaleString("en"));
        row.cells[state].classList.toggle("zero", queue[state] === 0);
      }
      row.spark.replaceChildren(
        sparkline(trend.done, `completed per 2 s: ${trend.done.slice(-1)[0] ?? 0}`),
        sparkline(trend.failed, `failed per 2 s: ${trend.failed.slice(-1)[0] ?? 0}`));
      row.spark.lastChild.classList.add("bad");
      setText(row.state, queue.paused ? "paused" : "running");
      row.state.className = `badge ${queue.paused ? "paused" : "running"}`;
      row.toggle.paused = queue.paused;
      setText(row.toggle, queue.paused ? "Resume" : "Pause");
      row.toggle.setAttribute("aria-label", `${queue.paused ? "Resume" : "Pause"} queue ${queue.name}`);
    }
  };
  await live(refresh);
}

function queueRow(name, refresh) {
  const cells = Object.fromEntries(STATES.map((s) => [s, h("td", { class: `num ${s}` }, "0")]));
  const state = h("span", { class: "badge" }, "");
  const toggle = h("button", { class: "small" }, "Pause");
  toggle.addEventListener("click", () => act(toggle, async () => {
    const verb = toggle.paused ? "resume" : "pause";
    await api("POST", `/api/queues/${encodeURIComponent(name)}/${verb}`);
    return `${name}: ${verb}d`;
  }, refresh));
  const spark = h("td", { class: "sparks" });
  const tr = h("tr", { "data-queue": name },
    h("th", { scope: "row" }, h("a", { href: queueHref(name) }, name)),
    STATES.map((s) => cells[s]), spark, h("td", {}, state), h("td", {}, toggle));
  return { tr, cells, state, toggle, spark };
}

// ------------------------------------------------------------------ queue page

async function queuePage(name) {
  document.title = `${name} · jobwire`;
  let offset = 0;
  const q = encodeURIComponent(name);
  try {
    await api("GET", `/api/queues/${q}`);
  } catch (error) {
    app.replaceChildren(h("p", { class: "crumbs" }, h("a", { href: "/" }, "Queues")), h("h1", {}, name),
      h("p", { class: "empty" }, error.status === 404 ? "The broker has no queue of this name: queues appear with their first job." : `${error.code}: ${error.message}`));
    return;
  }
  const counts = h("dl", { class: "counts" }, STATES.map((s) => [h("dt", {}, s), h("dd", { id: `count-${s}` }, "0")]));
  const pausedBadge = h("span", { class: "badge" }, "");
  const toggle = h("button", {}, "Pause");
  const retryAll = h("button", {}, "Retry all failed");
  const cleanState = h("select", { id: "clean-state", "aria-label": "State to clean" },
    ["completed", "failed", "waiting", "delayed"].map((s) => h("option", { value: s }, s)));
  const cleanAge = h("select", { id: "clean-age", "aria-label": "Minimum age" },
    [["0", "any age"], ["3600000", "older than 1 hour"], ["86400000", "older than 1 day"],
      ["604800000", "older than 7 days"]].map(([v, t]) => h("option", { value: v }, t)));
  const clean = h("button", { class: "danger" }, "Clean");
  const rows = h("tbody");
  const tabFailed = h("button", { role: "tab", "aria-selected": "true", id: "tab-failed" }, "Failed");
  const range = h("span", { class: "range", "aria-live": "polite" }, "\u00a0");
  const prev = h("button", { class: "small" }, "← Newer");
  const next = h("button", { class: "small" }, "Older →");

  app.replaceChildren(
    h("p", { class: "crumbs" }, h("a", { href: "/" }, "Queues"), " / "),
    h("h1", {}, name, " ", pausedBadge),
    counts,
    h("div", { class: "actions" }, toggle, retryAll,
      h("span", { class: "group" }, cleanState, cleanAge, clean)),
    h("div", { role: "tablist", class: "tabs", "aria-label": "Job states" },
      tabFailed),
    h("p", { class: "hint" }, "Lists of waiting, delayed, active and completed jobs appear here once the broker can list them."),
    h("table", { class: "grid jobs", role: "tabpanel", "aria-labelledby": "tab-failed" },
      h("colgroup", {}, h("col", { class: "c-id" }), h("col", { class: "c-name" }), h("col", { class: "c-num" }),
        h("col", { class: "c-when" }), h("col"), h("col", { class: "c-act2" })),
      h("thead", {}, h("tr", {}, ["ID", "Name", "Attempts", "Failed at", "Error"].map((t) => h("th", { scope: "col" }, t)),
        h("th", { scope: "col" }, h("span", { class: "sr" }, "Actions")))),
      rows),
    h("div", { class: "pager" }, prev, range, next));

  const refresh = async () => {
    const [queue, page] = await Promise.all([
      api("GET", `/api/queues/${q}`),
      api("GET", `/api/queues/${q}/failed?offset=${offset}&limit=${PAGE}`),
    ]);
    for (const s of STATES) setText(document.getElementById(`count-${s}`), queue[s].toLocaleString("en"));
    setText(pausedBadge, queue.paused ? "paused" : "running");
    pausedBadge.className = `badge ${queue.paused ? "paused" : "running"}`;
    toggle.paused = queue.paused;
    setText(toggle, queue.paused ? "Resume" : "Pause");
    setText(tabFailed, `Failed (${queue.failed.toLocaleString("en")})`);
    retryAll.disabled = queue.failed === 0;
    if (page.jobs.length === 0 && offset > 0) { offset = Math.max(0, offset - PAGE); return refresh(); }
    renderFailed(rows, page.jobs, name, refresh);
    setText(range, page.total ? `${offset + 1}–${offset + page.jobs.length} of ${page.total} failed` : "no failed jobs");
    prev.disabled = offset === 0;
    next.disabled = page.next_offset === null;
    next.nextOffset = page.next_offset;
  };

  toggle.addEventListener("click", () => act(toggle, async () => {
    const verb = toggle.paused ? "resume" : "pause";
    await api("POST", `/api/queues/${q}/${verb}`);
    return `${name}: ${verb}d`;
  }, refresh));
  retryAll.addEventListener("click", async () => {
    if (!await confirmAction("Retry all failed jobs?", `Every failed job of ${name} goes back to waiting.`, "Retry all")) return;
    await act(retryAll, async () => `${(await api("POST", `/api/queues/${q}/retry`)).retried} jobs retried`, refresh);
  });
  clean.addEventListener("click", async () => {
    const label = cleanAge.selectedOptions[0].textContent;
    if (!await confirmAction(`Delete ${cleanState.value} jobs?`, `Delete the ${cleanState.value} jobs of ${name} (${label}). This cannot be undone.`, "Delete")) return;
    await act(clean, async () => {
      const reply = await api("POST", `/api/queues/${q}/clean`, { state: cleanState.value, older_than: Number(cleanAge.value) });
      return `${reply.removed} ${cleanState.value} jobs deleted`;
    }, refresh);
  });
  prev.addEventListener("click", () => { offset = Math.max(0, offset - PAGE); refresh(); });
  next.addEventListener("click", () => { offset = next.nextOffset ?? offset; refresh(); });
  await live(refresh);
}

function renderFailed(rows, jobs, name, refresh) {
  const ids = jobs.map((j) => j.id).join("\n");
  if (rows.dataset.ids === ids) {  // same jobs: update text in place
    jobs.forEach((job, i) => setText(rows.children[i].children[2], `${job.attempts} / ${job.max_attempts}`));
    return;
  }
  rows.dataset.ids = ids;
  rows.replaceChildren(...jobs.map((job) => {
    const retry = h("button", { class: "small", "aria-label": `Retry job ${job.id}` }, "Retry");
    const remove = h("button", { class: "small danger", "aria-label": `Remove job ${job.id}` }, "Remove");
    retry.addEventListener("click", () => act(retry, async () => {
      await api("POST", `/api/queues/${encodeURIComponent(name)}/retry`, { ids: [job.id] });
      return `job ${job.id} retried`;
    }, refresh));
    remove.addEventListener("click", async () => {
      if (!await confirmAction("Remove this job?", `Job ${job.id} is deleted for good.`, "Remove")) return;
      await act(remove, async () => { await api("DELETE", jobHref(job.id).replace("/jobs/", "/api/jobs/")); return `job ${job.id} removed`; }, refresh);
    });
    return h("tr", { "data-job": job.id },
      h("td", { class: "mono" }, h("a", { href: jobHref(job.id) }, job.id)),
      h("td", {}, job.name), h("td", { class: "num" }, `${job.attempts} / ${job.max_attempts}`),
      h("td", { title: ago(job.finished_at) }, when(job.finished_at)),
      h("td", { class: "err", title: firstLine(job.error) }, firstLine(job.error)),
      h("td", { class: "row-actions" }, retry, remove));
  }));
}

// ------------------------------------------------------------------ job page

async function jobPage(id) {
  document.title = `Job ${id} · jobwire`;
  const path = `/api/jobs/${encodeURIComponent(id)}`;
  let job;
  try {
    job = await api("GET", path);
  } catch (error) {
    app.replaceChildren(h("p", { class: "crumbs" }, h("a", { href: "/" }, "Queues")),
      h("h1", {}, `Job ${id}`), h("p", { class: "empty" }, error.status === 404 ? "This job does not exist (removed, cleaned or never added)." : error.message));
    return;
  }
  const field = (key) => h("dd", { id: `job-${key}` }, "");
  const stateBadge = h("span", { class: "badge", id: "job-state" }, "");
  const bar = h("progress", { id: "job-progress", max: "100", value: "0", "aria-label": "Progress" });
  const barText = h("span", { id: "job-progress-text", class: "mono" }, "");
  const retry = h("button", {}, "Retry");
  const remove = h("button", { class: "danger" }, "Remove");
  const pre = (key) => h("pre", { id: `job-${key}`, class: "code", tabindex: "0" }, "");
  const times = ["created_at", "run_at", "started_at", "finished_at", "lease_deadline"];
  const labels = { created_at: "Created", run_at: "Due", started_at: "Started", finished_at: "Finished", lease_deadline: "Lease until" };
  app.replaceChildren(
    h("p", { class: "crumbs" }, h("a", { href: "/" }, "Queues"), " / ", h("a", { href: queueHref(job.queue) }, job.queue), " /"),
    h("h1", {}, `Job ${id} `, stateBadge),
    h("div", { class: "actions" }, retry, remove),
    h("div", { class: "columns" },
      h("section", {}, h("h2", {}, "Summary"),
        h("dl", { class: "facts" },
          h("dt", {}, "Name"), field("name"), h("dt", {}, "Attempts"), field("attempts"),
          h("dt", {}, "Priority"), field("priority"),
          h("dt", {}, "Progress"), h("dd", { class: "progress" }, bar, barText),
          times.flatMap((t) => [h("dt", {}, labels[t]), field(t)]))),
      h("section", {}, h("h2", {}, "Data ", h("small", { id: "job-data-encoding" }, "")), pre("data"),
        h("h2", {}, "Result"), pre("result"))),
    h("section", {}, h("h2", {}, "Error"), pre("error")));

  const show = (j) => {
    setText(stateBadge, j.state);
    stateBadge.className = `badge ${j.state}`;
    setText(document.getElementById("job-name"), j.name);
    setText(document.getElementById("job-attempts"), `${j.attempts} of ${j.max_attempts}`);
    setText(document.getElementById("job-priority"), j.priority);
    for (const t of times) setText(document.getElementById(`job-${t}`), j[t] === null ? "—" : `${when(j[t])} (${ago(j[t])})`);
    const percent = typeof j.progress === "number" ? Math.max(0, Math.min(100, j.progress)) : null;
    bar.value = percent ?? (j.state === "completed" ? 100 : 0);
    setText(barText, percent !== null ? `${percent}%` : j.progress === null ? "—" : JSON.stringify(j.progress));
    setText(document.getElementById("job-data-encoding"), j.data_encoding ? `(${j.data_encoding})` : "");
    setText(document.getElementById("job-data"), pretty(j.data));
    setText(document.getElementById("job-result"), j.result === null ? "—" : pretty(j.result));
    setText(document.getElementById("job-error"), j.error || "—");
    retry.hidden = j.state !== "failed";
  };
  show(job);
  retry.addEventListener("click", () => act(retry, async () => {
    await api("POST", `/api/queues/${encodeURIComponent(job.queue)}/retry`, { ids: [id] });
    return "retried: the job is waiting again";
  }, async () => show(job = await api("GET", path))));
  remove.addEventListener("click", async () => {
    if (!await confirmAction("Remove this job?", `Job ${id} is deleted for good.`, "Remove")) return;
    await act(remove, async () => {
      await api("DELETE", path);
      location.assign(queueHref(job.queue));
    });
  });
  await live(async () => show(job = await api("GET", path)));
}

// ------------------------------------------------------------------ router

function route() {
  const path = location.pathname;
  const match = (prefix) => path.startsWith(prefix) ? decodeURIComponent(path.slice(prefix.length)) : null;
  const queue = match("/queues/");
  const job = match("/jobs/");
  const page = queue ? queuePage(queue) : job ? jobPage(job) : overviewPage();
  page.catch((error) => notice(`${error.code || "ERROR"}: ${error.message}`, "error"));
}

route();
