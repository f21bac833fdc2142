// jobwire dashboard, part 2 of 2: the pages (queues, one queue, one job, workers) and the router.
// Helpers, the API and live updates are in app.js; the queue page's limits and schedulers in
// flow.js.
"use strict";

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
  const base = document.createElementNS("http://www.w3.org/2000/svg", "line");
  for (const [k, v] of [["x1", 0], ["y1", 18.5], ["x2", width], ["y2", 18.5]]) base.setAttribute(k, v);
  svg.append(base);  // a flat baseline until there are points: the cell never looks empty
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

  // Counts follow job events at once; the sparklines sample the totals on the 2 s timer only,
  // so each point is one 2 s step however many events arrived.
  const refresh = async (reason) => {
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
      const trend = reason === "timer" ? track(queue) : trends.get(queue.name) || track(queue);
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
  await live(refresh, { everyMs: REFRESH_MS });
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

// What each state's table shows: the time column, the detail column, and their order.
const STATE_VIEW = {
  waiting: { time: "Due", at: (j) => j.run_at, detail: "Data", show: (j) => compact(j.data) },
  delayed: { time: "Runs at", at: (j) => j.run_at, detail: "Data", show: (j) => compact(j.data) },
  active: { time: "Lease until", at: (j) => j.lease_deadline, detail: "Progress · worker",
    show: (j) => `${j.progress === null ? "—" : compact(j.progress)} · conn ${j.conn ?? "?"}` },
  completed: { time: "Finished", at: (j) => j.finished_at, detail: "Result", show: (j) => compact(j.result) },
  failed: { time: "Failed at", at: (j) => j.finished_at, detail: "Error", show: (j) => firstLine(j.error) },
};
const compact = (value) => value === null || value === undefined ? "—" : JSON.stringify(value);

async function queuePage(name) {
  document.title = `${name} · jobwire`;
  const params = new URLSearchParams(location.search);
  let state = STATES.includes(params.get("state")) ? params.get("state") : null;
  let offset = Math.max(0, Number(params.get("offset")) || 0);
  const q = encodeURIComponent(name);
  let first;
  try {
    first = await api("GET", `/api/queues/${q}`);
  } catch (error) {
    app.replaceChildren(h("p", { class: "crumbs" }, h("a", { href: "/" }, "Queues")), h("h1", {}, name),
      h("p", { class: "empty" }, error.status === 404 ? "The broker has no queue of this name: queues appear with their first job." : `${error.code}: ${error.message}`));
    return;
  }
  // Open on what needs attention: failed, then active, waiting, delayed, completed.
  state = state || ["failed", "active", "waiting", "delayed", "completed"].find((s) => first[s] > 0) || "waiting";

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
  const tabs = Object.fromEntries(STATES.map((s) => [s, h("button", {
    role: "tab", id: `tab-${s}`, "aria-controls": "jobs-panel", "data-state": s,
  }, s[0].toUpperCase() + s.slice(1))]));
  const timeHead = h("th", { scope: "col", id: "col-time" }, "");
  const detailHead = h("th", { scope: "col", id: "col-detail" }, "");
  const range = h("span", { class: "range", "aria-live": "polite" }, "\u00a0");
  const prev = h("button", { class: "small" }, "← Previous");
  const next = h("button", { class: "small" }, "Next →");
  const flow = flowPanels(name);  // flow.js: limits and schedulers

  app.replaceChildren(
    h("p", { class: "crumbs" }, h("a", { href: "/" }, "Queues"), " / "),
    h("h1", {}, name, " ", pausedBadge),
    counts,
    h("div", { class: "actions" }, toggle, retryAll,
      h("span", { class: "group" }, cleanState, cleanAge, clean)),
    h("div", { role: "tablist", class: "tabs", "aria-label": "Job states" }, STATES.map((s) => tabs[s])),
    h("table", { class: "grid jobs", role: "tabpanel", id: "jobs-panel" },
      h("colgroup", {}, h("col", { class: "c-id" }), h("col", { class: "c-name" }), h("col", { class: "c-num" }),
        h("col", { class: "c-when" }), h("col"), h("col", { class: "c-act2" })),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "ID"), h("th", { scope: "col" }, "Name"),
        h("th", { scope: "col", class: "num" }, "Attempts"), timeHead, detailHead,
        h("th", { scope: "col" }, h("span", { class: "sr" }, "Actions")))),
      rows),
    h("div", { class: "pager" }, prev, range, next),
    flow.node);

  const selectTab = () => {
    for (const s of STATES) {
      tabs[s].setAttribute("aria-selected", String(s === state));
      tabs[s].tabIndex = s === state ? 0 : -1;
    }
    document.getElementById("jobs-panel").setAttribute("aria-labelledby", `tab-${state}`);
    setText(timeHead, STATE_VIEW[state].time);
    setText(detailHead, STATE_VIEW[state].detail);
    history.replaceState(null, "", `${queueHref(name)}?state=${state}${offset ? `&offset=${offset}` : ""}`);
  };

  const refresh = async () => {
    const [queue, page] = await Promise.all([
      api("GET", `/api/queues/${q}`),
      api("GET", `/api/queues/${q}/jobs?state=${state}&offset=${offset}&limit=${PAGE}`),
      flow.refresh(),
    ]);
    for (const s of STATES) {
      setText(document.getElementById(`count-${s}`), queue[s].toLocaleString("en"));
      setText(tabs[s], `${s[0].toUpperCase()}${s.slice(1)} (${queue[s].toLocaleString("en")})`);
    }
    setText(pausedBadge, queue.paused ? "paused" : "running");
    pausedBadge.className = `badge ${queue.paused ? "paused" : "running"}`;
    toggle.paused = queue.paused;
    setText(toggle, queue.paused ? "Resume" : "Pause");
    retryAll.disabled = queue.failed === 0;
    if (page.jobs.length === 0 && offset > 0) { offset = Math.max(0, offset - PAGE); selectTab(); return refresh(); }
    renderJobs(rows, page.jobs, name, state, refresh);
    setText(range, page.total ? `${offset + 1}–${offset + page.jobs.length} of ${page.total} ${state}` : `no ${state} jobs`);
    prev.disabled = offset === 0;
    next.disabled = page.next_offset === null;
    next.nextOffset = page.next_offset;
  };
  const show = (chosen) => {
    if (chosen === state) return;
    state = chosen;
    offset = 0;
    rows.dataset.ids = "";
    selectTab();
    refresh().catch((error) => notice(`${error.code || "ERROR"}: ${error.message}`, "error"));
  };
  for (const s of STATES) tabs[s].addEventListener("click", () => show(s));
  // The tab pattern: arrows move between tabs, Home/End to the ends; Tab leaves the list.
  app.querySelector("[role=tablist]").addEventListener("keydown", (event) => {
    const at = STATES.indexOf(state);
    const to = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: STATES.length - 1 }[event.key];
    if (to === undefined) return;
    event.preventDefault();
    const chosen = STATES[(to + STATES.length) % STATES.length];
    show(chosen);
    tabs[chosen].focus();
  });

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
  prev.addEventListener("click", () => { offset = Math.max(0, offset - PAGE); selectTab(); refresh(); });
  next.addEventListener("click", () => { offset = next.nextOffset ?? offset; selectTab(); refresh(); });
  selectTab();
  await live(refresh, { query: `?queue=${q}` });
}

