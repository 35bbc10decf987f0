// lmgym report: draws the run embedded in #lmgym-data (see lmgym/eval/report.py).
// No library and no network. Model text only ever goes through textContent.
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("lmgym-data").textContent);
  const PAGE_SIZE = 100;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#4c8bf5", "#e8710a", "#1a9c4b", "#c23bd4", "#d93025", "#7c6f00"];
  const app = document.getElementById("app");

  // -- small helpers ------------------------------------------------------------------------
  function el(tag, props, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key === "className") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    for (const child of children || []) {
      if (child !== null && child !== undefined && child !== false) node.append(child); // strings become Text nodes
    }
    return node;
  }

  function svg(tag, attrs, children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of children || []) if (child) node.append(child);
    return node;
  }

  function fmt(value, digits) {
    if (value === null || value === undefined) return "–";
    if (typeof value !== "number") return String(value);
    if (Number.isInteger(value)) return value.toLocaleString("en-US");
    const size = Math.abs(value);
    if (size !== 0 && (size < 1e-3 || size >= 1e6)) return value.toExponential(2);
    if (size >= 1000) return value.toLocaleString("en-US", { maximumFractionDigits: 1 });
    return value.toFixed(digits === undefined ? 3 : digits);
  }

  function extent(values) { // Math.min(...values) overflows the stack on very long arrays
    return values.reduce(([lo, hi], v) => [Math.min(lo, v), Math.max(hi, v)], [Infinity, -Infinity]);
  }

  function kvTable(pairs) {
    return el("table", { className: "kv" }, [el("tbody", {}, pairs.map(([k, v]) => el("tr", {}, [el("td", { text: k }), el("td", { text: v })])))]);
  }

  function prettyJson(text) {
    try { return JSON.stringify(JSON.parse(text), null, 2); } catch (e) { return text; }
  }

  // -- header, summary ------------------------------------------------------------------------
  function renderHeader() {
    app.append(el("h1", { text: "lmgym report: " + DATA.title }));
    app.append(el("div", { className: "muted", text: DATA.run_dir + " · generated " + DATA.generated_at + " · lmgym " + DATA.lmgym_version }));
    for (const note of DATA.notes) app.append(el("div", { className: "note", text: note }));
  }

  function renderSummary() {
    const s = DATA.summary, meta = DATA.metadata || {}, config = meta.config || {};
    if (!s && !DATA.metadata) return;
    const section = el("section", { id: "summary" }, [el("h2", { text: "Summary" })]);
    const pairs = [];
    for (const key of ["env", "model"]) if (config[key] !== undefined) pairs.push([key, String(config[key])]);
    if (meta.status) pairs.push(["status", meta.status]);
    if (meta.started_at) pairs.push(["started", meta.started_at + (meta.finished_at ? " → " + meta.finished_at : "")]);
    if (typeof meta.wall_time_s === "number") pairs.push(["wall time (s)", fmt(meta.wall_time_s, 1)]);
    if (s) {
      pairs.push(["rollouts (scored)", fmt(s.rollouts) + " (" + fmt(s.scored) + ")"]);
      pairs.push(["reward", fmt(s.reward_mean) + " ± " + fmt(s.reward_std)]);
      for (const [name, value] of Object.entries(s.metrics)) pairs.push(["  " + name, fmt(value)]);
      for (const [k, value] of Object.entries(s.pass_at_k)) pairs.push(["pass@" + k + " (" + (s.pass_metric || "reward") + " ≥ " + fmt(s.pass_threshold, 2) + ")", fmt(value)]);
      pairs.push(["errors", Object.entries(s.errors).map(([k, n]) => k + ": " + n).join(", ") || "none"]);
      pairs.push(["tokens in / out", fmt(s.prompt_tokens) + " / " + fmt(s.completion_tokens)]);
      if (s.cost_usd !== null) pairs.push(["cost (USD)", fmt(s.cost_usd, 4)]);
      pairs.push(["latency p50 / p95 (s)", fmt(s.latency_p50_s, 2) + " / " + fmt(s.latency_p95_s, 2)]);
    }
    section.append(kvTable(pairs));
    if (s && s.tasks) {
      const rows = Object.entries(s.tasks).map(([name, t]) => el("tr", {}, [
        el("td", { text: name }), el("td", { text: fmt(t.rollouts) + " (" + fmt(t.scored) + ")" }),
        el("td", { text: fmt(t.reward_mean) + " ± " + fmt(t.reward_std) }),
        el("td", { text: Object.entries(t.errors).map(([k, n]) => k + ": " + n).join(", ") || "none" }),
      ]));
      section.append(el("h3", { text: "per task" }), el("table", { className: "kv" }, [
        el("thead", {}, [el("tr", {}, ["task", "rollouts (scored)", "reward", "errors"].map((h) => el("td", { text: h })))]),
        el("tbody", {}, rows),
      ]));
    }
    if (DATA.metadata && DATA.metadata.config) {
      section.append(el("details", {}, [el("summary", { text: "config" }), el("pre", { text: JSON.stringify(DATA.metadata.config, null, 2) })]));
    }
    app.append(section);
  }

  // -- charts ---------------------------------------------------------------------------------
  const W = 340, H = 180, M = { left: 44, right: 10, top: 10, bottom: 30 };

  function histogramChart(title, hist, id) {
    const box = el("div", { className: "chart histogram", id: id });
    box.append(el("h3", { text: title }));
    if (!hist.n) { box.append(el("div", { className: "muted", text: "no values" })); return box; }
    const plotW = W - M.left - M.right, plotH = H - M.top - M.bottom;
    const bins = hist.bins, most = Math.max(...bins.map((b) => b.count));
    const width = plotW / bins.length;
    const chart = svg("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img" });
    const label = (b) => (hist.discrete ? fmt(b.lo) : fmt(b.lo) + " – " + fmt(b.hi));
    bins.forEach((b, i) => {
      let h = (b.count / most) * plotH;
      if (b.count > 0) h = Math.max(h, 1);
      const rect = svg("rect", {
        class: "bar", x: M.left + i * width + 1, y: M.top + plotH - h,
        width: Math.max(width - 2, 1), height: h,
      }, [svg("title", { text: label(b) + ": " + b.count.toLocaleString("en-US") })]);
      chart.append(rect);
    });
    const baseY = M.top + plotH;
    chart.append(svg("line", { class: "axis", x1: M.left, x2: W - M.right, y1: baseY, y2: baseY }));
    chart.append(svg("line", { class: "axis", x1: M.left, x2: M.left, y1: M.top, y2: baseY }));
    chart.append(svg("text", { x: M.left - 4, y: M.top + 8, "text-anchor": "end", text: most.toLocaleString("en-US") }));
    chart.append(svg("text", { x: M.left - 4, y: baseY, "text-anchor": "end", text: "0" }));
    if (hist.discrete) {
      const every = Math.ceil(bins.length / 8);
      bins.forEach((b, i) => {
        if (i % every === 0) chart.append(svg("text", { x: M.left + (i + 0.5) * width, y: baseY + 14, "text-anchor": "middle", text: fmt(b.lo) }));
      });
    } else {
      chart.append(svg("text", { x: M.left, y: baseY + 14, "text-anchor": "start", text: fmt(hist.min) }));
      chart.append(svg("text", { x: W - M.right, y: baseY + 14, "text-anchor": "end", text: fmt(hist.max) }));
    }
    box.append(chart);
    box.append(el("div", { className: "muted", text: "n " + hist.n.toLocaleString("en-US") + " · mean " + fmt(hist.mean) + " · min " + fmt(hist.min) + " · max " + fmt(hist.max) }));
    return box;
  }

  function lineChart(title, keys, id) {
    const box = el("div", { className: "chart curve", id: id });
    box.append(el("h3", { text: title }));
    const series = keys.map((k) => DATA.curves.series[k]);
    const points = series.flat().filter((p) => p[1] !== null);
    if (!points.length) { box.append(el("div", { className: "muted", text: "no values" })); return box; }
    let [x0, x1] = extent(series.flat().map((p) => p[0]));
    let [y0, y1] = extent(points.map((p) => p[1]));
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    if (y0 === y1) { const pad = Math.abs(y0) * 0.1 || 1; y0 -= pad; y1 += pad; }
    const plotW = W - M.left - M.right, plotH = H - M.top - M.bottom;
    const sx = (x) => M.left + ((x - x0) / (x1 - x0)) * plotW;
    const sy = (y) => M.top + plotH - ((y - y0) / (y1 - y0)) * plotH;
    const chart = svg("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img" });
    const baseY = M.top + plotH;
    chart.append(svg("line", { class: "axis", x1: M.left, x2: W - M.right, y1: baseY, y2: baseY }));
    chart.append(svg("line", { class: "axis", x1: M.left, x2: M.left, y1: M.top, y2: baseY }));
    chart.append(svg("text", { x: M.left - 4, y: M.top + 8, "text-anchor": "end", text: fmt(y1) }));
    chart.append(svg("text", { x: M.left - 4, y: baseY, "text-anchor": "end", text: fmt(y0) }));
    chart.append(svg("text", { x: M.left, y: baseY + 14, "text-anchor": "start", text: "step " + fmt(x0) }));
    chart.append(svg("text", { x: W - M.right, y: baseY + 14, "text-anchor": "end", text: fmt(x1) }));
    for (const mark of DATA.curves.marks || []) { // where a live-audit finding started
      if (mark.step < x0 || mark.step > x1) continue;
      const x = sx(mark.step);
      chart.append(svg("line", { class: "mark", x1: x, x2: x, y1: M.top, y2: baseY }, [svg("title", { text: "audit: " + mark.check + " from step " + mark.step })]));
    }
    series.forEach((pts, i) => {
      let d = "", pen = "M";
      for (const [x, y] of pts) {
        if (y === null) { pen = "M"; continue; } // a gap where the value was not finite
        d += pen + sx(x).toFixed(1) + " " + sy(y).toFixed(1) + " ";
        pen = "L";
      }
      const color = COLORS[i % COLORS.length];
      chart.append(svg("path", { class: "line", d: d, stroke: color }));
      if (pts.length <= 60) for (const [x, y] of pts) if (y !== null) chart.append(svg("circle", { cx: sx(x), cy: sy(y), r: 2, fill: color }));
    });
    const readout = svg("text", { class: "readout", x: M.left + 4, y: M.top + 10 });
    chart.append(readout);
    chart.addEventListener("mousemove", (event) => {
      const rect = chart.getBoundingClientRect();
      const step = x0 + ((event.clientX - rect.left - M.left) / plotW) * (x1 - x0);
      const parts = series.map((pts, i) => {
        let best = null;
        for (const p of pts) if (best === null || Math.abs(p[0] - step) < Math.abs(best[0] - step)) best = p;
        return best ? "step " + best[0] + " " + keys[i] + " " + fmt(best[1]) : "";
      });
      readout.textContent = parts.filter(Boolean).join(" · ");
    });
    chart.addEventListener("mouseleave", () => { readout.textContent = ""; });
    box.append(chart);
    box.append(el("div", { className: "legend" }, keys.map((k, i) => el("span", { style: "color:" + COLORS[i % COLORS.length], text: "■ " + k }))));
    return box;
  }

  function renderDistributions() {
    const dist = DATA.distributions;
    if (!dist) return;
    const grid = el("div", { className: "grid" }, [histogramChart("reward", dist.reward, "hist-reward")]);
    for (const [name, hist] of Object.entries(dist.metrics)) grid.append(histogramChart(name, hist, "hist-" + name));
    app.append(el("section", { id: "distributions" }, [el("h2", { text: "Reward and metric distributions (scored rollouts)" }), grid]));
  }

  function renderTraining() {
    const c = DATA.curves;
    if (!c && !DATA.config_text) return;
    const section = el("section", { id: "training" }, [el("h2", { text: "Training" })]);
    if (c) {
      const pairs = [["last step", fmt(c.steps)]];
      for (const chart of c.main) for (const k of chart.keys) pairs.push(["last " + k, fmt(c.last[k])]);
      for (const mark of c.marks || []) pairs.push(["audit finding", mark.check + " from step " + mark.step]);
      section.append(kvTable(pairs));
      section.append(el("div", { className: "grid" }, c.main.map((chart, i) => lineChart(chart.title, chart.keys, "curve-" + i))));
      if (c.others.length) {
        const grid = el("div", { className: "grid" });
        const details = el("details", { id: "other-curves" }, [el("summary", { text: "every other metric (" + c.others.length + ")" }), grid]);
        details.addEventListener("toggle", () => { // drawn on first open
          if (details.open && !grid.childElementCount) c.others.forEach((k) => grid.append(lineChart(k, [k])));
        });
        section.append(details);
      }
    }
    if (DATA.config_text) section.append(el("details", {}, [el("summary", { text: "config.toml" }), el("pre", { text: DATA.config_text })]));
    app.append(section);
  }

  // -- transcripts ----------------------------------------------------------------------------
  function thinkBlock(text, unclosed) {
    const summary = "reasoning (" + text.length.toLocaleString("en-US") + " characters" + (unclosed ? ", never closed" : "") + ")";
    return el("details", { className: "think" }, [el("summary", { text: summary }), el("pre", { text: text.replace(/^\n+|\n+$/g, "") })]);
  }

  // Text with <think>…</think> blocks folded. Reasoning before a bare </think> (templates
  // that open <think> in the prompt) and a <think> never closed count as reasoning too.
  function textWithThinking(text) {
    const nodes = [];
    const plain = (s) => { s = s.replace(/^\n+/, ""); if (s) nodes.push(el("pre", { className: "text", text: s })); };
    const open = text.indexOf("<think>"), close = text.indexOf("</think>");
    if (close !== -1 && (open === -1 || close < open)) {
      nodes.push(thinkBlock(text.slice(0, close), false));
      text = text.slice(close + "</think>".length);
    }
    const pattern = /<think>([\s\S]*?)(<\/think>|$)/g;
    let last = 0, match;
    while ((match = pattern.exec(text)) !== null) {
      plain(text.slice(last, match.index));
      nodes.push(thinkBlock(match[1], match[2] === ""));
      last = pattern.lastIndex;
      if (last >= text.length) break;
    }
    plain(text.slice(last));
    return nodes;
  }

  // Only the model's own replies fold <think>: a prompt may well quote the tags.
  function renderContent(content, fold) {
    const text = (s) => (fold ? textWithThinking(s) : [el("pre", { className: "text", text: s })]);
    if (content === null || content === undefined) return [];
    if (typeof content === "string") return text(content);
    if (Array.isArray(content)) {
      return content.flatMap((part) =>
        part && part.type === "text" && typeof part.text === "string" ? text(part.text) : [el("pre", { className: "mono", text: JSON.stringify(part, null, 2) })]);
    }
    return [el("pre", { text: JSON.stringify(content, null, 2) })];
  }

  function renderMessage(message) {
    if (!message || typeof message !== "object") return el("div", { className: "msg" }, [el("pre", { text: JSON.stringify(message) })]);
    const role = String(message.role || "unknown");
    const head = [role];
    if (message.name) head.push(String(message.name));
    if (message.tool_call_id) head.push("result of " + message.tool_call_id);
    const box = el("div", { className: "msg role-" + role.replace(/[^A-Za-z0-9_-]/g, "") }, [el("div", { className: "role", text: head.join(" · ") })]);
    for (const key of ["reasoning_content", "reasoning"]) {
      if (typeof message[key] === "string" && message[key]) box.append(thinkBlock(message[key], false));
    }
    box.append(...renderContent(message.content, role === "assistant"));
    for (const call of message.tool_calls || []) {
      const fn = call.function || {};
      box.append(el("div", { className: "toolcall" }, [
        el("div", {}, ["tool call ", el("span", { className: "toolname", text: String(fn.name) }), el("span", { className: "muted", text: call.id ? "  " + call.id : "" })]),
        el("pre", { className: "args", text: typeof fn.arguments === "string" ? prettyJson(fn.arguments) : JSON.stringify(fn.arguments, null, 2) }),
      ]));
    }
    return box;
  }

  function renderRollout(row) {
    const facts = [["example", row.example_id], ["rollout", row.rollout], ["step", row.step], ["task", row.task],
      ["reward", row.reward], ...Object.entries(row.metrics), ["stop_reason", row.stop_reason], ["finish_reason", row.finish_reason],
      ["turns", row.num_turns], ["tokens in / out", fmt(row.prompt_tokens) + " / " + fmt(row.completion_tokens)], ["latency (s)", row.latency_s]]
      .filter(([, v]) => v !== null && v !== undefined)
      .map(([k, v]) => el("span", {}, [el("span", { className: "muted", text: k + " " }), typeof v === "number" ? fmt(v) : String(v)]));
    const box = el("div", { className: "rollout" }, [el("div", { className: "facts" }, facts)]);
    if (row.error) box.append(el("div", { className: "error-box" }, [el("strong", { text: row.error.kind + ": " }), el("pre", { text: row.error.message })]));
    const transcript = el("div", { className: "transcript" });
    row.messages.forEach((index, i) => {
      if (i === row.prompt_len && i > 0) transcript.append(el("div", { className: "muted", text: "— completion —" }));
      transcript.append(renderMessage(DATA.messages[index]));
    });
    if (!row.messages.length) transcript.append(el("div", { className: "muted", text: "no messages" }));
    box.append(transcript);
    if (row.answer !== null) box.append(el("details", { open: "" }, [el("summary", { text: "answer" }), el("pre", { text: row.answer })]));
    if (row.info !== null) box.append(el("details", {}, [el("summary", { text: "info" }), el("pre", { text: prettyJson(row.info) })]));
    if (row.state !== null) box.append(el("details", {}, [el("summary", { text: "state" }), el("pre", { text: prettyJson(row.state) })]));
    return box;
  }

  // -- the table ------------------------------------------------------------------------------
  const rows = DATA.rows;
  const FILTERS = {
    all: { label: "all", test: () => true },
    errored: { label: "errored", test: (r) => r.errored },
    truncated: { label: "truncated", test: (r) => r.truncated },
    zero_reward: { label: "zero reward", test: (r) => r.zero_reward },
  };
  // num: right-aligned; id: shown as it is (no thousands separators or rounding)
  const columns = [
    { key: "index", label: "#", num: true, id: true, value: (r, i) => i + 1 },
    rows.some((r) => r.step !== null && r.step !== undefined) && { key: "step", label: "step", num: true, id: true, value: (r) => r.step },
    { key: "example", label: "example", id: true, value: (r) => r.example_id },
    { key: "rollout", label: "rollout", num: true, id: true, value: (r) => r.rollout },
    new Set(rows.map((r) => r.task)).size > 1 && { key: "task", label: "task", value: (r) => r.task },
    { key: "reward", label: "reward", num: true, value: (r) => r.reward },
    ...DATA.metric_names.slice(0, 6).map((name) => ({ key: "metric:" + name, label: name, num: true, value: (r) => r.metrics[name] })),
    { key: "error", label: "error", value: (r) => (r.error ? r.error.kind : null) },
    { key: "stop", label: "stop", value: (r) => r.stop_reason },
    { key: "turns", label: "turns", num: true, value: (r) => r.num_turns },
    { key: "tokens", label: "tokens out", num: true, value: (r) => r.completion_tokens },
    { key: "latency", label: "latency (s)", num: true, value: (r) => r.latency_s },
  ].filter(Boolean);

  const state = { filter: "all", query: "", sort: null, page: 0, view: [], expanded: new Set() };
  let haystacks = null; // lower-cased searchable text per row, built on the first search

  function messageText(message) {
    if (!message || typeof message !== "object") return String(message);
    const parts = [message.role, message.name, message.reasoning_content, message.reasoning];
    const content = message.content;
    if (typeof content === "string") parts.push(content);
    else if (Array.isArray(content)) for (const p of content) parts.push(p && p.text);
    for (const call of message.tool_calls || []) parts.push(call.function && call.function.name, call.function && call.function.arguments);
    return parts.filter((p) => typeof p === "string").join("\n");
  }

  function searchText(row) {
    const parts = [String(row.example_id), row.task, row.error && row.error.kind, row.error && row.error.message, row.answer, row.stop_reason];
    for (const index of row.messages) parts.push(messageText(DATA.messages[index]));
    return parts.filter((p) => typeof p === "string").join("\n").toLowerCase();
  }

  function compare(a, b) {
    if (a === b) return 0;
    if (a === null || a === undefined) return 1; // missing values last, whichever the direction
    if (b === null || b === undefined) return -1;
    if (typeof a === "number" && typeof b === "number") return a - b;
    return String(a).localeCompare(String(b), "en", { numeric: true });
  }

  function refresh() {
    const test = FILTERS[state.filter].test;
    const query = state.query.trim().toLowerCase();
    if (query && haystacks === null) haystacks = rows.map(searchText);
    let view = [];
    for (let i = 0; i < rows.length; i++) {
      if (test(rows[i]) && (!query || haystacks[i].includes(query))) view.push(i);
    }
    if (state.sort) {
      const column = columns.find((c) => c.key === state.sort.key);
      const sign = state.sort.dir === "asc" ? 1 : -1;
      const keyed = view.map((i) => [i, column.value(rows[i], i)]);
      keyed.sort((p, q) => {
        const missing = (p[1] === null || p[1] === undefined) - (q[1] === null || q[1] === undefined);
        if (missing) return missing;
        return sign * compare(p[1], q[1]) || p[0] - q[0];
      });
      view = keyed.map((p) => p[0]);
    }
    state.view = view;
    state.page = Math.min(state.page, Math.max(0, Math.ceil(view.length / PAGE_SIZE) - 1));
    renderPage();
  }

  let tbody, countText, pageText, prevButton, nextButton, headCells;

  function cell(column, row, index) {
    const value = column.value(row, index);
    const td = el("td", { className: (column.num ? "num " : "") + column.key.replace(/[^a-z]/g, "") });
    if (column.key === "error" && row.error) td.title = row.error.message.slice(0, 500);
    td.textContent = value === null || value === undefined ? "–" : typeof value === "number" && !column.id ? fmt(value) : String(value);
    if (column.key === "stop" && row.truncated) td.append(" ", el("span", { className: "tag truncated", text: "truncated" }));
    return td;
  }

  function detailRow(index) {
    return el("tr", { className: "detail-row", "data-index": index }, [el("td", { className: "detail", colspan: columns.length }, [renderRollout(rows[index])])]);
  }

  function toggle(index, tr) {
    if (state.expanded.has(index)) {
      state.expanded.delete(index);
      tr.classList.remove("open");
      const next = tr.nextElementSibling;
      if (next && next.classList.contains("detail-row")) next.remove();
    } else {
      state.expanded.add(index);
      tr.classList.add("open");
      tr.after(detailRow(index));
    }
  }

  function renderPage() {
    const start = state.page * PAGE_SIZE, end = Math.min(start + PAGE_SIZE, state.view.length);
    const fragment = document.createDocumentFragment();
    for (const index of state.view.slice(start, end)) {
      const row = rows[index];
      const classes = ["row", row.errored && "errored", row.truncated && "truncated", row.zero_reward && "zero", state.expanded.has(index) && "open"];
      const tr = el("tr", { className: classes.filter(Boolean).join(" "), "data-index": index, tabindex: "0" }, columns.map((c) => cell(c, row, index)));
      tr.addEventListener("click", () => toggle(index, tr));
      tr.addEventListener("keydown", (event) => { if (event.key === "Enter") toggle(index, tr); });
      fragment.append(tr);
      if (state.expanded.has(index)) fragment.append(detailRow(index));
    }
    tbody.replaceChildren(fragment);
    const total = state.view.length;
    countText.textContent = total
      ? "rows " + (start + 1).toLocaleString("en-US") + "–" + end.toLocaleString("en-US") + " of " + total.toLocaleString("en-US") +
        (total !== rows.length ? " (of " + rows.length.toLocaleString("en-US") + " rollouts)" : "")
      : "no rollouts match";
    const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
    pageText.textContent = "page " + (state.page + 1) + " of " + pages;
    prevButton.disabled = state.page === 0;
    nextButton.disabled = state.page >= pages - 1;
    for (const th of headCells) {
      th.classList.toggle("sorted-asc", !!state.sort && state.sort.key === th.dataset.key && state.sort.dir === "asc");
      th.classList.toggle("sorted-desc", !!state.sort && state.sort.key === th.dataset.key && state.sort.dir === "desc");
    }
  }

  function renderTable() {
    if (!rows.length) return;
    const counts = {};
    for (const [name, f] of Object.entries(FILTERS)) counts[name] = rows.filter(f.test).length;
    const select = el("select", { id: "filter", "aria-label": "show" },
      Object.entries(FILTERS).map(([name, f]) => el("option", { value: name, text: f.label + " (" + counts[name].toLocaleString("en-US") + ")" })));
    select.addEventListener("change", () => { state.filter = select.value; state.page = 0; refresh(); });
    const search = el("input", { id: "search", type: "search", placeholder: "search transcripts, ids, errors…" });
    let timer = null;
    search.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => { state.query = search.value; state.page = 0; refresh(); }, 200);
    });
    countText = el("span", { id: "count", className: "muted" });
    pageText = el("span", { id: "page" });
    prevButton = el("button", { id: "prev", text: "← previous", onclick: () => { state.page -= 1; renderPage(); } });
    nextButton = el("button", { id: "next", text: "next →", onclick: () => { state.page += 1; renderPage(); } });
    headCells = columns.map((c) => {
      const th = el("th", { "data-key": c.key, className: c.num ? "num" : null, text: c.label, title: "sort by " + c.label });
      th.addEventListener("click", () => {
        const same = state.sort && state.sort.key === c.key;
        state.sort = { key: c.key, dir: same && state.sort.dir === "asc" ? "desc" : "asc" };
        refresh();
      });
      return th;
    });
    tbody = el("tbody", { id: "rows" });
    const title = rows.some((r) => r.step !== null && r.step !== undefined) ? "Sampled rollouts" : "Rollouts";
    app.append(el("section", { id: "rollouts" }, [
      el("h2", { text: title }),
      el("div", { className: "controls" }, [el("label", {}, ["show ", select]), search, countText]),
      el("div", { className: "pager" }, [prevButton, pageText, nextButton]),
      el("div", { className: "muted", text: "Click a column to sort, a row to read its transcript." }),
      el("table", { className: "rollouts" }, [el("thead", {}, [el("tr", {}, headCells)]), tbody]),
    ]));
    refresh();
  }

  renderHeader();
  renderSummary();
  renderTraining();
  renderDistributions();
  renderTable();
  document.body.dataset.ready = "true";
})();
