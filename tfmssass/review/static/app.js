// The review page: one radiograph at a time, its 12 points and 12 corners, every change saved at once.
// Plain JavaScript, no build step; the server's JSON API is in tfmssass/review/server.py.
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const NG = "not gradable", NV = "not visible";
const PRESETS = [[0.5, 1.0], [0.55, 0.6], [0.45, 0.45], [0.7, 0.5]];  // [level, width] of the display image
const $ = (id) => document.getElementById(id);

const state = { summary: null, index: 0, film: null, field: null, wl: [0.5, 1.0], preset: 0,
                box: null, full: false, drag: null, saveTimes: [], pending: 0 };
window.reviewState = state;  // for the browser tests and the bench

async function api(path, body) {
  // a change carries the token in a header: a page from elsewhere has the cookie, never the header
  const token = document.querySelector('meta[name="tfmssass-token"]').content;
  const options = body === undefined ? {} : { method: "POST", body: JSON.stringify(body),
                                              headers: { "Content-Type": "application/json", "X-Token": token } };
  const response = await fetch(path, options);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function status(text, error) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

const fmt = (v) => v === undefined || v === null ? "–" : v === NG ? "NG" : v === NV ? "n/v" :
  Array.isArray(v) ? `${v[0].toFixed(0)}, ${v[1].toFixed(0)}` : String(v);
const view = () => state.film && state.film.reading.view;
const fields = () => view() ? state.summary.views[view()].points.concat(state.summary.views[view()].corners) : [];
const isPoint = (f) => /_[ca]$/.test(f);
const levels = () => state.summary.views[view()].points.filter((n) => n.endsWith("_c")).map((n) => n.slice(0, -2));
// The disk level that owns a corner: X_inf belongs to X-Y, Y_sup to X-Y.
function levelOf(corner) {
  const [vertebra, side] = corner.split("_");
  return levels().find((l) => side === "inf" ? l.startsWith(vertebra + "-") : l.endsWith("-" + vertebra));
}
// A value shown that no reader has set or confirmed yet: the model's or the label file's.
const isPrefill = (f) => state.film.reading[f] !== undefined && !(f in (state.film.provenance || {})) && !state.film.readers;
const pointName = (f) => f.replace(/_c$/, " centre").replace(/_a$/, " anterior");

// ---- loading ----------------------------------------------------------------------------------------
async function loadSummary() {
  state.summary = await api("api/session");
  const s = state.summary;
  $("who").textContent = `reader ${s.reader} · ${s.mode}` + (s.pair ? ` of ${s.pair[0]} (A) and ${s.pair[1]} (B)` : "") +
    ` · order ${s.order}`;
  $("note").textContent = s.note;
  const opened = s.films.filter((f) => f.open !== null).length;
  $("progress").textContent = `${s.done} of ${s.films.length} radiographs done · ${s.items_open} items still open` +
    (s.prefills ? ` · ${s.prefills} values still pre-filled` : "") +
    (opened < s.films.length ? ` (${s.films.length - opened} not opened yet)` : "");
  const nav = $("films");
  nav.textContent = "";
  s.films.forEach((f) => {
    const b = document.createElement("button");
    b.className = f.index === state.index ? "current" : "";
    b.textContent = `${f.patient_id} ${f.visit_date || "film " + (f.index + 1)} ${f.view || ""}`;
    const left = document.createElement("span");
    // done: nothing open and nothing left pre-filled (an export holds only what the reader decided)
    const done = f.open === 0 && f.prefills === 0;
    left.className = "left" + (done ? " done" : f.open === 0 ? " prefill" : "");
    left.textContent = f.open === null ? "" : done ? "✓" : f.open || `${f.prefills} pre-filled`;
    b.appendChild(left);
    b.onclick = () => openFilm(f.index);
    nav.appendChild(b);
  });
}

async function openFilm(index, field) {
  const first = !state.film || state.film.index !== index;
  state.index = index;
  state.film = await api(`api/films/${index}`);
  if (first) {
    const f = state.film;
    state.full = false;
    state.box = [-0.5, -0.5, f.width, f.height];
    $("img").setAttribute("href", `api/films/${index}/image?size=preview`);
    for (const [k, v] of [["x", -0.5], ["y", -0.5], ["width", f.width], ["height", f.height]]) $("img").setAttribute(k, v);
  }
  const corners = view() ? state.summary.views[view()].corners : [];
  state.field = field && fields().includes(field) ? field : state.film.open[0] || corners[0] || null;
  draw();
  await loadSummary();
}

// ---- drawing ----------------------------------------------------------------------------------------
function applyBox() {
  $("svg").setAttribute("viewBox", state.box.join(" "));
  const [level, width] = state.wl;
  for (const id of ["fr", "fg", "fb"]) {
    $(id).setAttribute("slope", 1 / width);
    $(id).setAttribute("intercept", -(level - width / 2) / width);
  }
  if (!state.full && state.film && state.box[2] < 0.6 * state.film.width) loadFull();
}

function loadFull() {
  state.full = true;
  const index = state.index, url = `api/films/${index}/image?size=full`, probe = new Image();
  probe.onload = () => { if (state.index === index) $("img").setAttribute("href", url); };
  probe.src = url;
}

function pixel() { return state.box[2] / $("svg").clientWidth; }

function circle(x, y, r, cls, name) {
  const c = document.createElementNS(SVGNS, "circle");
  c.setAttribute("cx", x); c.setAttribute("cy", y); c.setAttribute("r", r); c.setAttribute("class", cls);
  if (name) c.dataset.field = name;
  return c;
}

function text(x, y, content, size) {
  const t = document.createElementNS(SVGNS, "text");
  t.setAttribute("x", x); t.setAttribute("y", y); t.setAttribute("class", "mark");
  t.setAttribute("font-size", size); t.setAttribute("stroke-width", size / 6);
  t.textContent = content;
  return t;
}

function drawMarks() {
  const g = $("marks"), px = pixel(), r = 6 * px, film = state.film, reading = film.reading;
  g.textContent = "";
  if (!view()) return;
  for (const name of state.summary.views[view()].points) {
    for (const [who, values] of Object.entries(film.readers || {})) {
      const v = values[name], tag = who === state.summary.pair[0] ? "A" : "B";
      if (film.differences.includes(name) && Array.isArray(v)) g.appendChild(circle(v[0], v[1], 1.6 * r, `other ${tag}`));
    }
    const v = reading[name];
    if (!Array.isArray(v)) continue;
    const kind = name.endsWith("_c") ? "c" : "a";
    g.appendChild(circle(v[0], v[1], name === state.field ? 1.5 * r : r,
                         `point ${kind}${name === state.field ? " selected" : ""}`, name));
    if (kind === "c") g.appendChild(text(v[0] - 9 * r, v[1] + r, name.slice(0, -2), 11 * px));
  }
  for (const corner of state.summary.views[view()].corners) {  // the grade beside its corner
    const level = levelOf(corner), a = reading[level + "_a"], c = reading[level + "_c"];
    if (!Array.isArray(a) || !Array.isArray(c)) continue;
    const up = corner.endsWith("_inf") ? -1 : 1, grade = reading[corner];
    const depth = Math.hypot(a[0] - c[0], a[1] - c[1]);
    g.appendChild(text(a[0] + 0.5 * depth * Math.sign(a[0] - c[0]) - 4 * px, a[1] + up * 0.45 * depth + 4 * px,
                       grade === undefined ? "?" : grade === NG ? "NG" : String(grade), 14 * px));
  }
}

function drawPanel() {
  const film = state.film, s = state.summary, reading = film.reading, adjudicating = !!film.readers;
  $("filminfo").textContent = `${film.film} · patient ${film.patient_id} · ` +
    (film.visit_date ? `visit ${film.visit_date}` : "date hidden") + ` · ${view() || "view not set: press c or l"}` +
    ` · ${film.width}×${film.height}`;
  const head = $("corners").tHead, body = $("corners").tBodies[0];
  head.innerHTML = "<tr><th>corner</th><th>grade</th>" + (adjudicating ? "<th>A</th><th>B</th>" :
    '<th title="the model\'s grade and the probability of that grade">model (P)</th>') + "<th></th></tr>";
  body.textContent = "";
  for (const corner of view() ? s.views[view()].corners : []) {
    const tr = document.createElement("tr");
    tr.className = (corner === state.field ? "selected " : "") + (film.open.includes(corner) ? "open" : "");
    tr.dataset.field = corner;
    const model = film.model[corner] || {}, prefilled = isPrefill(corner);
    const cells = [corner, fmt(reading[corner]) + (prefilled ? " (pre-fill)" : "")];
    if (adjudicating) cells.push(fmt(film.readers[s.pair[0]][corner]), fmt(film.readers[s.pair[1]][corner]));
    else cells.push(film.start[corner] === undefined ? "–" :
      `${fmt(film.start[corner])} (${model.p_grade == null ? "?" : model.p_grade.toFixed(2)})`);
    for (const c of cells) { const td = document.createElement("td"); td.textContent = c; tr.appendChild(td); }
    if (prefilled) {
      tr.children[1].className = "prefill";
      tr.children[1].title = "pre-filled, not yet yours: Enter confirms it, a key sets another; only what you set or confirm is exported";
    }
    if (model.review && !adjudicating) {
      const flag = document.createElement("span");
      flag.className = "flag";
      flag.textContent = " ⚑";
      flag.title = model.review_reason || model.why || "flagged for review";
      tr.children[2].appendChild(flag);
    }
    const td = document.createElement("td");
    for (const g of [0, 1, 2, 3, NG]) {
      const b = document.createElement("button");
      b.textContent = g === NG ? "NG" : g;
      b.className = reading[corner] === g ? "on" : "";
      b.onclick = () => { state.field = corner; decide(g); };
      td.appendChild(b);
    }
    tr.appendChild(td);
    tr.onclick = (e) => { if (e.target.tagName !== "BUTTON") { state.field = corner; draw(); } };
    body.appendChild(tr);
  }
  const left = fields().filter(isPrefill);
  $("prefills").textContent = left.length ? `${left.length} value(s) still pre-filled (grey): not exported until you ` +
    "confirm (Enter) or change them" : "";
  const flagged = state.field && !adjudicating ? film.model[state.field] || {} : {};
  $("why").textContent = flagged.review ? `⚑ ${state.field}: ${flagged.review_reason || flagged.why || "flagged for review"}` : "";
  drawCrops();
}

function drawCrops() {
  const corner = state.field && !isPoint(state.field) ? state.field : null;
  $("cropname").textContent = corner ? `${corner} as the grader sees it` : "";
  $("cropbox").hidden = !corner;
  const url = `api/films/${state.index}/crop/${corner}?v=${state.film.crops}`;
  if (corner && $("crop").getAttribute("src") !== url) $("crop").src = url;
  const strip = $("visits");
  strip.textContent = "";
  if (!corner) return;
  state.film.visits.forEach(({ index: j, crops }, k) => {
    const f = state.summary.films[j], fig = document.createElement("figure"), img = document.createElement("img");
    fig.className = j === state.index ? "current" : "";
    img.src = `api/films/${j}/crop/${corner}?v=${crops}`;
    img.alt = `${corner} at ${f.visit_date || "film " + String.fromCharCode(65 + k)}`;
    img.onerror = () => { img.alt = "not cut"; img.removeAttribute("src"); };
    const cap = document.createElement("figcaption");
    cap.textContent = f.visit_date || `film ${String.fromCharCode(65 + k)}`;
    fig.append(img, cap);
    fig.onclick = () => openFilm(j, corner);
    strip.appendChild(fig);
  });
}

function drawPrompt() {
  const f = state.field, film = state.film;
  let text;
  if (!view()) text = "Set the view: c cervical, l lumbar";
  else if (!f) text = "Nothing selected";
  else if (isPoint(f)) text = Array.isArray(film.reading[f]) ? `${pointName(f)}: drag, arrows, or Enter to keep` :
    `Click: ${pointName(f)} (s: not visible; Enter: mid-view, then arrows)`;
  else text = `${f}: grade 0–3, x not gradable, Enter keeps ${fmt(film.reading[f])}`;
  if (film.readers && f && film.differences.includes(f)) {
    const [a, b] = state.summary.pair.map((r) => fmt(film.readers[r][f]));
    text = `A says ${a}, B says ${b}: a or b takes one · ` + text;
  }
  const prefilled = fields().filter(isPrefill).length;
  if (film.open.length === 0) text += prefilled ? ` · nothing flagged is left; ${prefilled} value(s) still pre-filled ` +
    "(Enter confirms the one selected; n: next)" : " · this radiograph is done (n: next)";
  $("prompt").textContent = text;
}

function draw() { applyBox(); drawMarks(); drawPanel(); drawPrompt(); }

// ---- changes ----------------------------------------------------------------------------------------
// Grade 3 is a bridge across the disk: it belongs to both corners of the level. The page says so
// when the other corner differs, and leaves the decision to the reader.
function bridgeNote(field, value) {
  if (isPoint(field) || field === "view" || !view()) return "";
  const level = levelOf(field);
  if (!level) return "";
  const [upper, lower] = level.split("-"), other = field.endsWith("_inf") ? `${lower}_sup` : `${upper}_inf`;
  const there = state.film.reading[other];
  return (value === 3) !== (there === 3) && there !== undefined
    ? ` · note: a bridge spans ${level}, grading both corners 3, and ${other} is ${fmt(there)}` : "";
}

async function save(field, value) {
  const t0 = state.keyTime || performance.now();  // from the key press, when a key started it
  state.keyTime = null;
  status(`saving ${field}…`);
  try {
    const result = await api(`api/films/${state.index}`, { field, value });
    state.saveTimes.push(performance.now() - t0);
    state.film.reading[field] = value;
    if (field !== "view") (state.film.provenance = state.film.provenance || {})[field] = "saved";  // no longer a pre-fill
    drawMarks();
    drawPanel();
    status(`saved ${field} = ${fmt(value)} at ${result.saved.slice(11, 23)}` + bridgeNote(field, value));
    return true;
  } catch (error) {
    status(`NOT saved: ${field}: ${error.message}`, true);
    return false;
  }
}

async function advance(after) {
  state.film = await api(`api/films/${state.index}`);
  const open = state.film.open;
  if (open.length) {
    const order = fields();
    state.field = open.find((f) => order.indexOf(f) > order.indexOf(after)) || open[0];
    draw();
    return loadSummary();
  }
  draw();
  await loadSummary();
  const next = state.summary.films.find((f) => f.index > state.index && f.open !== 0);
  if (next) return openFilm(next.index);
  status("every radiograph of this session is done");
}

async function refresh() {
  state.film = await api(`api/films/${state.index}`);
  draw();
  await loadSummary();
}

async function decide(value) {
  const f = state.field;
  if (f && (await save(f, value))) await advance(f);
}

function move(dx, dy) {
  const v = state.film.reading[state.field];
  if (!isPoint(state.field) || !Array.isArray(v)) return;
  state.film.reading[state.field] = [v[0] + dx, v[1] + dy];
  drawMarks();
  clearTimeout(state.moveTimer);  // a run of arrow presses saves once, when it stops
  const field = state.field;
  state.moveTimer = setTimeout(() => save(field, state.film.reading[field]).then(refresh), 250);
}

// Keyboard-only placement: Enter puts a point that is not placed yet in the middle of the view,
// the arrows move it, and Enter keeps it.
function placeInView() {
  const [x, y, w, h] = state.box, film = state.film;
  const point = [Math.min(Math.max(x + w / 2, 0), film.width - 1), Math.min(Math.max(y + h / 2, 0), film.height - 1)];
  return save(state.field, point).then(refresh);
}

function select(step) {
  const order = fields();
  if (!order.length) return;
  state.field = order[(order.indexOf(state.field) + step + order.length) % order.length];
  draw();
}

function zoom(factor, cx, cy) {
  const [x, y, w, h] = state.box;
  cx = cx === undefined ? x + w / 2 : cx; cy = cy === undefined ? y + h / 2 : cy;
  state.box = [cx - (cx - x) * factor, cy - (cy - y) * factor, w * factor, h * factor];
  draw();
}

function takeFrom(tag) {
  const film = state.film;
  if (!film.readers) return;
  const v = film.readers[state.summary.pair[tag === "a" ? 0 : 1]][state.field];
  if (v !== undefined) decide(v);
}

// Keys act one after another: a key pressed while a change is being saved waits for it, so fast
// typing grades corner after corner instead of the same corner twice.
let queue = Promise.resolve();
const later = (action) => {
  state.pending += 1;  // keys not finished yet (the tests and the bench wait for 0)
  queue = queue.then(action).catch((error) => status(error.message, true)).finally(() => { state.pending -= 1; });
};

function keyAction(e) {
  const k = e.key, step = e.shiftKey ? 10 : 1;
  if (/^[0-3]$/.test(k)) return () => state.field && !isPoint(state.field) && decide(Number(k));
  if (k === "x") return () => state.field && !isPoint(state.field) && decide(NG);
  if (k === "s") return () => state.field && isPoint(state.field) && decide(NV);
  if (k === "Enter") return () => state.film.reading[state.field] !== undefined ? decide(state.film.reading[state.field])
    : isPoint(state.field) && placeInView();
  if (k === "j") return () => select(1);
  if (k === "k") return () => select(-1);
  if (k === "n" || k === "PageDown") return () => openFilm(Math.min(state.index + 1, state.summary.films.length - 1));
  if (k === "p" || k === "PageUp") return () => openFilm(Math.max(state.index - 1, 0));
  if (k === "c" || k === "l") return () => save("view", k === "c" ? "cervical" : "lumbar").then(() => advance("view"));
  if (k === "a" || k === "b") return () => takeFrom(k);
  const arrows = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
  if (k in arrows) return () => move(...arrows[k]);
  if (k === "w") {
    return () => { state.preset = (state.preset + 1) % PRESETS.length; state.wl = PRESETS[state.preset]; applyBox(); };
  }
  if (k === "r") return () => { state.box = [-0.5, -0.5, state.film.width, state.film.height]; draw(); };
  if (k === "+" || k === "=") return () => zoom(0.8);
  if (k === "-") return () => zoom(1.25);
  if (k === "f") return () => loadFull();
  if (k === "?") return () => { $("help").open = !$("help").open; };
  return null;
}

document.addEventListener("keydown", (e) => {
  if (!state.film || e.ctrlKey || e.metaKey || e.altKey) return;
  const action = keyAction(e);
  if (!action) return;
  e.preventDefault();
  later(() => { state.keyTime = e.timeStamp; return action(); });
});

// ---- mouse: place and drag points, pan, zoom, window/level -------------------------------------------
function imagePoint(e) {
  const p = $("svg").createSVGPoint();
  p.x = e.clientX; p.y = e.clientY;
  const q = p.matrixTransform($("svg").getScreenCTM().inverse());
  return [q.x, q.y];
}

$("svg").addEventListener("contextmenu", (e) => e.preventDefault());
$("svg").addEventListener("wheel", (e) => {
  e.preventDefault();
  const [x, y] = imagePoint(e);
  zoom(e.deltaY > 0 ? 1.2 : 1 / 1.2, x, y);
}, { passive: false });
$("svg").addEventListener("mousedown", (e) => {
  const target = e.target.dataset && e.target.dataset.field;
  state.drag = { x: e.clientX, y: e.clientY, box: state.box.slice(), wl: state.wl.slice(), button: e.button,
                 field: target || null, moved: false, grab: imagePoint(e),
                 start: target ? state.film.reading[target].slice() : null };
  if (target) { state.field = target; draw(); }
});
window.addEventListener("mousemove", (e) => {
  const d = state.drag;
  if (!d) return;
  const dx = e.clientX - d.x, dy = e.clientY - d.y;
  if (Math.abs(dx) + Math.abs(dy) > 3) d.moved = true;
  if (!d.moved) return;
  if (d.field) {  // the point follows the mouse from where it was grabbed (no jump to the cursor)
    const [x, y] = imagePoint(e);
    state.film.reading[d.field] = [d.start[0] + x - d.grab[0], d.start[1] + y - d.grab[1]];
    drawMarks();
  }
  else if (d.button === 2 || e.shiftKey) {
    state.wl = [Math.min(1, Math.max(0, d.wl[0] - dy / 500)), Math.min(2, Math.max(0.02, d.wl[1] + dx / 500))];
    applyBox();
  } else {
    const s = d.box[2] / $("svg").clientWidth;
    state.box = [d.box[0] - dx * s, d.box[1] - dy * s, d.box[2], d.box[3]];
    applyBox();
  }
});
window.addEventListener("mouseup", async (e) => {
  const d = state.drag;
  state.drag = null;
  if (!d || e.button !== 0) return;
  if (d.field && d.moved) {
    if (await save(d.field, state.film.reading[d.field])) await refresh();
  } else if (!d.moved && !d.field && state.field && isPoint(state.field) && e.target.closest("#svg")) {
    await decide(imagePoint(e));  // guided placement: a click puts the selected point there
  }
});

window.addEventListener("resize", () => state.film && draw());
$("img").addEventListener("load", () => {  // the tests and the bench wait for this
  document.body.dataset.shown = `${state.index} ${state.full ? "full" : "preview"}`;
});
loadSummary().then(() => openFilm(0))
  .then(() => status("ready: every change is saved as you make it"))
  .catch((error) => status(`cannot load the session: ${error.message}`, true));
