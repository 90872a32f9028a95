// Trail console: the few things pages cannot do without a script. Pages work and read fine before
// it runs; it never builds a page from data, only enhances server-rendered HTML.
"use strict";

const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content ?? "";
const csrf = meta("csrf-token");

async function api(method, url, body, extraHeaders) {
  const headers = { "x-csrf-token": csrf, ...extraHeaders };
  const init = { method, headers, credentials: "same-origin" };
  if (body !== undefined) {
    headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(url, init);
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!r.ok) {
    const message = data?.error?.message || `The server answered ${r.status}.`;
    throw new Error(message.charAt(0).toUpperCase() + message.slice(1));
  }
  return data;
}

function showError(form, e) {
  const slot = form.querySelector("[data-error]");
  if (slot) slot.textContent = e ? e.message || String(e) : "";
}

// --- Time zone: the viewer's zone by default, UTC on request, remembered. ------------------------

const zoneKey = "trail.timezone";
const useUtc = () => localStorage.getItem(zoneKey) === "utc";
const localZone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local";

function formatTime(iso, utc) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const opts = { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" };
  if (utc) opts.timeZone = "UTC";
  const parts = Object.fromEntries(new Intl.DateTimeFormat("en-CA", opts).formatToParts(d).map((p) => [p.type, p.value]));
  return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}:${parts.second}`;
}

function renderTimes(root = document) {
  const utc = useUtc();
  for (const t of root.querySelectorAll("time[datetime]")) {
    const iso = t.getAttribute("datetime");
    if (t.hasAttribute("data-short")) {
      // An axis tick: month, day and minute in the chosen zone.
      t.textContent = formatTime(iso, utc).slice(5, 16);
      continue;
    }
    const shown = `${formatTime(iso, utc)} ${utc ? "UTC" : localZone}`;
    const sameAsUtc = formatTime(iso, false) === formatTime(iso, true);
    t.textContent = t.hasAttribute("data-both") && !utc && !sameAsUtc ? `${shown} (${formatTime(iso, true)} UTC)` : shown;
    t.title = `${formatTime(iso, true)} UTC`;
  }
  const toggle = document.querySelector("[data-tz-toggle]");
  if (toggle) {
    // A viewer whose zone is UTC has nothing to switch between.
    toggle.hidden = ["UTC", "Etc/UTC", "Etc/GMT", "GMT"].includes(localZone);
    toggle.textContent = utc ? `Times in UTC · show ${localZone}` : `Times in ${localZone} · show UTC`;
  }
}

document.querySelector("[data-tz-toggle]")?.addEventListener("click", () => {
  localStorage.setItem(zoneKey, useUtc() ? "local" : "utc");
  renderTimes();
});

// --- Histogram: a bar's count and start on hover. ------------------------------------------------

const hover = document.querySelector("[data-hover]");
function hoverBars(root) {
  for (const bar of root.querySelectorAll(".histogram rect[data-count]")) {
    bar.addEventListener("mouseenter", () => {
      const n = Number(bar.dataset.count);
      const zone = useUtc() ? "UTC" : localZone;
      hover.textContent = `${n} ${n === 1 ? "event" : "events"} from ${formatTime(bar.dataset.start, useUtc())} ${zone}`;
    });
  }
}
hoverBars(document);

// A histogram that counts rows (free text, actor, target, project, source) comes after the page, from
// the API, for the window the page resolved; its bars are drawn as the server draws them.
async function drawHistogram(figure) {
  const svg = figure.querySelector("svg");
  try {
    const h = await api("GET", `/v1/orgs/${encodeURIComponent(meta("org"))}/events/histogram?${figure.dataset.histogram}`);
    const counts = h.buckets.map((b) => b.count);
    const total = counts.reduce((a, b) => a + b, 0);
    const max = Math.max(0, ...counts);
    const bw = 1000 / Math.max(1, counts.length);
    const rects = [];
    h.buckets.forEach((b, i) => {
      if (b.count === 0) return;
      const height = Math.max(b.count / Math.max(max, 1) * 96, 2);
      const r = document.createElementNS("http://www.w3.org/2000/svg", "rect");
      const attrs = { x: i * bw + bw * 0.1, y: 100 - height, width: Math.max(bw * 0.8, 0.5), height, "data-count": b.count, "data-start": b.start };
      for (const [k, v] of Object.entries(attrs)) r.setAttribute(k, String(v));
      const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
      title.textContent = `${b.count} events from ${b.start}`;
      r.append(title);
      rects.push(r);
    });
    svg.replaceChildren(...rects);
    svg.setAttribute("aria-label", `Events over time: ${total} in total, at most ${max} in one bar`);
    figure.querySelector("[data-total]").textContent = String(total);
    figure.querySelector("[data-max]").textContent = String(max);
    hoverBars(figure);
    figure.removeAttribute("aria-busy");
    performance.mark("trail-histogram-drawn");
  } catch (err) {
    figure.querySelector("[data-total]").textContent = "?";
    figure.querySelector("[data-max]").textContent = "?";
    svg.setAttribute("aria-label", "Events over time: could not be counted");
    figure.removeAttribute("aria-busy");
    hover.textContent = `The histogram could not be drawn: ${err.message}`;
  }
}
const laterChart = document.querySelector(".histogram[data-histogram]");
if (laterChart) drawHistogram(laterChart);

// --- Header: org switcher and sign-out. ---------------------------------------------------------

const orgSelect = document.querySelector("[data-org-switch] select");
orgSelect?.addEventListener("change", () => {
  const section = location.pathname.split("/").slice(3).join("/") || "logs";
  const keep = section.startsWith("logs/") ? "logs" : section;
  location.href = `/orgs/${encodeURIComponent(orgSelect.value)}/${keep}`;
});
document.querySelector("[data-org-switch]")?.addEventListener("submit", (e) => e.preventDefault());

document.querySelector("[data-logout]")?.addEventListener("click", async () => {
  try { await api("POST", "/v1/auth/logout"); } catch { /* already signed out */ }
  location.href = "/login";
});

// --- Sign-in and invitations. -------------------------------------------------------------------

document.querySelector("[data-login]")?.addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = e.currentTarget;
  showError(f, null);
  try {
    const answer = await api("POST", "/v1/auth/login", { email: f.email.value, password: f.password.value });
    if (answer?.mfa_required) {
      // The password was right; the session waits for a code.
      const second = document.querySelector("[data-login-code]");
      second.dataset.challenge = answer.challenge;
      f.hidden = true;
      second.hidden = false;
      second.code.focus();
      return;
    }
    location.href = f.dataset.next || "/";
  } catch (err) {
    showError(f, err);
    f.password.focus();
  }
});

// Single sign-on leaves for the provider by navigation, not by a form: the page's form-action 'self'
// would stop the redirect to another site.
document.querySelector("[data-sso]")?.addEventListener("submit", (e) => {
  e.preventDefault();
  const f = e.currentTarget;
  const q = new URLSearchParams({ org: f.org.value.trim().toLowerCase(), next: f.next.value });
  location.assign(`/v1/auth/sso?${q}`);
});

document.querySelector("[data-login-code]")?.addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = e.currentTarget;
  showError(f, null);
  try {
    await api("POST", "/v1/auth/login/mfa", { challenge: f.dataset.challenge, code: f.code.value });
    location.href = f.dataset.next || "/";
  } catch (err) {
    showError(f, err);
    f.code.select();
  }
});

document.querySelector("[data-mfa-start]")?.addEventListener("submit", async (e) => {
  e.preventDefault();
  const start = e.currentTarget;
  const slot = document.querySelector("[data-mfa-error]");
  slot.textContent = "";
  try {
    const enrolment = await api("POST", "/v1/me/mfa/totp", { current_password: start.current_password.value });
    document.querySelector("[data-qr]").src = `data:image/svg+xml;base64,${btoa(enrolment.qr_svg)}`;
    document.querySelector("[data-secret]").textContent = enrolment.secret;
    document.querySelector("[data-mfa-enrol]").hidden = false;
    start.hidden = true;
    document.querySelector("#confirm-code").focus();
  } catch (err) {
    slot.textContent = err.message;
  }
});

document.querySelector("[data-accept]")?.addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = e.currentTarget;
  showError(f, null);
  let body = {};
  let headers = {};
  if (f.dataset.csrf) {
    headers = { "x-csrf-token": f.dataset.csrf };
  } else {
    if (f.password.value !== f.confirm.value) {
      showError(f, new Error("The two passwords differ."));
      return;
    }
    body = { password: f.password.value };
  }
  try {
    await api("POST", `/v1/invitations/${encodeURIComponent(f.dataset.token)}/accept`, body, headers);
    f.hidden = true;
    const done = document.querySelector("[data-done]");
    done.hidden = false;
    done.querySelector("a")?.focus();
  } catch (err) {
    showError(f, err);
  }
});

// --- Audit Logs: custom range, load more, export. -----------------------------------------------

const filters = document.querySelector("[data-filters]");
if (filters) {
  const range = filters.querySelector("[data-range]");
  const sync = () => filters.querySelectorAll("[data-custom]").forEach((el) => { el.hidden = range.value !== "custom"; });
  range.addEventListener("change", sync);
  filters.addEventListener("submit", () => {
    // Custom times are entered in the zone the page shows; the server needs the offset.
    const offset = useUtc() ? 0 : -new Date().getTimezoneOffset();
    filters.querySelector("[data-tz-offset]").value = String(offset);
    // Empty fields stay out of the URL, so shared links are short.
    for (const el of filters.elements) {
      if (el.name && el.value === "" && el.type !== "hidden") el.disabled = true;
    }
    if (range.value !== "custom") filters.querySelectorAll("[data-custom] input, [data-tz-offset]").forEach((el) => { el.disabled = true; });
  });
}

document.querySelector("[data-load-more]")?.addEventListener("click", async (e) => {
  e.preventDefault();
  const button = e.currentTarget;
  const org = meta("org");
  const tbody = document.querySelector("[data-rows]");
  button.setAttribute("aria-busy", "true");
  try {
    const r = await fetch(`/orgs/${encodeURIComponent(org)}/logs/rows?${button.dataset.query}&cursor=${encodeURIComponent(button.dataset.cursor)}`, { credentials: "same-origin" });
    if (!r.ok) throw new Error(await r.text());
    const before = tbody.rows.length;
    tbody.insertAdjacentHTML("beforeend", await r.text());
    renderTimes(tbody);
    tbody.rows[before]?.querySelector("a")?.focus();
    const next = r.headers.get("x-next-cursor");
    if (next) {
      button.dataset.cursor = next;
      button.href = `?${button.dataset.query}&cursor=${encodeURIComponent(next)}`;
    } else {
      button.closest("p").remove();
    }
  } catch (err) {
    button.textContent = `Could not load more: ${err.message}`;
  } finally {
    button.removeAttribute("aria-busy");
  }
});

const exportDialog = document.querySelector("[data-export-dialog]");
document.querySelector("[data-open-export]")?.addEventListener("click", () => {
  exportDialog.showModal();
  exportDialog.querySelector("input[name=name]").focus();
});
exportDialog?.querySelector("[data-close]").addEventListener("click", () => exportDialog.close());
exportDialog?.querySelector("[data-export]").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = e.currentTarget;
  showError(f, null);
  const body = { name: f.elements.name.value, format: f.elements.format.value, filters: JSON.parse(f.dataset.filtersJson) };
  try {
    await api("POST", `/v1/orgs/${encodeURIComponent(f.dataset.org)}/exports`, body);
    location.href = `/orgs/${encodeURIComponent(f.dataset.org)}/exports`;
  } catch (err) {
    showError(f, err);
  }
});

// --- Export History: status without a reload. ---------------------------------------------------

const exportsTable = document.querySelector("[data-exports]");
function humanSize(b) {
  if (b >= 1 << 30) return `${(b / (1 << 30)).toFixed(1)} GB`;
  if (b >= 1 << 20) return `${(b / (1 << 20)).toFixed(1)} MB`;
  if (b >= 1 << 10) return `${(b / 1024).toFixed(1)} KB`;
  return `${b} B`;
}
async function pollExports() {
  const org = exportsTable.dataset.org;
  const busy = () => [...exportsTable.querySelectorAll("tr[data-status]")].some((tr) => ["pending", "running"].includes(tr.dataset.status));
  while (busy()) {
    await new Promise((ok) => setTimeout(ok, 1000));
    let list;
    try { list = (await api("GET", `/v1/orgs/${encodeURIComponent(org)}/exports`)).exports; } catch { continue; }
    for (const x of list) {
      const tr = exportsTable.querySelector(`tr[data-export-id="${CSS.escape(x.id)}"]`);
      if (!tr || tr.dataset.status === x.status) continue;
      tr.dataset.status = x.status;
      const status = tr.querySelector("[data-cell=status]");
      status.textContent = x.status;
      status.className = `status ${x.status}`;
      tr.querySelector("[data-cell=rows]").textContent = String(x.row_count);
      tr.querySelector("[data-cell=size]").textContent = humanSize(x.size_bytes);
      if (x.status === "completed") {
        const a = document.createElement("a");
        a.className = "button";
        a.href = `/v1/orgs/${encodeURIComponent(org)}/exports/${encodeURIComponent(x.id)}/download`;
        a.setAttribute("download", "");
        a.textContent = "Download";
        const hidden = document.createElement("span");
        hidden.className = "visually-hidden";
        hidden.textContent = ` ${x.name}`;
        a.append(hidden);
        tr.querySelector("[data-cell=download]").replaceChildren(a);
      }
      document.querySelector("[data-exports-live]").textContent = `Export “${x.name}” is ${x.status}.`;
    }
  }
}
if (exportsTable) pollExports();

// --- Event detail: the integrity badge (verify.js does the checking). ----------------------------

async function checkBadge(badge, attempt = 0) {
  const set = (cls, text) => { badge.className = `badge ${cls}`; badge.textContent = text; };
  let result;
  try {
    const ev = await api("GET", `/v1/orgs/${encodeURIComponent(badge.dataset.org)}/events/${encodeURIComponent(badge.dataset.id)}`);
    result = await verifyEvent(ev);
  } catch (err) {
    result = { cls: "bad", text: `Integrity check FAILED: ${err.message}` };
  }
  if (result) {
    set(result.cls, result.text);
  } else if (attempt < 30) {
    set("pending", "Integrity: waiting for the next signed checkpoint…");
    setTimeout(() => checkBadge(badge, attempt + 1), 1000);
  } else {
    set("pending", "Integrity: not yet in a signed checkpoint");
  }
}
const badge = document.querySelector("[data-badge]");
if (badge) checkBadge(badge);

// --- Administration forms: sent to the JSON API, one source of validation and audit. ------------

function bodyOf(form) {
  const body = {};
  let url = form.dataset.api;
  for (const el of form.elements) {
    if (!el.name || el.disabled) continue;
    if (url.includes(`{${el.name}}`)) {
      url = url.replace(`{${el.name}}`, encodeURIComponent(el.value));
      continue;
    }
    // Left empty, an optional field is not sent at all.
    if (el.hasAttribute("data-optional") && el.value.trim() === "") continue;
    // `filter.actions` goes into body.filter.actions.
    const path = el.name.split(".");
    let target = body;
    for (const p of path.slice(0, -1)) target = target[p] ??= {};
    const name = path[path.length - 1];
    if (el.hasAttribute("data-array")) {
      target[name] ??= [];
      if (el.checked) target[name].push(el.value);
    } else if (el.hasAttribute("data-bool")) {
      target[name] = el.checked;
    } else if (el.hasAttribute("data-int")) {
      target[name] = Number.parseInt(el.value, 10);
    } else if (el.hasAttribute("data-map")) {
      // One field per group: its provider groups, comma-separated, become group_map rules.
      target[name] ??= [];
      for (const value of el.value.split(",").map((v) => v.trim()).filter(Boolean)) {
        target[name].push({ value, group: el.dataset.map });
      }
    } else if (el.hasAttribute("data-split")) {
      target[name] = el.value.split(/[\s,;]+/).filter(Boolean);
    } else if (el.hasAttribute("data-json")) {
      target[name] = JSON.parse(el.value);
    } else if (el.type !== "submit" && el.type !== "button") {
      target[name] = el.value;
    }
  }
  return { url, body };
}

function copyButton(text, label) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.addEventListener("click", async () => {
    try { await navigator.clipboard.writeText(text); b.textContent = "Copied"; } catch { b.textContent = "Select and copy the text above"; }
  });
  return b;
}

function showResult(kind, data) {
  const panel = document.querySelector("[data-result]");
  panel.replaceChildren();
  const add = (tag, text) => { const el = document.createElement(tag); el.textContent = text; panel.append(el); return el; };
  if (kind === "secret") {
    add("p", `API key “${data.name}” created. Copy its secret now: it is not shown again.`);
    add("code", data.secret).dataset.secret = "";
    panel.append(copyButton(data.secret, "Copy the key"));
  } else if (kind === "destination") {
    if (!data.secret) { location.reload(); return; }
    add("p", `Destination “${data.name}” created. Copy its signing secret now: it is not shown again. Your receiver checks each request's Trail-Signature with it.`);
    add("code", data.secret).dataset.secret = "";
    panel.append(copyButton(data.secret, "Copy the secret"));
    const reload = add("button", "Done");
    reload.type = "button";
    reload.addEventListener("click", () => location.reload());
  } else if (kind === "rule") {
    if (!data.webhook_secret) { location.reload(); return; }
    add("p", `Rule “${data.name}” created. Copy its webhook's signing secret now: it is not shown again.`);
    add("code", data.webhook_secret).dataset.secret = "";
    panel.append(copyButton(data.webhook_secret, "Copy the secret"));
    const reload = add("button", "Done");
    reload.type = "button";
    reload.addEventListener("click", () => location.reload());
  } else if (kind === "recovery") {
    add("p", "Two-factor sign-in is on. Keep these recovery codes somewhere safe: each signs you in once if you lose your app. They are not shown again.");
    const list = document.createElement("ol");
    list.className = "codes";
    list.dataset.recoveryCodes = "";
    for (const c of data.recovery_codes) list.append(Object.assign(document.createElement("li"), { textContent: c }));
    panel.append(list, copyButton(data.recovery_codes.join("\n"), "Copy the codes"));
    const done = add("button", "Done");
    done.type = "button";
    done.addEventListener("click", () => location.reload());
  } else if (kind === "password") {
    add("p", "Password changed. Your other sessions were signed out.");
  } else if (kind === "links") {
    add("p", "Invitations created. Send each person their link (it works once, until it expires):");
    for (const i of data.invitations) {
      add("p", i.email);
      add("code", i.accept_url).dataset.acceptUrl = "";
      panel.append(copyButton(i.accept_url, `Copy the link for ${i.email}`));
    }
  }
  panel.hidden = false;
  panel.setAttribute("tabindex", "-1");
  panel.focus();
}

for (const form of document.querySelectorAll("form[data-api]")) {
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    showError(form, null);
    const method = form.dataset.method || "POST";
    const { url, body } = bodyOf(form);
    const send = Object.keys(body).length > 0 || method === "POST" || method === "PATCH";
    try {
      const data = await api(method, url, send ? body : undefined);
      if (form.dataset.show) {
        showResult(form.dataset.show, data);
        form.reset();
      } else if (form.dataset.redirect) {
        location.href = form.dataset.redirect;
      } else {
        location.reload();
      }
    } catch (err) {
      showError(form, err);
    }
  });
}

renderTimes();
