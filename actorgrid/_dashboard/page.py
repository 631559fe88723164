"""The dashboard page: one static HTML document with inline CSS and JS, no build step, no
external resources (clusters often run with no internet access).

The page takes its token from its own URL (``?token=``), opens the WebSocket feed ``/ws``
with it, and renders what arrives: ``snapshot`` messages (tables and each worker's recent log lines), ``event`` messages (the
stream), ``result`` messages (the answer to an action it sent). Every value is inserted as
text, never as HTML. It reconnects by itself when the feed drops.
"""

from __future__ import annotations

__all__ = ["PAGE"]

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>actorgrid dashboard</title>
<style>
body { font: 13px/1.4 system-ui, sans-serif; margin: 0; background: #f6f7f9; color: #222; }
header { background: #1f2937; color: #fff; padding: 8px 16px; display: flex; gap: 16px;
         align-items: center; }
header h1 { font-size: 16px; margin: 0; }
#conn { padding: 2px 8px; border-radius: 8px; background: #b91c1c; }
#conn.live { background: #15803d; }
main { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; padding: 12px; }
section { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 8px;
          overflow: auto; max-height: 420px; }
section.wide { grid-column: 1 / 3; }
h2 { font-size: 14px; margin: 0 0 6px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 2px 6px; border-bottom: 1px solid #eee;
         white-space: nowrap; }
td.mono, li { font-family: ui-monospace, monospace; }
button { font-size: 11px; margin-right: 2px; cursor: pointer; }
ul { list-style: none; margin: 0; padding: 0; }
li { border-bottom: 1px solid #eee; padding: 1px 0; white-space: pre-wrap; }
pre { margin: 2px 0 8px; background: #fef2f2; padding: 4px; white-space: pre-wrap; }
#result { font-family: ui-monospace, monospace; }
h3 { font-size: 12px; margin: 4px 0 0; }
pre.log { background: #f3f4f6; font-size: 12px; }
</style>
</head>
<body>
<header><h1>actorgrid</h1><span id="conn">connecting</span>
<span id="summary"></span><span id="result"></span></header>
<main>
<section class="wide"><h2>Nodes</h2><table id="nodes"><thead><tr><th>node</th><th>host</th>
<th>state</th><th>CPU %</th><th>memory %</th><th>memory free</th><th>resources</th>
<th>last pulse</th><th></th></tr></thead><tbody></tbody></table></section>
<section><h2>Workers</h2><table id="workers"><thead><tr><th>worker</th><th>node</th>
<th>pid</th><th>address</th><th>state</th><th>running</th><th>queued</th><th></th></tr>
</thead><tbody></tbody></table></section>
<section><h2>Actors</h2><table id="actors"><thead><tr><th>actor</th><th>name</th>
<th>class</th><th>kind</th><th>state</th><th>restarts</th><th>mailbox</th><th>worker</th>
<th></th></tr></thead><tbody></tbody></table></section>
<section><h2>Tasks</h2><table id="tasks"><thead><tr><th>task</th><th>function</th>
<th>kind</th><th>state</th><th>worker</th><th></th></tr></thead><tbody></tbody></table>
</section>
<section><h2>Recent failures</h2><div id="failures"></div></section>
<section class="wide"><h2>Events</h2><ul id="events"></ul></section>
<section class="wide"><h2>Worker logs</h2><div id="logs"></div></section>
</main>
<script>
"use strict";
const token = new URLSearchParams(location.search).get("token") || "";
const short = (hex) => (hex || "").slice(0, 8);
let socket = null, nextId = 1, workerNode = {};

function cell(row, text, mono) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "" : String(text);
  if (mono) td.className = "mono";
  row.appendChild(td);
  return td;
}
function button(td, label, action, target) {
  const b = document.createElement("button");
  b.textContent = label;
  b.dataset.action = action;
  b.dataset.target = target;
  b.className = action;
  b.addEventListener("click", () => act(action, target));
  td.appendChild(b);
}
function fill(id, items, render) {
  const body = document.querySelector("#" + id + " tbody");
  const rows = items.map((item) => {
    const tr = document.createElement("tr");
    render(tr, item);
    return tr;
  });
  body.replaceChildren(...rows);
}
function mb(bytes) { return bytes === undefined ? "" : (bytes / 1048576).toFixed(0) + " MiB"; }

function snapshot(s) {
  workerNode = {};
  s.workers.forEach((w) => { workerNode[w.worker.worker_id] = w.worker.node_id; });
  fill("nodes", s.nodes, (tr, n) => {
    const a = n.availability || {};
    tr.dataset.id = n.node.node_id;
    cell(tr, short(n.node.node_id), true); cell(tr, n.node.hostname); cell(tr, n.state);
    cell(tr, a.cpu_percent); cell(tr, a.memory_percent); cell(tr, mb(a.memory_available));
    cell(tr, (n.node.resources || []).map((r) => r[0] + "=" + r[1]).join(" "));
    cell(tr, n.last_pulse_s.toFixed(1) + " s ago");
    const td = cell(tr, "");
    button(td, "suspend", "suspend_node", n.node.node_id);
    button(td, "resume", "resume_node", n.node.node_id);
  });
  fill("workers", s.workers, (tr, w) => {
    tr.dataset.id = w.worker.worker_id;
    cell(tr, short(w.worker.worker_id), true); cell(tr, short(w.worker.node_id), true);
    cell(tr, w.worker.pid); cell(tr, w.worker.address); cell(tr, w.state);
    cell(tr, w.running); cell(tr, w.queued);
    const td = cell(tr, "");
    button(td, "restart", "restart_worker", w.worker.worker_id);
    button(td, "close", "close_worker", w.worker.worker_id);
  });
  fill("actors", s.actors, (tr, a) => {
    tr.dataset.id = a.actor_id;
    cell(tr, short(a.actor_id), true); cell(tr, a.name); cell(tr, a.label); cell(tr, a.kind);
    cell(tr, a.state); cell(tr, a.restarts); cell(tr, a.mailbox_depth);
    cell(tr, short(a.worker_id), true);
    button(cell(tr, ""), "kill", "kill_actor", a.actor_id);
  });
  fill("tasks", s.tasks, (tr, t) => {
    tr.dataset.id = t.task_id;
    cell(tr, short(t.task_id), true); cell(tr, t.label); cell(tr, t.kind); cell(tr, t.state);
    cell(tr, short(t.worker_id), true);
    button(cell(tr, ""), "cancel", "cancel_task", t.task_id);
  });
  const failures = document.getElementById("failures");
  failures.replaceChildren(...s.failures.slice().reverse().map((f) => {
    const pre = document.createElement("pre");
    pre.textContent = describe(f) + "\\n" + [f.error, f.detail].filter(Boolean).join("\\n");
    return pre;
  }));
  const logs = document.getElementById("logs");
  logs.replaceChildren(...Object.entries(s.logs || {}).map(([wid, lines]) => {
    const div = document.createElement("div");
    div.dataset.worker = wid;
    const h = document.createElement("h3");
    h.textContent = "worker " + short(wid) + " (node " + short(workerNode[wid]) + ")";
    const pre = document.createElement("pre");
    pre.className = "log";
    pre.textContent = lines.join("\\n");
    div.append(h, pre);
    return div;
  }));
  document.getElementById("summary").textContent =
    s.nodes.length + " nodes, " + s.workers.length + " workers, " + s.actors.length +
    " actors, " + s.tasks.length + " tasks";
}

function describe(e) {
  const when = new Date(e.time * 1000).toISOString().slice(11, 23);
  const parts = [when, e.kind];
  const node = e.node_id || workerNode[e.worker_id];
  if (node) parts.push("node=" + short(node));
  if (e.worker_id) parts.push("worker=" + short(e.worker_id));
  for (const [key, value] of Object.entries(e)) {
    if (["kind", "time", "node_id", "worker_id", "detail", "error"].includes(key)) continue;
    parts.push(key + "=" + (typeof value === "object" ? JSON.stringify(value) : value));
  }
  if (e.detail && e.kind !== "task_failed") parts.push("\\u2014 " + e.detail);  // a traceback
  return parts.join(" ");
}

function addEvent(e) {
  const list = document.getElementById("events");
  const li = document.createElement("li");
  li.dataset.kind = e.kind;
  li.textContent = describe(e);
  list.prepend(li);
  while (list.children.length > 500) list.lastChild.remove();
}

function act(action, target) {
  if (socket && socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify({id: nextId++, action: action, target: target}));
    document.getElementById("result").textContent = action + " " + short(target) + "\\u2026";
  }
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  socket = new WebSocket(scheme + location.host + "/ws?token=" + encodeURIComponent(token));
  const conn = document.getElementById("conn");
  socket.onopen = () => { conn.textContent = "live"; conn.className = "live"; };
  socket.onclose = () => {
    conn.textContent = "disconnected"; conn.className = "";
    setTimeout(connect, 1000);
  };
  socket.onmessage = (message) => {
    const data = JSON.parse(message.data);
    if (data.type === "snapshot") snapshot(data);
    else if (data.type === "event") addEvent(data.event);
    else if (data.type === "events") data.events.forEach(addEvent);
    else if (data.type === "result")
      document.getElementById("result").textContent = data.message;
  };
}
connect();
</script>
</body>
</html>
"""