function renderJobs(rows, jobs, name, state, refresh) {
  const view = STATE_VIEW[state];
  const ids = `${state}\n${jobs.map((j) => j.id).join("\n")}`;
  if (rows.dataset.ids === ids) {  // same jobs: update text in place
    jobs.forEach((job, i) => {
      const cells = rows.children[i].children;
      setText(cells[2], `${job.attempts} / ${job.max_attempts}`);
      setText(cells[3], when(view.at(job)));
      setText(cells[4], view.show(job));
    });
    return;
  }
  rows.dataset.ids = ids;
  rows.replaceChildren(...jobs.map((job) => {
    const buttons = [];
    if (state === "failed") {
      const retry = h("button", { class: "small", "aria-label": `Retry job ${job.id}` }, "Retry");
      retry.addEventListener("click", () => act(retry, async () => {
        await api("POST", `/api/queues/${encodeURIComponent(name)}/retry`, { ids: [job.id] });
        return `job ${job.id} retried`;
      }, refresh));
      buttons.push(retry);
    }
    const remove = h("button", { class: "small danger", "aria-label": `Remove job ${job.id}` }, "Remove");
    remove.addEventListener("click", async () => {
      if (!await confirmAction("Remove this job?", `Job ${job.id} is deleted for good.`, "Remove")) return;
      await act(remove, async () => { await api("DELETE", `/api/jobs/${encodeURIComponent(job.id)}`); return `job ${job.id} removed`; }, refresh);
    });
    buttons.push(remove);
    const detail = view.show(job);
    return h("tr", { "data-job": job.id },
      h("td", { class: "mono" }, h("a", { href: jobHref(job.id) }, job.id)),
      h("td", {}, job.name), h("td", { class: "num" }, `${job.attempts} / ${job.max_attempts}`),
      h("td", { title: ago(view.at(job)) }, when(view.at(job))),
      h("td", { class: state === "failed" ? "err" : "mono", title: detail }, detail),
      h("td", { class: "row-actions" }, buttons));
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
          h("dt", {}, "Worker"), field("holder"), h("dt", {}, "Timeout"), field("timeout"),
          times.flatMap((t) => [h("dt", {}, labels[t]), field(t)]))),
      h("section", {}, h("h2", {}, "Data ", h("small", { id: "job-data-encoding" }, "")), pre("data"),
        h("h2", {}, "Result"), pre("result"))),
    h("section", {}, h("h2", {}, "Error"), pre("error")));

  const showProgress = (progress, state) => {
    const percent = typeof progress === "number" ? Math.max(0, Math.min(100, progress)) : null;
    bar.value = percent ?? (state === "completed" ? 100 : 0);
    setText(barText, percent !== null ? `${percent}%` : progress === null || progress === undefined ? "—" : JSON.stringify(progress));
  };
  const holderText = (j) => {
    if (j.state !== "active") return "—";
    if (!j.lease_holder) return "unknown";
    const w = j.lease_holder;
    return `${w.client || "?"} (connection ${w.conn}${w.host ? `, ${w.host}` : ""})`;
  };
  const show = (j) => {
    setText(stateBadge, j.state);
    stateBadge.className = `badge ${j.state}`;
    setText(document.getElementById("job-name"), j.name);
    setText(document.getElementById("job-attempts"), `${j.attempts} of ${j.max_attempts}`);
    setText(document.getElementById("job-priority"), j.priority);
    setText(document.getElementById("job-holder"), holderText(j));
    setText(document.getElementById("job-timeout"), j.timeout_ms == null ? "none" : `${j.timeout_ms} ms`);
    for (const t of times) setText(document.getElementById(`job-${t}`), j[t] === null ? "—" : `${when(j[t])} (${ago(j[t])})`);
    showProgress(j.progress, j.state);
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
  // Events of this job refresh it; a progress event moves the bar at once.
  await live(async () => show(job = await api("GET", path)), {
    query: `?queue=${encodeURIComponent(job.queue)}`,
    onEvent: (event) => {
      if (event.kind === "lagged") return false;
      if (event.job_id !== id) return true;
      if (event.kind === "progress") showProgress(event.progress, "active");
      return false;
    },
  });
}

