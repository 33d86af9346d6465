// Sluice UI: the only script. It shows times in the reader's zone (UTC stays in the title)
// and keeps run and workflow pages live over server-sent events. No inline script anywhere:
// the page's Content-Security-Policy allows only this file.
"use strict";

function localTimes(root) {
  for (const el of root.querySelectorAll("time[datetime]")) {
    const at = new Date(el.getAttribute("datetime"));
    if (!isNaN(at)) el.textContent = at.toLocaleString();
  }
}

function setState(el, state, symbol) {
  if (!el) return;
  for (const c of Array.from(el.classList)) if (c.startsWith("s-")) el.classList.remove(c);
  el.classList.add("s-" + state);
  if (el.hasAttribute("data-badge")) el.textContent = symbol + " " + state.replace(/_/g, " ");
  else if (el.classList.contains("cell") || el.classList.contains("sq")) {
    el.textContent = symbol;
    el.title = el.title.replace(/·.*$/, "· " + state);
  }
}

function tryBlock(section, tryNumber) {
  let details = section.querySelector('details[data-try="' + tryNumber + '"]');
  if (details) return details;
  const taskId = section.getAttribute("data-task");
  details = document.createElement("details");
  details.className = "try";
  details.setAttribute("data-try", tryNumber);
  details.open = true;
  const summary = document.createElement("summary");
  summary.append("Try " + tryNumber + " ");
  const badge = document.createElement("span");
  badge.className = "badge s-none";
  badge.setAttribute("data-badge", "");
  summary.append(badge);
  const title = document.createElement("h4");
  title.textContent = "Log";
  const log = document.createElement("pre");
  log.className = "log";
  log.setAttribute("data-log", taskId + "|" + tryNumber);
  details.append(summary, title, log);
  for (const older of section.querySelectorAll("details[data-try]")) older.open = false;
  section.querySelector("[data-tries]").append(details);
  return details;
}

function liveRun(main, source) {
  source.addEventListener("task", (e) => {
    const d = JSON.parse(e.data);
    const section = main.querySelector('section[data-task="' + CSS.escape(d.task_id) + '"]');
    if (!section) return;
    setState(section.querySelector("[data-task-state] [data-badge]"), d.state, d.symbol);
    setState(tryBlock(section, d.try_number).querySelector("summary [data-badge]"), d.state, d.symbol);
  });
  source.addEventListener("log", (e) => {
    const d = JSON.parse(e.data);
    const section = main.querySelector('section[data-task="' + CSS.escape(d.task_id) + '"]');
    if (!section) return;
    const log = tryBlock(section, d.try_number).querySelector("pre.log");
    const line = document.createElement("span");
    line.className = d.stream;
    line.textContent = d.line + "\n";
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.append(line);
    if (atBottom) log.scrollTop = log.scrollHeight;
  });
  source.addEventListener("run", (e) => {
    const d = JSON.parse(e.data);
    setState(document.querySelector("#run-state [data-badge]"), d.state, d.symbol);
    main.setAttribute("data-run-state", d.state);
    if (["success", "failed", "cancelled"].includes(d.state)) {
      const cancel = document.getElementById("cancel-form");
      if (cancel) cancel.remove();
      // Times, durations and the Gantt chart are drawn by the server.
      const note = document.getElementById("live-note");
      if (note) note.hidden = false;
    }
  });
  source.addEventListener("end", () => {
    main.setAttribute("data-live-ended", "");
    source.close();
  });
}

function liveWorkflow(main, source) {
  const dag = main.querySelector("svg.dag");
  source.addEventListener("cell", (e) => {
    const d = JSON.parse(e.data);
    setState(main.querySelector('[data-cell="' + CSS.escape(d.run_id + "|" + d.task_id) + '"]'), d.state, d.symbol);
    if (dag && dag.getAttribute("data-run") === d.run_id) {
      const node = dag.querySelector('[data-node="' + CSS.escape(d.task_id) + '"]');
      if (node) {
        setState(node, d.state, d.symbol);
        const label = node.querySelector("[data-label]");
        if (label) label.textContent = d.state.replace(/_/g, " ");
      }
    }
  });
  source.addEventListener("run", (e) => {
    const d = JSON.parse(e.data);
    setState(main.querySelector('[data-run-head="' + CSS.escape(d.run_id) + '"]'), d.state, d.symbol);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  const main = document.querySelector("main[data-live]");
  if (!main || !window.EventSource) return;
  const source = new EventSource(main.getAttribute("data-live"));
  if (main.getAttribute("data-kind") === "run") liveRun(main, source);
  else liveWorkflow(main, source);
});
