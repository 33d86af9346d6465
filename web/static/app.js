// Sluice UI: the only script. It shows times in the reader's zone (UTC stays in the title)
// and keeps run and workflow pages live over server-sent events. No inline script anywhere:
// the page's Content-Security-Policy allows only this file. Data from the server is inserted
// as text; whole sections are only ever swapped for the server's own escaped rendering.
"use strict";

function localTime(el) {
  const at = new Date(el.getAttribute("datetime"));
  if (!isNaN(at)) el.textContent = at.toLocaleString();
}

function localTimes(root) {
  for (const el of root.querySelectorAll("time[datetime]")) localTime(el);
}

// The same markup as the templates' `time` macro.
function timeElement(at) {
  if (!at) {
    const none = document.createElement("span");
    none.className = "muted";
    none.textContent = "—";
    return none;
  }
  const el = document.createElement("time");
  el.setAttribute("datetime", at);
  el.title = at + " (UTC)";
  el.textContent = at;
  localTime(el);
  return el;
}

// The server's `human_duration`: 850ms, 12.3s, 4m 05s, 2h 03m.
function humanDuration(ms) {
  ms = Math.max(0, Math.floor(ms));
  const pad = (n) => String(n).padStart(2, "0");
  if (ms < 1000) return ms + "ms";
  if (ms < 60000) return (ms / 1000).toFixed(1) + "s";
  if (ms < 3600000) return Math.floor(ms / 60000) + "m " + pad(Math.floor(ms / 1000) % 60) + "s";
  return Math.floor(ms / 3600000) + "h " + pad(Math.floor(ms / 60000) % 60) + "m";
}

// Fetches a server-rendered section and hands the parsed document to `apply`; `start` runs as
// each fetch begins. Calls while a fetch is under way are folded into one more fetch after
// it, so bursts of events cost at most two requests. A redirect (the session expired: the
// login page) is never swapped in.
function sectionFetcher(url, start, apply) {
  let busy = false;
  let again = false;
  const fetchSection = () => {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    start();
    fetch(url(), { credentials: "same-origin", redirect: "error" })
      .then((r) => (r.ok ? r.text() : Promise.reject(new Error("status " + r.status))))
      .then((html) => apply(new DOMParser().parseFromString(html, "text/html")))
      .catch(() => {})
      .finally(() => {
        busy = false;
        if (again) {
          again = false;
          fetchSection();
        }
      });
  };
  fetchSection.busy = () => busy;
  return fetchSection;
}

// Replaces the element with `id` by the one of the same id in `doc`; true if it did.
function swapSection(doc, id) {
  const fresh = doc.getElementById(id);
  const old = document.getElementById(id);
  if (!fresh || !old) return false;
  const node = document.importNode(fresh, true);
  localTimes(node);
  old.replaceWith(node);
  return true;
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
  const runId = main.getAttribute("data-run");
  const refreshGantt = sectionFetcher(
    () => "/runs/" + encodeURIComponent(runId) + "/gantt",
    () => {},
    (doc) => swapSection(doc, "gantt"),
  );
  let ticker = null;
  const showRun = (d) => {
    setState(document.querySelector("#run-state [data-badge]"), d.state, d.symbol);
    main.setAttribute("data-run-state", d.state);
    const started = document.getElementById("run-started");
    if (started) started.replaceChildren(timeElement(d.started_at));
    const ended = document.getElementById("run-ended");
    if (ended) ended.replaceChildren(timeElement(d.ended_at));
    const duration = document.getElementById("run-duration");
    if (ticker) clearInterval(ticker);
    ticker = null;
    if (duration) {
      duration.textContent = d.duration || "—";
      // The server measured the time so far; count on from it with this page's own clock.
      if (!d.final && d.elapsed_ms !== null) {
        const since = performance.now();
        ticker = setInterval(() => {
          duration.textContent = humanDuration(d.elapsed_ms + performance.now() - since);
        }, 1000);
      }
    }
    const error = document.getElementById("run-error");
    if (error) {
      error.textContent = d.error || "";
      error.hidden = !d.error;
    }
    if (d.final) {
      const cancel = document.getElementById("cancel-form");
      if (cancel) cancel.remove();
      refreshGantt();
    }
  };
  source.addEventListener("task", (e) => {
    const d = JSON.parse(e.data);
    // A try started or ended (or moved on): its bar changed.
    refreshGantt();
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
  source.addEventListener("run", (e) => showRun(JSON.parse(e.data)));
  source.addEventListener("end", () => {
    main.setAttribute("data-live-ended", "");
    source.close();
  });
}

function liveWorkflow(main, source) {
  const workflowId = main.getAttribute("data-workflow");
  const dag = main.querySelector("svg.dag");
  // Events that arrive while the runs section is being fetched are applied again to the new
  // section: the server sends only changes, so the last one for each square is the newest.
  let replay = [];
  const applyCell = (d) => {
    setState(main.querySelector('[data-cell="' + CSS.escape(d.run_id + "|" + d.task_id) + '"]'), d.state, d.symbol);
    if (dag && dag.getAttribute("data-run") === d.run_id) {
      const node = dag.querySelector('[data-node="' + CSS.escape(d.task_id) + '"]');
      if (node) {
        setState(node, d.state, d.symbol);
        const label = node.querySelector("[data-label]");
        if (label) label.textContent = d.state.replace(/_/g, " ");
      }
    }
  };
  const applyRun = (d) => {
    const head = main.querySelector('[data-run-head="' + CSS.escape(d.run_id) + '"]');
    setState(head, d.state, d.symbol);
    return head !== null;
  };
  const refreshRuns = sectionFetcher(
    () => {
      const selected = dag ? dag.getAttribute("data-run") : null;
      const query = selected ? "?run=" + encodeURIComponent(selected) : "";
      return "/workflows/" + encodeURIComponent(workflowId) + "/runs" + query;
    },
    () => {
      replay = [];
    },
    (doc) => {
      const events = replay;
      replay = [];
      if (!swapSection(doc, "runs")) return;
      for (const [kind, d] of events) {
        if (kind === "cell") applyCell(d);
        else applyRun(d);
      }
    },
  );
  const newRun = () => {
    // Only the newest page (no cursor) takes new runs; older pages keep their runs.
    if (document.querySelector("#runs[data-newest]")) refreshRuns();
  };
  source.addEventListener("cell", (e) => {
    const d = JSON.parse(e.data);
    if (refreshRuns.busy()) replay.push(["cell", d]);
    applyCell(d);
  });
  source.addEventListener("run", (e) => {
    const d = JSON.parse(e.data);
    if (refreshRuns.busy()) replay.push(["run", d]);
    if (!applyRun(d)) newRun();
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
