// jobwire dashboard, part 1 of 2: helpers, the JSON API, dialogs and live updates.
// Pages (queues, one queue, one job, workers) are in pages.js. No framework, no build step.
// Rules that keep it usable:
// - data is put in the page with textContent only (never innerHTML), so job data cannot inject;
// - a page is built once, then live updates change text in place: rows keep their place and
//   size (fixed table layout, tabular numbers), so nothing jumps under the reader's cursor;
// - live updates come from the gateway's Server-Sent Events (/api/events, read with fetch so the
//   bearer token can be sent): an event schedules a refresh of what is on screen (at most one
//   per EVENT_REFRESH_MS); a slow timer refreshes too, for what no event announces (ages);
// - every action is a <button> (keyboard reachable); destructive ones ask in a modal <dialog>.
"use strict";

const REFRESH_MS = 2000;        // overview sampling: the sparklines' step
const FALLBACK_MS = 10000;      // other pages: refresh even without events
const EVENT_REFRESH_MS = 300;   // at most one refresh per this, however many events arrive
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

// Keep the page live: run `refresh` now, on every matching job event (debounced), and every
// `everyMs`. `query` filters the event stream ("?queue=a"). `onEvent(event)`, if given, sees each
// event first (the job page moves its progress bar from it); returning true skips the refresh.
// The header shows whether events flow ("live") or the page only polls.
const liveState = { events: 0, streaming: false, failed: null };

function live(refresh, { everyMs = FALLBACK_MS, query = "", onEvent = null } = {}) {
  clearTimeout(timer);
  let pending = null;
  let running = false;
  const run = async (reason) => {
    if (running) { pending = pending || setTimeout(() => { pending = null; run(reason); }, EVENT_REFRESH_MS); return; }
    running = true;
    try {
      await refresh(reason);
      showLive();
    } catch (error) {
      setStatus(false, error.code === "BROKER_UNAVAILABLE" ? "broker unreachable" : `error: ${error.code || error.message}`);
    } finally {
      running = false;
    }
  };
  const tick = async () => {
    await run("timer");
    timer = setTimeout(tick, everyMs);
  };
  followEvents(query, (event) => {
    liveState.events += 1;
    document.body.dataset.events = String(liveState.events);
    if (onEvent && onEvent(event)) return;
    if (!pending) pending = setTimeout(() => { pending = null; run("event"); }, EVENT_REFRESH_MS);
  });
  return tick();
}

function showLive() {
  const time = when(Date.now()).slice(11);
  if (liveState.streaming) setStatus(true, `live · ${time}`);
  else setStatus(true, `polling${liveState.failed ? ` (${liveState.failed})` : ""} · ${time}`);
}

// Read /api/events with fetch (EventSource cannot send a bearer token) and call `onEvent` with
// each event's JSON. Reconnects after 3 s; a `lagged` event is passed on like any other.
function followEvents(query, onEvent) {
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const once = async () => {
    const headers = { Accept: "text/event-stream" };
    const token = sessionStorage.getItem("jobwire-token");
    if (token) headers.Authorization = `Bearer ${token}`;
    const reply = await fetch(`/api/events${query}`, { headers });
    if (!reply.ok) {
      const payload = await reply.json().catch(() => ({}));
      liveState.failed = (payload.error && payload.error.code) || `HTTP ${reply.status}`;
      return;
    }
    liveState.streaming = true;
    liveState.failed = null;
    showLive();
    const reader = reply.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        for (const line of block.split("\n")) {
          if (line.startsWith("data: ")) {
            try { onEvent(JSON.parse(line.slice(6))); } catch (error) { console.error(error); }
          }
        }
      }
    }
  };
  (async () => {
    for (;;) {
      try { await once(); } catch (error) { liveState.failed = "stream lost"; }
      liveState.streaming = false;
      await sleep(3000);
    }
  })();
}
