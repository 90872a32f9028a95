// Trail's embedded viewer: the Audit Logs page inside a host product's console, built in the browser
// from the JSON API with a viewer token. The token comes in the URL fragment (never sent to a server
// in a URL, dropped from the address at once, kept in memory only) and travels as a bearer header,
// so no cookie is needed in a third-party frame. Data is only ever inserted as text.
"use strict";

const root = document.documentElement;
const params = new URLSearchParams(location.search);
const org = decodeURIComponent(location.pathname.split("/")[3] || "");
const token = new URLSearchParams(location.hash.slice(1)).get("token");
if (location.hash) history.replaceState(null, "", location.pathname + location.search);
const $ = (sel) => document.querySelector(sel);
const statusLine = $("[data-status]");

// --- Theme: documented parameters, each checked before use (README "Embed the viewer"). -----------

const COLOR = /^#(?:[0-9a-fA-F]{3}){1,2}$/;
const COLORS = { accent: "--accent", accent_text: "--accent-fg", background: "--bg", text: "--fg", panel: "--panel", border: "--line", muted: "--muted" };
for (const [name, variable] of Object.entries(COLORS)) {
  const c = params.get(name);
  if (c && COLOR.test(c)) root.style.setProperty(variable, c);
}
const font = params.get("font");
if (font && /^[\w ,'"-]{1,120}$/.test(font)) root.style.fontFamily = font;
const density = params.get("density");
if (density === "compact" || density === "comfortable") document.body.classList.add(density);
let zone = params.get("tz") || Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
try { new Intl.DateTimeFormat("en", { timeZone: zone }); } catch { zone = "UTC"; }

// --- The API, with the token. ---------------------------------------------------------------------

const orgPath = `/v1/orgs/${encodeURIComponent(org)}`;

async function api(method, path, body) {
  const headers = { authorization: `Bearer ${token}` };
  const init = { method, headers, credentials: "omit", cache: "no-store" };
  if (body !== undefined) {
    headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  if (r.status === 401) throw new Error("This view has expired or was revoked. Open the audit log again from your product.");
  if (!r.ok) {
    let message = `The server answered ${r.status}.`;
    try { message = (await r.json()).error.message || message; } catch { /* not JSON */ }
    throw new Error(message.charAt(0).toUpperCase() + message.slice(1));
  }
  return r;
}
const getJson = async (path) => (await api("GET", path)).json();

function text(tag, value, cls) {
  const el = document.createElement(tag);
  el.textContent = value ?? "";
  if (cls) el.className = cls;
  return el;
}

// Times in the viewer's zone, as the console shows them.
function when(iso) {
  const opts = { timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" };
  const p = Object.fromEntries(new Intl.DateTimeFormat("en-CA", opts).formatToParts(new Date(iso)).map((x) => [x.type, x.value]));
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second}`;
}

// --- Filters, rows and the histogram. ------------------------------------------------------------

const form = $("[data-filters]");
const rows = $("[data-rows]");
const more = $("[data-more]");
const errorBanner = $("[data-error]");
const HOURS = { "1h": 1, "24h": 24, "7d": 168, "30d": 720, "90d": 2160 };
let cursor = null;
let lastQuery = null;
// Loads started; a histogram is drawn only for the latest.
let loads = 0;

function currentQuery() {
  const q = new URLSearchParams();
  const to = new Date();
  const from = new Date(to.getTime() - (HOURS[form.elements.range.value] || 24) * 3600e3);
  q.set("from", from.toISOString());
  q.set("to", to.toISOString());
  for (const name of ["actor", "action", "target_type", "target_id", "project", "outcome", "q"]) {
    const v = form.elements[name].value.trim();
    if (!v) continue;
    if (name === "q") q.set(name, v);
    else for (const one of v.split(",").map((s) => s.trim()).filter(Boolean)) q.append(name, one);
  }
  return q;
}

function row(e) {
  const tr = document.createElement("tr");
  tr.tabIndex = 0;
  tr.dataset.id = e.id;
  const time = text("td", when(e.time), "nowrap");
  time.title = `${e.time} (UTC)`;
  const outcome = document.createElement("td");
  outcome.append(text("span", e.outcome === "success" ? "Success" : "Failure", `outcome ${e.outcome}`));
  tr.append(time, text("td", e.actor.name || e.actor.id), text("td", e.action_label || e.action),
    text("td", [e.target.type, e.target.name || e.target.id].filter(Boolean).join(": ")), text("td", e.project), outcome);
  const open = () => showEvent(e.id);
  tr.addEventListener("click", open);
  tr.addEventListener("keydown", (k) => { if (k.key === "Enter") open(); });
  return tr;
}

function drawHistogram(h, total) {
  const svg = $("[data-chart]");
  svg.replaceChildren();
  const max = Math.max(1, ...h.buckets.map((b) => b.count));
  const w = 1000 / Math.max(1, h.buckets.length);
  h.buckets.forEach((b, i) => {
    if (!b.count) return;
    const r = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    const height = Math.max(2, (b.count / max) * 100);
    r.setAttribute("x", String(i * w));
    r.setAttribute("y", String(100 - height));
    r.setAttribute("width", String(Math.max(1, w - 1)));
    r.setAttribute("height", String(height));
    r.append(Object.assign(document.createElementNS("http://www.w3.org/2000/svg", "title"), { textContent: `${b.count} from ${when(b.start)}` }));
    svg.append(r);
  });
  svg.setAttribute("aria-label", `Events over time: ${total} in total, at most ${max} in one bar`);
  $("[data-caption]").textContent = `${total} events from ${when(h.from)} to ${when(h.to)} (${zone})`;
}

async function load(append) {
  errorBanner.textContent = "";
  const q = append ? new URLSearchParams(lastQuery) : currentQuery();
  lastQuery = q.toString();
  const page = new URLSearchParams(q);
  page.set("limit", "50");
  if (append && cursor) page.set("cursor", cursor);
  // The histogram is asked for at once but drawn when it comes: counting rows (free text, an actor)
  // can take seconds in a large org, and the rows must not wait for it. Only the latest load's is
  // drawn; its failure is held until the rows' own error, if any, is shown.
  const generation = ++loads;
  const chart = append
    ? null
    : getJson(`${orgPath}/events/histogram?${q}`).then((h) => ({ h }), (err) => ({ err }));
  if (!append) $("[data-caption]").textContent = "Counting events…";
  try {
    const data = await getJson(`${orgPath}/events?${page}`);
    if (!append) rows.replaceChildren();
    rows.append(...data.events.map(row));
    cursor = data.next_cursor;
    more.hidden = !cursor;
    $("[data-empty]").hidden = rows.children.length > 0;
  } catch (err) {
    errorBanner.textContent = err.message;
  }
  if (chart) {
    const { h, err } = await chart;
    if (generation !== loads) return;
    if (h) drawHistogram(h, h.buckets.reduce((n, b) => n + b.count, 0));
    else errorBanner.textContent ||= err.message;
  }
}

// --- One event, with its integrity badge. --------------------------------------------------------

const detail = $("[data-detail]");

async function showEvent(id) {
  const fields = $("[data-fields]");
  const badge = $("[data-badge]");
  fields.replaceChildren();
  $("[data-json]").textContent = "";
  badge.className = "badge pending";
  badge.textContent = "Integrity: checking…";
  detail.showModal();
  try {
    const ev = await getJson(`${orgPath}/events/${encodeURIComponent(id)}`);
    const add = (k, v) => { if (v) fields.append(text("dt", k), text("dd", v)); };
    add("Time", `${when(ev.time)} (${zone})`);
    add("Actor", [ev.actor.name, ev.actor.id].filter(Boolean).join(" · "));
    add("Action", ev.action_label ? `${ev.action_label} (${ev.action})` : ev.action);
    add("Target", [ev.target.type, ev.target.name, ev.target.id].filter(Boolean).join(" · "));
    add("Project", ev.project);
    add("Outcome", ev.outcome);
    add("Reason", ev.reason);
    add("Address", ev.actor.ip);
    const shown = { ...ev };
    delete shown.proof;
    $("[data-json]").textContent = JSON.stringify(shown, null, 2);
    for (let attempt = 0; attempt < 30; attempt++) {
      const current = attempt === 0 ? ev : await getJson(`${orgPath}/events/${encodeURIComponent(id)}`);
      const result = await verifyEvent(current);
      if (result) {
        badge.className = `badge ${result.cls}`;
        badge.textContent = result.text;
        return;
      }
      badge.textContent = "Integrity: waiting for the next signed checkpoint…";
      await new Promise((done) => setTimeout(done, 1000));
    }
    badge.textContent = "Integrity: not yet in a signed checkpoint";
  } catch (err) {
    badge.className = "badge bad";
    badge.textContent = err.message;
  }
}

// --- Exports and their history (when the token allows). ------------------------------------------

const exportDialog = $("[data-export-dialog]");
const exportRows = $("[data-export-rows]");

async function download(e) {
  const r = await api("GET", `${orgPath}/exports/${encodeURIComponent(e.id)}/download`);
  const blob = await r.blob();
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = `${e.name}.${e.format === "json" ? "jsonl" : "csv"}`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
  return blob.size;
}
window.trailDownload = download;

async function showExports() {
  const list = (await getJson(`${orgPath}/exports`)).exports;
  exportRows.replaceChildren(...list.map((e) => {
    const tr = document.createElement("tr");
    tr.dataset.status = e.status;
    const status = document.createElement("td");
    status.append(text("span", e.status, `status ${e.status}`));
    const action = document.createElement("td");
    if (e.status === "completed") {
      const b = text("button", "Download");
      b.type = "button";
      b.addEventListener("click", () => download(e).catch((err) => { errorBanner.textContent = err.message; }));
      action.append(b);
    }
    tr.append(text("td", e.name), text("td", when(e.created_at)), status, text("td", e.row_count ?? ""), action);
    return tr;
  }));
  if (list.some((e) => e.status === "pending" || e.status === "running")) setTimeout(() => showExports().catch(() => {}), 1000);
}

$("[data-open-export]").addEventListener("click", () => exportDialog.showModal());
$("[data-show-exports]").addEventListener("click", async (e) => {
  const section = $("[data-exports]");
  section.hidden = !section.hidden;
  e.currentTarget.setAttribute("aria-expanded", String(!section.hidden));
  if (!section.hidden) await showExports().catch((err) => { errorBanner.textContent = err.message; });
});
$("[data-export]").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = e.currentTarget;
  const slot = f.querySelector("[data-error]");
  slot.textContent = "";
  const filters = {};
  for (const [k, v] of new URLSearchParams(lastQuery || currentQuery().toString())) {
    filters[k] = k in filters ? [].concat(filters[k], v) : v;
  }
  try {
    await api("POST", `${orgPath}/exports`, { name: f.elements.name.value, format: f.elements.format.value, filters });
    exportDialog.close();
    $("[data-exports]").hidden = false;
    $("[data-show-exports]").setAttribute("aria-expanded", "true");
    await showExports();
  } catch (err) {
    slot.textContent = err.message;
  }
});
for (const b of document.querySelectorAll("dialog [data-close]")) b.addEventListener("click", () => b.closest("dialog").close());

// --- Start. ----------------------------------------------------------------------------------------

form.addEventListener("submit", (e) => { e.preventDefault(); load(false); });
form.addEventListener("reset", () => setTimeout(() => load(false), 0));
more.addEventListener("click", () => load(true));

(async () => {
  if (!token) {
    statusLine.textContent = "This viewer needs a viewer token: open it from your product.";
    return;
  }
  try {
    const me = await getJson("/v1/viewer");
    const fixed = Object.entries(me.filter).map(([k, v]) => `${k.replace("_", " ")} ${[].concat(v).join(" or ")}`);
    $("[data-fixed]").textContent = fixed.length ? `Showing only ${fixed.join(", ")}.` : "";
    $("[data-export-tools]").hidden = !me.permissions.includes("export");
    statusLine.hidden = true;
    $("[data-app]").hidden = false;
    await load(false);
    document.body.dataset.ready = "true";
  } catch (err) {
    statusLine.textContent = err.message;
  }
})();
