// jobwire dashboard, queue page extras: flow control (rate and concurrency limits, the "not now"
// pause) and the queue's schedulers (repeatable jobs). Uses h/setText/api/act/confirmAction from
// app.js; pages.js puts flowPanels(name).node on the queue page and calls its refresh.
"use strict";

function rateText(rate) {
  return rate ? `${rate.max.toLocaleString("en")} per ${duration(rate.per)}` : "none";
}

function ruleText(s) {
  if (s.every !== null) return `every ${duration(s.every)}`;
  return `cron ${s.cron}${s.tz ? ` (${s.tz})` : ""}`;
}

function flowPanels(name) {
  const q = encodeURIComponent(name);
  const fact = (id) => h("dd", { id }, "—");
  const rateMax = h("input", { id: "limit-rate-max", type: "number", min: "1", step: "1", inputmode: "numeric" });
  const ratePer = h("input", { id: "limit-rate-per", type: "number", min: "1", step: "1", inputmode: "numeric" });
  const concurrency = h("input", { id: "limit-concurrency", type: "number", min: "1", step: "1", inputmode: "numeric" });
  const save = h("button", { type: "submit", class: "primary" }, "Save limits");
  const clear = h("button", { type: "button" }, "Clear limits");
  const form = h("form", { class: "limits-form", "aria-label": "Set the queue's limits" },
    h("label", { for: "limit-rate-max" }, "Rate: max jobs", rateMax),
    h("label", { for: "limit-rate-per" }, "per (ms)", ratePer),
    h("label", { for: "limit-concurrency" }, "Concurrency", concurrency),
    h("p", { class: "hint" }, "Empty fields remove that limit. The broker enforces them across every worker."),
    h("div", { class: "buttons" }, clear, save));
  const rows = h("tbody");
  const none = h("p", { class: "empty", hidden: true }, "No schedulers: add one with PUT /api/queues/{queue}/schedulers/{key} or Queue.upsert_scheduler.");
  const node = h("div", { class: "columns flow" },
    h("section", { id: "limits", "aria-labelledby": "limits-title" },
      h("h2", { id: "limits-title" }, "Flow control"),
      h("dl", { class: "facts" },
        h("dt", {}, "Rate limit"), fact("limits-rate"),
        h("dt", {}, "Concurrency"), fact("limits-concurrency"),
        h("dt", {}, "Not now until"), fact("limits-paused")),
      form),
    h("section", { id: "schedulers", "aria-labelledby": "schedulers-title" },
      h("h2", { id: "schedulers-title" }, "Schedulers ", h("small", { id: "schedulers-count" }, "")),
      h("table", { class: "grid", id: "schedulers-table" },
        h("caption", { class: "sr" }, "Repeatable jobs of this queue"),
        h("colgroup", {}, h("col", { class: "c-key" }), h("col"), h("col", { class: "c-when" }),
          h("col", { class: "c-small" }), h("col", { class: "c-act" })),
        h("thead", {}, h("tr", {}, ["Key", "Rule", "Next run"].map((t) => h("th", { scope: "col" }, t)),
          h("th", { scope: "col", class: "num" }, "Runs"), h("th", { scope: "col" }, h("span", { class: "sr" }, "Actions")))),
        rows),
      none));

  let filled = false;  // the form is filled once (and after a save), never under the user's typing
  const fill = (limits) => {
    rateMax.value = limits.rate ? limits.rate.max : "";
    ratePer.value = limits.rate ? limits.rate.per : "";
    concurrency.value = limits.concurrency ?? "";
    filled = true;
  };
  const showLimits = (limits) => {
    setText(document.getElementById("limits-rate"), rateText(limits.rate));
    setText(document.getElementById("limits-concurrency"), limits.concurrency === null ? "none" : limits.concurrency.toLocaleString("en"));
    setText(document.getElementById("limits-paused"), limits.paused_until === null ? "—" : `${when(limits.paused_until)} (${ago(limits.paused_until)})`);
    if (!filled) fill(limits);
  };
  const showSchedulers = (data) => {
    setText(document.getElementById("schedulers-count"), `(${data.total})`);
    none.hidden = data.total > 0;
    const keys = data.schedulers.map((s) => s.key).join("\n");
    if (rows.dataset.keys !== keys) {
      rows.dataset.keys = keys;
      rows.replaceChildren(...data.schedulers.map((s) => {
        const remove = h("button", { class: "small danger", "aria-label": `Remove scheduler ${s.key}` }, "Remove");
        remove.addEventListener("click", async () => {
          if (!await confirmAction("Remove this scheduler?", `Scheduler ${s.key} makes no more runs; its pending run's job is deleted if it has not started.`, "Remove")) return;
          await act(remove, async () => {
            await api("DELETE", `/api/queues/${q}/schedulers/${encodeURIComponent(s.key)}`);
            return `scheduler ${s.key} removed`;
          }, refresh);
        });
        return h("tr", { "data-key": s.key },
          h("td", { class: "mono", title: `${s.key} → job ${s.name}` }, s.key), h("td", {}, ""),
          h("td", {}, ""), h("td", { class: "num" }, ""), h("td", { class: "row-actions" }, remove));
      }));
    }
    data.schedulers.forEach((s, i) => {
      const cells = rows.children[i].children;
      setText(cells[1], ruleText(s));
      cells[1].title = ruleText(s);
      setText(cells[2], s.next_run === null ? "no more runs" : when(s.next_run));
      cells[2].title = ago(s.next_run);
      setText(cells[3], s.limit === null ? s.count.toLocaleString("en") : `${s.count} / ${s.limit}`);
    });
  };
  const refresh = async () => {
    const [limits, schedulers] = await Promise.all([
      api("GET", `/api/queues/${q}/limits`), api("GET", `/api/queues/${q}/schedulers`)]);
    showLimits(limits);
    showSchedulers(schedulers);
  };
  const number = (input) => input.value === "" ? null : Number(input.value);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const most = number(rateMax);
    const per = number(ratePer);
    const body = {
      rate: most === null && per === null ? null : { max: most, per },
      concurrency: number(concurrency),
    };
    act(save, async () => {
      const limits = await api("PUT", `/api/queues/${q}/limits`, body);
      fill(limits);
      showLimits(limits);
      return `${name}: rate ${rateText(limits.rate)}, concurrency ${limits.concurrency ?? "none"}`;
    });
  });
  clear.addEventListener("click", () => act(clear, async () => {
    const limits = await api("DELETE", `/api/queues/${q}/limits`);
    fill(limits);
    showLimits(limits);
    return `${name}: limits removed`;
  }));
  return { node, refresh };
}
