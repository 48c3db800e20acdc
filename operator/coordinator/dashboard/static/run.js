// Test Coordinator dashboard: a run's timeline (or a workflow run's DAG) drawn as SVG from the model the server
// embeds in the page, redrawn on every model the run's event stream pushes (server-sent events fed by a watch).
// Nothing here asks the server again: open spans grow with the local clock until the next model arrives.
"use strict";

(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const root = document.getElementById("run");
  const embedded = document.getElementById("run-model");
  if (!root || !embedded) {
    return;
  }
  let model = JSON.parse(embedded.textContent || "null");
  let skew = 0; // server clock minus local clock, from the last model

  function el(tag, attrs, parent) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) {
        node.setAttribute(key, String(value));
      }
    }
    if (parent) {
      parent.appendChild(node);
    }
    return node;
  }

  function text(parent, x, y, content, cls) {
    const node = el("text", { x: x, y: y, class: cls || "" }, parent);
    node.textContent = content;
    return node;
  }

  function tooltip(node, content) {
    const title = el("title", {}, node);
    title.textContent = content;
  }

  function slug(value) {
    return String(value || "").toLowerCase();
  }

  function clockNow() {
    return Date.now() + skew;
  }

  function seconds(ms) {
    const s = Math.round(ms / 1000);
    return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s` : `${s}s`;
  }

  function tickStep(spanMs) {
    const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400];
    for (const s of steps) {
      if (spanMs / (s * 1000) <= 8) {
        return s * 1000;
      }
    }
    return 86400000;
  }

  // --- the timeline --------------------------------------------------------------------------------------

  function drawTimeline(m) {
    const box = document.getElementById("timeline");
    if (!box) {
      return;
    }
    const width = Math.max(box.clientWidth || 320, 300);
    const labelW = width < 600 ? 96 : 180;
    const plotW = width - labelW - 12;
    const rowH = 22;
    const axisH = 22;
    const now = m.run.active ? Math.max(clockNow(), m.end) : m.end;
    const begin = m.begin;
    const end = m.run.active ? now : m.end;
    const span = Math.max(end - begin, 1000);
    const x = (t) => labelW + ((t - begin) / span) * plotW;

    const rows = [];
    rows.push({ heading: "Steps" });
    for (const step of m.steps) {
      rows.push({ kind: "step", item: step, label: step.name });
    }
    rows.push({ heading: "Changes, one row per target" });
    if (!m.targets.length) {
      rows.push({ empty: "no change made yet" });
    }
    for (const target of m.targets) {
      rows.push({ kind: "target", item: target, label: target.key });
    }
    if (m.probes.length) {
      rows.push({ heading: "Probes" });
    }
    for (const probe of m.probes) {
      rows.push({ kind: "probe", item: probe, label: probe.name });
    }
    const height = axisH + rows.length * rowH + 6;
    const svg = el("svg", {
      xmlns: SVG,
      viewBox: `0 0 ${width} ${height}`,
      width: width,
      height: height,
      class: "timeline",
      "data-begin": begin,
      "data-end": end,
    });

    // The axis: seconds since the first thing the run did.
    const tick = tickStep(span);
    for (let t = 0; t <= span; t += tick) {
      el("line", { x1: x(begin + t), x2: x(begin + t), y1: axisH - 4, y2: height, class: "grid" }, svg);
      text(svg, x(begin + t) + 2, 14, `+${seconds(t)}`, "tick");
    }

    // The recovery intervals, behind everything: injection to injection + recovery time.
    for (const step of m.steps) {
      if (step.start !== null && step.recoveryEnd !== null) {
        const band = el(
          "rect",
          {
            x: x(step.start),
            y: axisH,
            width: Math.max(x(step.recoveryEnd) - x(step.start), 2),
            height: height - axisH,
            class: "recovery",
            "data-recovery-step": step.name,
          },
          svg,
        );
        tooltip(band, `${step.name}: recovered in ${step.recoverySeconds} s`);
      }
    }

    rows.forEach((row, i) => {
      const top = axisH + i * rowH;
      const mid = top + rowH / 2;
      if (row.heading) {
        text(svg, 4, mid + 4, row.heading, "section");
        return;
      }
      if (row.empty) {
        text(svg, labelW, mid + 4, row.empty, "muted");
        return;
      }
      const label = text(svg, 4, mid + 4, row.label.length > 28 ? `…${row.label.slice(-27)}` : row.label, "label");
      tooltip(label, row.label);
      if (row.kind === "step") {
        const step = row.item;
        if (step.start !== null) {
          const stop = step.reverted || !m.run.active ? (step.end ?? now) : Math.min(step.end ?? now, now);
          const bar = el(
            "rect",
            {
              x: x(step.start),
              y: top + 4,
              width: Math.max(x(stop) - x(step.start), 2),
              height: rowH - 8,
              rx: 3,
              class: `step outcome-${slug(step.outcome)}`,
              "data-step": step.name,
              "data-outcome": step.outcome,
            },
            svg,
          );
          tooltip(bar, `${step.name}: ${step.outcome}${step.message ? ` — ${step.message}` : ""}`);
        } else {
          el("rect", { x: labelW, y: top + 4, width: 0, height: 0, "data-step": step.name, "data-outcome": step.outcome }, svg);
        }
      } else if (row.kind === "target") {
        for (const change of row.item.changes) {
          if (change.start === null) {
            // Planned (or failed) before it was applied: a tick at the run's start says so.
            const mark = el(
              "rect",
              {
                x: labelW,
                y: top + 4,
                width: 3,
                height: rowH - 8,
                class: `change state-${slug(change.state)}`,
                "data-injection-id": change.id,
                "data-injection-state": change.state,
                "data-target": row.item.key,
              },
              svg,
            );
            tooltip(mark, `${change.fault} (${change.stepName}): ${change.state} ${change.message}`);
            continue;
          }
          const stop = change.end ?? (m.run.active ? now : end);
          const bar = el(
            "rect",
            {
              x: x(change.start),
              y: top + 3,
              width: Math.max(x(stop) - x(change.start), 3),
              height: rowH - 6,
              rx: 2,
              class: `change state-${slug(change.state)}${change.end === null ? " open" : ""}`,
              "data-injection-id": change.id,
              "data-injection-state": change.state,
              "data-target": row.item.key,
            },
            svg,
          );
          tooltip(
            bar,
            `${change.fault} on ${row.item.key} (${change.stepName}): ${change.state}` +
              (change.message ? ` — ${change.message}` : ""),
          );
        }
      } else if (row.kind === "probe") {
        const probe = row.item;
        for (const mark of probe.marks) {
          el(
            "rect",
            {
              x: x(mark.at) - 1.5,
              y: top + 4,
              width: 3,
              height: rowH - 8,
              class: mark.ok ? "sample ok" : "sample bad",
              "data-probe": probe.name,
              "data-ok": mark.ok ? "true" : "false",
            },
            svg,
          );
        }
        tooltip(label, `${probe.name} (${probe.type}, ${probe.mode}): ${probe.passed}/${probe.samples} passed`);
      }
    });

    if (m.run.active) {
      el("line", { x1: x(now), x2: x(now), y1: axisH - 4, y2: height, class: "now" }, svg);
    }
    box.replaceChildren(svg);
  }

  // --- the DAG of a workflow run --------------------------------------------------------------------------

  function drawDag(m) {
    const box = document.getElementById("dag");
    if (!box || !m.nodes.length) {
      return;
    }
    const nodeW = 160;
    const nodeH = 46;
    const gapX = 48;
    const gapY = 14;
    const columns = new Map();
    for (const node of m.nodes) {
      if (!columns.has(node.depth)) {
        columns.set(node.depth, []);
      }
      columns.get(node.depth).push(node);
    }
    const depth = Math.max(...m.nodes.map((n) => n.depth)) + 1;
    const tallest = Math.max(...[...columns.values()].map((c) => c.length));
    const width = depth * nodeW + (depth - 1) * gapX + 8;
    const height = tallest * nodeH + (tallest - 1) * gapY + 8;
    const place = new Map();
    for (const [d, nodes] of columns) {
      nodes.forEach((node, i) => place.set(node.name, { x: 4 + d * (nodeW + gapX), y: 4 + i * (nodeH + gapY) }));
    }
    const svg = el("svg", { xmlns: SVG, viewBox: `0 0 ${width} ${height}`, class: "dag", width: width });
    for (const [from, to] of m.edges) {
      const a = place.get(from);
      const b = place.get(to);
      if (!a || !b) {
        continue;
      }
      const x1 = a.x + nodeW;
      const y1 = a.y + nodeH / 2;
      const x2 = b.x;
      const y2 = b.y + nodeH / 2;
      const mid = (x1 + x2) / 2;
      el("path", { d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`, class: "edge", "data-edge": `${from}->${to}` }, svg);
    }
    for (const node of m.nodes) {
      const at = place.get(node.name);
      const parent = node.testRun
        ? el("a", { href: `/runs/${encodeURIComponent(m.run.namespace)}/${encodeURIComponent(node.testRun)}` }, svg)
        : svg;
      const group = el(
        "g",
        { class: `node phase-${slug(node.phase)}`, "data-node": node.name, "data-phase": node.phase, "data-depth": node.depth },
        parent,
      );
      el("rect", { x: at.x, y: at.y, width: nodeW, height: nodeH, rx: 6 }, group);
      text(group, at.x + 8, at.y + 18, node.name.length > 20 ? `${node.name.slice(0, 19)}…` : node.name, "name");
      text(group, at.x + 8, at.y + 36, node.kind === "suspend" ? `${node.phase} · gate` : node.phase, "node-phase");
      tooltip(group, `${node.name}: ${node.phase}${node.reason ? ` (${node.reason})` : ""}${node.message ? ` — ${node.message}` : ""}`);
    }
    box.replaceChildren(svg);
  }

  // --- the verdict, the assertions, the header --------------------------------------------------------------

  function drawFacts(m) {
    const v = m.verdict;
    const fields = {
      phase: v.phase,
      reason: v.reason,
      message: v.message,
      score: v.score ?? "",
      recovery: v.recoverySeconds === null || v.recoverySeconds === undefined ? "" : `${v.recoverySeconds} s`,
      duration: v.duration,
    };
    for (const [key, value] of Object.entries(fields)) {
      const dd = document.querySelector(`#verdict [data-field="${key}"]`);
      if (dd) {
        dd.textContent = String(value);
      }
    }
    const badge = document.getElementById("run-phase");
    if (badge) {
      badge.textContent = v.phase;
      badge.className = `phase phase-${slug(v.phase)}`;
    }
    const body = document.querySelector("#assertions tbody");
    if (body) {
      const rows = m.assertions.map((a) => {
        const tr = document.createElement("tr");
        tr.setAttribute("data-assertion", a.name);
        tr.setAttribute("data-passed", a.passed ? "true" : "false");
        for (const value of [a.name, a.type, a.expected, a.actual ?? ""]) {
          const td = document.createElement("td");
          td.textContent = String(value);
          tr.appendChild(td);
        }
        const held = document.createElement("td");
        const badge = document.createElement("span");
        badge.className = a.passed ? "phase phase-passed" : "phase phase-failed";
        badge.textContent = a.passed ? "yes" : "no";
        held.appendChild(badge);
        if (a.message) {
          const note = document.createElement("span");
          note.className = "muted";
          note.textContent = ` ${a.message}`;
          held.appendChild(note);
        }
        tr.appendChild(held);
        return tr;
      });
      if (!rows.length) {
        const tr = document.createElement("tr");
        tr.className = "empty";
        const td = document.createElement("td");
        td.colSpan = 5;
        td.textContent = "No assertions judged yet.";
        tr.appendChild(td);
        rows.push(tr);
      }
      body.replaceChildren(...rows);
    }
    const form = document.getElementById("abort-form");
    if (form) {
      form.hidden = !m.run.active || m.run.source === "history";
      const button = document.getElementById("abort");
      if (button && m.run.abortRequested) {
        button.disabled = true;
        button.textContent = "Abort requested";
      }
    }
    document.getElementById("dag-section").hidden = !m.nodes.length;
    document.getElementById("timeline-section").hidden = m.nodes.length > 0;
  }

  function draw(m) {
    if (!m) {
      return;
    }
    drawFacts(m);
    if (m.nodes.length) {
      drawDag(m);
    } else {
      drawTimeline(m);
    }
  }

  function apply(m) {
    model = m;
    skew = m.now - Date.now();
    draw(m);
    // What the tests and the latency benchmark wait for: the version this page shows, and when it showed it.
    root.dataset.updates = String(Number(root.dataset.updates || "0") + 1);
    root.dataset.resourceVersion = m.run.resourceVersion;
    root.dataset.phase = m.verdict.phase;
    root.dataset.appliedAt = String(performance.timeOrigin + performance.now());
  }

  function say(state) {
    const live = document.getElementById("live");
    if (live) {
      live.hidden = false;
      live.dataset.state = state;
      live.textContent = state === "open" ? "live" : state;
    }
  }

  draw(model);
  if (model) {
    root.dataset.resourceVersion = model.run.resourceVersion;
    root.dataset.phase = model.verdict.phase;
  }
  window.addEventListener("resize", () => draw(model));
  // Open spans grow with the clock between models; this redraws locally, it asks the server nothing.
  window.setInterval(() => {
    if (model && model.run.active && !model.nodes.length && !document.hidden) {
      drawTimeline(model);
    }
  }, 1000);

  if (model && model.run.source !== "history" && window.EventSource) {
    const events = new EventSource(root.dataset.events);
    events.addEventListener("open", () => say("open"));
    events.addEventListener("error", () => say("reconnecting"));
    events.addEventListener("model", (event) => apply(JSON.parse(event.data)));
    events.addEventListener("gone", () => {
      say("gone");
      events.close();
    });
    events.addEventListener("refused", (event) => {
      const data = JSON.parse(event.data);
      say(`refused: ${data.message}`);
      events.close();
    });
  }
})();