// ------------------------------------------------------------------ workers page

async function workersPage() {
  document.title = "Workers · jobwire";
  const params = new URLSearchParams(location.search);
  const all = h("input", { type: "checkbox", id: "workers-all", checked: params.get("all") === "true" });
  const meta = h("p", { class: "meta", id: "workers-meta" }, "\u00a0");
  const rows = h("tbody");
  const empty = h("p", { class: "empty", hidden: true }, "No worker is connected.");
  app.replaceChildren(
    h("h1", {}, "Workers"),
    h("p", { class: "meta" }, h("label", { for: "workers-all" }, all, " every connection (producers and the gateway too)")),
    meta,
    h("table", { class: "grid", id: "workers" },
      h("caption", { class: "sr" }, "Connected workers"),
      h("colgroup", {}, h("col", { class: "c-conn" }), h("col", { class: "c-name" }), h("col", { class: "c-host" }), h("col"),
        ["held", "completed", "failed"].map(() => h("col", { class: "c-small" })), h("col", { class: "c-when" }), h("col", { class: "c-when2" })),
      h("thead", {}, h("tr", {}, ["Conn", "Client", "Address", "Queues"].map((t) => h("th", { scope: "col" }, t)),
        ["Held", "Done", "Failed"].map((t) => h("th", { scope: "col", class: "num" }, t)),
        h("th", { scope: "col" }, "Connected"), h("th", { scope: "col" }, "Last seen"))),
      rows),
    empty);
  const refresh = async () => {
    const data = await api("GET", `/api/workers${all.checked ? "?all=true" : ""}`);
    const held = data.workers.reduce((n, w) => n + w.held, 0);
    const noun = all.checked ? "connection" : "worker";
    setText(meta, `${data.total} ${noun}${data.total === 1 ? "" : "s"} · ${held} job${held === 1 ? "" : "s"} held`);
    empty.hidden = data.workers.length > 0;
    const ids = data.workers.map((w) => w.conn).join(",");
    if (rows.dataset.ids !== ids) {
      rows.dataset.ids = ids;
      rows.replaceChildren(...data.workers.map((w) => h("tr", { "data-conn": w.conn },
        h("td", { class: "num" }, w.conn), h("td", { title: w.client }, w.client), h("td", { class: "mono" }, w.host),
        h("td", { title: w.queues.join(", ") }, w.queues.map((name, i) => [i ? ", " : "", h("a", { href: queueHref(name) }, name)])),
        h("td", { class: "num" }, ""), h("td", { class: "num" }, ""), h("td", { class: "num" }, ""),
        h("td", { title: "" }, ""), h("td", {}, ""))));
    }
    data.workers.forEach((w, i) => {
      const cells = rows.children[i].children;
      setText(cells[4], w.held.toLocaleString("en"));
      setText(cells[5], w.completed.toLocaleString("en"));
      setText(cells[6], w.failed.toLocaleString("en"));
      setText(cells[7], when(w.connected_at));
      setText(cells[8], ago(w.last_seen));
    });
  };
  all.addEventListener("change", () => {
    rows.dataset.ids = "";
    history.replaceState(null, "", all.checked ? "/workers?all=true" : "/workers");
    refresh();
  });
  await live(refresh, { everyMs: 5000, query: "?kind=active&kind=completed&kind=failed&kind=released&kind=lease_expired" });
}

// ------------------------------------------------------------------ router

function route() {
  const path = location.pathname;
  const match = (prefix) => path.startsWith(prefix) ? decodeURIComponent(path.slice(prefix.length)) : null;
  const queue = match("/queues/");
  const job = match("/jobs/");
  const page = queue ? queuePage(queue) : job ? jobPage(job) : path === "/workers" ? workersPage() : overviewPage();
  page.catch((error) => notice(`${error.code || "ERROR"}: ${error.message}`, "error"));
}

route();
