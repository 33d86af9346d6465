// Sluice UI: the only script. It keeps relative times current (the absolute time, in UTC and
// the reader's zone, is in the title), drives the log viewers, zooms and pans large graphs,
// and keeps run and workflow pages live over server-sent events. No inline script anywhere:
// the page's Content-Security-Policy allows only this file. Data from the server is inserted
// as text; whole sections are only ever swapped for the server's own escaped rendering.
"use strict";

// The server's `times::relative`: "just now", "42 s ago", "in 47 min", "3 h ago", "2 d ago",
// then the date.
function relativeTime(at, now) {
  const seconds = Math.round((now - at) / 1000);
  const s = Math.abs(seconds);
  let amount;
  if (s < 10) return "just now";
  else if (s < 60) amount = s + " s";
  else if (s < 3600) amount = Math.floor(s / 60) + " min";
  else if (s < 86400) amount = Math.floor(s / 3600) + " h";
  else if (s < 2592000) amount = Math.floor(s / 86400) + " d";
  else return at.toISOString().slice(0, 10);
  return seconds >= 0 ? amount + " ago" : "in " + amount;
}

function absoluteUtc(at) {
  return at.toISOString().slice(0, 19).replace("T", " ") + " UTC";
}

function localTime(el) {
  const at = new Date(el.getAttribute("datetime"));
  if (isNaN(at)) return;
  el.textContent = relativeTime(at, Date.now());
  const local = at.toLocaleString(undefined, { timeZoneName: "short" });
  el.title = absoluteUtc(at) + (local.endsWith("UTC") ? "" : " · " + local);
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

// Colours a task's node in a graph and says its state.
function setNode(dag, taskId, state, symbol) {
  const node = dag && dag.querySelector('[data-node="' + CSS.escape(taskId) + '"]');
  if (!node) return;
  setState(node, state, symbol);
  const label = node.querySelector("[data-label]");
  if (label) label.textContent = state.replace(/_/g, " ");
}

function tryBlock(section, tryNumber) {
  let details = section.querySelector('details[data-try="' + tryNumber + '"]');
  if (details) return details;
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
  details.append(summary);
  for (const older of section.querySelectorAll("details[data-try]")) older.open = false;
  // A task that had not run yet: its tries appear where the note said so.
  const tries = section.querySelector("[data-tries]");
  tries.hidden = false;
  const note = section.querySelector(".not-run");
  if (note) note.remove();
  const body = tries.closest("details.task-body");
  if (body) body.open = true;
  tries.append(details);
  return details;
}

// The same markup as the `log_viewer` macro, for a try whose first line arrives live.
function logViewer(section, details, tryNumber) {
  const found = details.querySelector("pre.log");
  if (found) return found;
  const taskId = section.getAttribute("data-task");
  const runId = document.querySelector("main").getAttribute("data-run");
  const raw = "/runs/" + encodeURIComponent(runId) + "/tasks/" + encodeURIComponent(taskId) + "/log.txt?try=" + tryNumber;
  const viewer = document.createElement("div");
  viewer.className = "log-viewer";
  viewer.setAttribute("data-log-viewer", "");
  const tools = document.createElement("div");
  tools.className = "log-tools";
  const search = document.createElement("input");
  search.type = "search";
  search.className = "log-search";
  search.placeholder = "Search the log";
  search.setAttribute("aria-label", "Search the log of " + taskId + ", try " + tryNumber);
  search.setAttribute("data-log-search", "");
  const matches = document.createElement("span");
  matches.className = "muted log-matches";
  matches.setAttribute("data-log-matches", "");
  const follow = document.createElement("label");
  follow.className = "check";
  const box = document.createElement("input");
  box.type = "checkbox";
  box.checked = true;
  box.setAttribute("data-log-follow", "");
  follow.append(box, " Follow");
  const end = document.createElement("button");
  end.type = "button";
  end.textContent = "Jump to end";
  end.setAttribute("data-log-end", "");
  const rawLink = document.createElement("a");
  rawLink.href = raw;
  rawLink.textContent = "Raw";
  const download = document.createElement("a");
  download.href = raw + "&download=true";
  download.setAttribute("download", "");
  download.textContent = "Download";
  const zone = document.createElement("span");
  zone.className = "muted";
  zone.textContent = "Times in UTC";
  tools.append(search, " ", matches, " ", follow, " ", end, " ", rawLink, " ", download, " ", zone);
  const log = document.createElement("pre");
  log.className = "log";
  log.tabIndex = 0;
  log.setAttribute("data-log", taskId + "|" + tryNumber);
  viewer.append(tools, log);
  details.append(viewer);
  return log;
}

// Shows only the lines of a log that contain the search text (case-insensitive).
function searchLog(viewer) {
  const input = viewer.querySelector("[data-log-search]");
  const log = viewer.querySelector("pre.log");
  const wanted = input.value.trim().toLowerCase();
  let shown = 0;
  for (const line of log.children) {
    const hit = !wanted || line.textContent.toLowerCase().includes(wanted);
    line.hidden = !hit;
    if (hit) shown++;
  }
  const matches = viewer.querySelector("[data-log-matches]");
  if (matches) matches.textContent = wanted ? shown + (shown === 1 ? " line" : " lines") : "";
}

function logViewers() {
  document.addEventListener("input", (e) => {
    const viewer = e.target.closest && e.target.closest("[data-log-viewer]");
    if (viewer && e.target.hasAttribute("data-log-search")) searchLog(viewer);
  });
  document.addEventListener("click", (e) => {
    const button = e.target.closest && e.target.closest("[data-log-end]");
    if (!button) return;
    const log = button.closest("[data-log-viewer]").querySelector("pre.log");
    log.scrollTop = log.scrollHeight;
    log.scrollIntoView({ block: "end" });
    log.focus({ preventScroll: true });
  });
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
    if (started) {
      started.replaceChildren(timeElement(d.started_at));
      // A run that has not started shows no start time at all.
      started.hidden = !d.started_at;
      const label = document.querySelector("[data-started-label]");
      if (label) label.hidden = !d.started_at;
    }
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
    setNode(main.querySelector("svg.dag"), d.task_id, d.state, d.symbol);
    const section = main.querySelector('section[data-task="' + CSS.escape(d.task_id) + '"]');
    if (!section) return;
    setState(section.querySelector("[data-task-state] [data-badge]"), d.state, d.symbol);
    setState(tryBlock(section, d.try_number).querySelector("summary [data-badge]"), d.state, d.symbol);
  });
  source.addEventListener("log", (e) => {
    const d = JSON.parse(e.data);
    const section = main.querySelector('section[data-task="' + CSS.escape(d.task_id) + '"]');
    if (!section) return;
    const log = logViewer(section, tryBlock(section, d.try_number), d.try_number);
    const viewer = log.closest("[data-log-viewer]");
    const last = log.lastElementChild;
    const line = document.createElement("span");
    line.className = d.stream;
    line.setAttribute("data-n", last ? Number(last.getAttribute("data-n")) + 1 : 1);
    const ts = document.createElement("span");
    ts.className = "ts";
    ts.textContent = d.at || "";
    line.append(ts, d.line + "\n");
    const search = viewer.querySelector("[data-log-search]");
    const wanted = search ? search.value.trim().toLowerCase() : "";
    if (wanted && !line.textContent.toLowerCase().includes(wanted)) line.hidden = true;
    const follow = viewer.querySelector("[data-log-follow]");
    log.append(line);
    if (follow && follow.checked) log.scrollTop = log.scrollHeight;
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
    if (dag && dag.getAttribute("data-run") === d.run_id) setNode(dag, d.task_id, d.state, d.symbol);
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

// A graph of 10 tasks or more fits its column; the buttons zoom it and dragging pans it.
function zoomableGraphs() {
  for (const frame of document.querySelectorAll("[data-dag-frame][data-zoomable]")) {
    const svg = frame.querySelector("svg.dag");
    if (!svg) continue;
    const [, , width, height] = svg.getAttribute("viewBox").split(" ").map(Number);
    let view = { x: 0, y: 0, w: width, h: height };
    const apply = () => svg.setAttribute("viewBox", [view.x, view.y, view.w, view.h].join(" "));
    const zoom = (factor) => {
      const w = Math.min(width, Math.max(width / 8, view.w * factor));
      const h = w * (height / width);
      view = { x: view.x + (view.w - w) / 2, y: view.y + (view.h - h) / 2, w, h };
      apply();
    };
    const tools = document.createElement("div");
    tools.className = "dag-tools";
    for (const [label, title, act] of [["+", "Zoom in", () => zoom(0.7)], ["−", "Zoom out", () => zoom(1 / 0.7)],
      ["Fit", "Show the whole graph", () => { view = { x: 0, y: 0, w: width, h: height }; apply(); }]]) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = label;
      b.title = title;
      b.setAttribute("aria-label", title);
      b.addEventListener("click", act);
      tools.append(b);
    }
    frame.prepend(tools);
    frame.classList.add("zooming");
    let drag = null;
    svg.addEventListener("pointerdown", (e) => {
      if (e.target.closest("a")) return;
      drag = { x: e.clientX, y: e.clientY, view: { ...view } };
      svg.setPointerCapture(e.pointerId);
    });
    svg.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const scale = view.w / svg.clientWidth;
      view = { ...drag.view, x: drag.view.x - (e.clientX - drag.x) * scale, y: drag.view.y - (e.clientY - drag.y) * scale };
      apply();
    });
    svg.addEventListener("pointerup", () => { drag = null; });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  // Relative times age: refresh them twice a minute.
  setInterval(() => localTimes(document), 30000);
  logViewers();
  zoomableGraphs();
  const main = document.querySelector("main[data-live]");
  if (!main || !window.EventSource) return;
  const source = new EventSource(main.getAttribute("data-live"));
  if (main.getAttribute("data-kind") === "run") liveRun(main, source);
  else liveWorkflow(main, source);
});
