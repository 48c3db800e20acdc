// The overview's active runs, live: server-sent events from /events/runs (a watch of TestRuns made with the
// viewer's own rights). The server pushes a snapshot, then every change; the page never polls.
"use strict";

(() => {
  const table = document.getElementById("active-runs");
  if (!table || !window.EventSource) {
    return;
  }
  const body = table.tBodies[0];
  const state = document.getElementById("live-state");
  const refused = document.getElementById("live-refused");

  function link(href, text) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    return a;
  }

  function cell(row, content) {
    const td = row.insertCell();
    if (typeof content === "string") {
      td.textContent = content;
    } else {
      td.appendChild(content);
    }
    return td;
  }

  function rowOf(run) {
    const tr = document.createElement("tr");
    tr.dataset.run = `${run.namespace}/${run.name}`;
    tr.dataset.started = run.started;
    cell(tr, run.namespace);
    cell(tr, link(`/runs/${encodeURIComponent(run.namespace)}/${encodeURIComponent(run.name)}`, run.name));
    cell(tr, run.workflow ? `workflow ${run.scenario}`
      : link(`/scenarios/${encodeURIComponent(run.scenarioNamespace)}/${encodeURIComponent(run.scenario)}`, run.scenario));
    const phase = document.createElement("span");
    phase.className = `phase phase-${run.phase.toLowerCase()}`;
    phase.textContent = run.phase;
    cell(tr, phase);
    cell(tr, String(run.step));
    const time = document.createElement("time");
    time.dateTime = run.started;
    time.textContent = run.started;
    cell(tr, time);
    return tr;
  }

  function showEmpty() {
    if (body.rows.length === 0) {
      const tr = body.insertRow();
      tr.className = "empty";
      const td = tr.insertCell();
      td.colSpan = 6;
      td.textContent = "No active runs.";
    }
  }

  function dropEmpty() {
    for (const tr of Array.from(body.querySelectorAll("tr.empty"))) {
      tr.remove();
    }
  }

  function put(run) {
    dropEmpty();
    const fresh = rowOf(run);
    const known = Array.from(body.rows).find((tr) => tr.dataset.run === fresh.dataset.run);
    if (known) {
      known.replaceWith(fresh);
      return;
    }
    // Newest first, as the server renders it.
    const after = Array.from(body.rows).find((tr) => (tr.dataset.started || "") < run.started);
    body.insertBefore(fresh, after || null);
  }

  function remove(run) {
    const key = `${run.namespace}/${run.name}`;
    for (const tr of Array.from(body.rows)) {
      if (tr.dataset.run === key) {
        tr.remove();
      }
    }
    showEmpty();
  }

  const source = new EventSource("/events/runs");
  source.addEventListener("open", () => { state.hidden = false; });
  source.addEventListener("error", () => { state.hidden = true; });
  source.addEventListener("snapshot", (event) => {
    const runs = JSON.parse(event.data);
    body.replaceChildren(...runs.map(rowOf));
    showEmpty();
    table.dataset.live = "true";
  });
  source.addEventListener("run", (event) => {
    const change = JSON.parse(event.data);
    if (change.active) {
      put(change.run);
    } else {
      remove(change.run);
    }
  });
  source.addEventListener("refused", (event) => {
    refused.textContent = `The API server refused to watch TestRuns: ${JSON.parse(event.data).message}`;
    refused.hidden = false;
    source.close();
  });
})();
