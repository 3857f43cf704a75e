// The fedsparsify dashboard: reads the REST API's GET endpoints with the session cookie and
// redraws while rounds run. Everything from the server is put into the page as text nodes
// (textContent), never as markup, so names and reported metrics cannot inject anything.

import { lineChart } from "./charts.js";

const view = document.getElementById("view");
const live = document.getElementById("live");
const STATES = new Set([
  "enrolling", "running", "completed", "failed", "open", "collecting", "aggregating", "closed",
]);
let session = null;
let timer = null;
let generation = 0;
let lastKey = null;
let showAllRounds = false;
let leaving = false; // signing out: polls stop, and their 401s must not navigate
/** Rounds listed before the rest are folded away. */
const LATEST_ROUNDS = 12;

class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

async function api(path) {
  const response = await fetch(path, {
    headers: { Accept: "application/json" },
    credentials: "same-origin",
    cache: "no-store",
  });
  if (response.status === 401) {
    // The session ended (expired, signed out elsewhere, token revoked): back to the form.
    if (!leaving) window.location.replace("/");
    throw new ApiError(401, "unauthorized", "signed out");
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, body?.error, body?.detail);
  return body;
}

// -- small DOM helpers ---------------------------------------------------------------------

function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "title") node.title = value;
    else if (key === "href") node.setAttribute("href", value);
    else node.dataset[key] = value;
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function badge(state) {
  return h("span", { class: STATES.has(state) ? `badge ${state}` : "badge", text: state });
}

function fmtBytes(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "—";
  if (n < 1000) return `${Math.round(n)} B`;
  const units = ["kB", "MB", "GB", "TB"];
  let value = n;
  let unit = "B";
  for (const u of units) {
    if (value < 1000) break;
    value /= 1000;
    unit = u;
  }
  return `${value.toFixed(value < 10 ? 2 : value < 100 ? 1 : 0)} ${unit}`;
}

function fmtNumber(n, digits = 3) {
  return n === null || n === undefined || Number.isNaN(n) ? "—" : Number(n).toFixed(digits);
}

function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? "—" : d.toLocaleString();
}

function fmtRelative(iso) {
  if (!iso) return "";
  const seconds = Math.round((new Date(iso).getTime() - Date.now()) / 1000);
  const abs = Math.abs(seconds);
  if (abs < 2) return "just now";
  const span = abs < 90 ? `${abs} s` : abs < 5400 ? `${Math.round(abs / 60)} min` : `${(abs / 3600).toFixed(1)} h`;
  return seconds >= 0 ? `in ${span}` : `${span} ago`;
}

function shortId(id) {
  return id ? `${id.slice(0, 8)}…` : "—";
}

function fact(key, value, extra) {
  return h("div", { class: "fact" }, h("div", { class: "k", text: key }), h("div", { class: "v" }, value), extra);
}

function table(headers, rows, { id } = {}) {
  const head = h("tr", {}, headers.map(([label, cls]) => h("th", { class: cls, text: label })));
  return h("div", { class: "scroll" }, h("table", { table: id }, h("thead", {}, head), h("tbody", {}, rows)));
}

// -- views ---------------------------------------------------------------------------------

function route() {
  const match = window.location.hash.match(/^#\/federations\/([0-9a-f]{1,64})$/);
  if (match) return { name: "federation", id: match[1] };
  if (!session.is_admin) return { name: "federation", id: session.federation_id };
  return { name: "list" };
}

async function loadList() {
  return { federations: await api("/v1/federations") };
}

function renderList({ federations }) {
  const rows = federations.map((f) => h("tr", { federation: f.id },
    h("td", {}, h("a", { href: `#/federations/${f.id}`, text: f.name })),
    h("td", {}, badge(f.state)),
    h("td", { class: "num", text: f.current_round === null ? "—" : `${f.current_round + 1} / ${f.rounds}` }),
    h("td", { class: "num", text: String(f.clients) }),
    h("td", { class: "mono", text: f.id }),
    h("td", { text: fmtTime(f.created_at) }),
  ));
  return [
    h("div", { class: "title" }, h("h1", { text: "Federations" }),
      h("span", { class: "muted", text: `${federations.length} on this aggregator` })),
    h("section", { class: "panel" }, federations.length
      ? table([["Name"], ["State"], ["Round", "num"], ["Sites", "num"], ["Id"], ["Created"]], rows, { id: "federations" })
      : h("p", { class: "muted", text: "No federation yet: create one with `fedsparsify federation create`." })),
  ];
}

async function loadFederation(id) {
  const base = `/v1/federations/${encodeURIComponent(id)}`;
  const [fed, rounds] = await Promise.all([api(base), api(`${base}/rounds`)]);
  return { fed, rounds };
}

function sum(values) {
  return values.reduce((a, b) => a + b, 0);
}

function mean(values) {
  return values.length ? sum(values) / values.length : NaN;
}

/** Rounds merged from the round list (deadline, uploads) and the history (bytes, metrics). */
function mergedRounds(fed, rounds) {
  const history = new Map(fed.history.map((r) => [r.index, r]));
  return rounds.map((r) => ({ ...(history.get(r.index) ?? {}), ...r, history: history.get(r.index) ?? {} }));
}

function renderFederation({ fed, rounds }) {
  const names = new Map(fed.participants.map((p) => [p.id, p.name]));
  const nameOf = (id) => names.get(id) ?? shortId(id);
  const merged = mergedRounds(fed, rounds);
  const spec = fed.spec;
  const current = merged.length ? merged[merged.length - 1] : null;
  const hasAttempt = merged.some((r) => "attempt" in r);

  const keys = fed.keys;
  const members = fed.participants.filter((p) => !p.removed);
  const removed = fed.participants.length - members.length;
  const keyText = keys.required ? `${keys.envelopes_sealed} sealed` : "none (plaintext)";
  const keyNote = keys.required
    ? `${keys.context_uploaded ? "context stored" : "no context yet"}, ${keys.awaiting_envelope.length} waiting`
    : null;
  const facts = h("div", { class: "facts" },
    fact("State", badge(fed.state), fed.reason ? h("div", { class: "small", text: fed.reason }) : null),
    fact("Round", current ? `${current.index + 1} of ${spec.rounds}` : `0 of ${spec.rounds}`,
      current ? h("div", { class: "small" }, badge(current.state)) : null),
    fact("Method", spec.method, h("div", { class: "small", text: `schedule: ${spec.schedule?.kind ?? "—"}` })),
    fact("Encryption", spec.crypto_preset,
      spec.pairwise_masks ? h("div", { class: "small", text: "pairwise masks on every upload" }) : null),
    fact("Sites", `${members.length}`, h("div", { class: "small",
      text: `min ${spec.min_clients}, quorum ${spec.quorum}${removed ? `, ${removed} removed` : ""}` })),
    fact("Weighting", spec.weighting === "equal" ? "equal" : "by samples",
      h("div", { class: "small", text: `no site above ${Math.round(100 * spec.max_weight_share)} %` })),
    fact("Keys", keyText, keyNote ? h("div", { class: "small", text: keyNote }) : null),
    fact("Created", fmtTime(fed.created_at), fed.finished_at ? h("div", { class: "small", text: `finished ${fmtTime(fed.finished_at)}` }) : null),
  );

  // Charts: sparsity (mean of what the sites report), upload bytes and validation MAE per site.
  const siteIds = fed.participants.map((p) => p.id);
  const perSite = (pick) => siteIds.map((id) => ({
    name: nameOf(id),
    points: fed.history.flatMap((r) => {
      const value = pick(r, id);
      return value === undefined || value === null || Number.isNaN(value) ? [] : [[r.index, value]];
    }),
  }));
  const sparsity = [{
    name: "sparsity (mean reported by the sites)",
    points: fed.history.flatMap((r) => {
      const values = Object.values(r.metrics).map((m) => m.sparsity).filter((v) => typeof v === "number");
      return values.length ? [[r.index, mean(values)]] : [];
    }),
  }];
  const bytes = perSite((r, id) => {
    const channels = r.upload_bytes[id];
    return channels ? sum(Object.values(channels)) : undefined;
  });
  const mae = perSite((r, id) => r.metrics[id]?.val_mae);
  const charts = h("div", { class: "charts" },
    lineChart({ id: "sparsity", title: "Sparsity", series: sparsity, yMin: 0, yMax: 1, yFormat: (v) => v.toFixed(2) }),
    lineChart({ id: "bytes", title: "Upload bytes per site", series: bytes, yMin: 0, yFormat: fmtBytes }),
    lineChart({ id: "mae", title: "Validation MAE per site (reported)", series: mae, yFormat: (v) => v.toFixed(2),
      emptyText: "no site has reported val_mae yet" }),
  );

  // Roster: declared samples and their share; the weight the latest round gives each site
  // (the aggregator's, after equal weighting or the cap on any one share); liveness.
  const totalSamples = sum(members.map((p) => p.num_samples));
  const weights = current?.weights ?? {};
  const pct = (x) => `${(100 * x).toFixed(1)} %`;
  const roster = fed.participants.map((p) => h("tr", { client: p.id, removed: p.removed ? "true" : null },
    h("td", {}, h("strong", { text: p.name }), h("div", { class: "small mono", text: p.id })),
    h("td", { class: "mono", text: p.fingerprint ?? "—" }),
    h("td", { class: "num", text: p.num_samples.toLocaleString() }),
    h("td", { class: "num", text: p.removed ? "—" : pct(p.num_samples / totalSamples) }),
    h("td", { class: "num", text: p.id in weights ? pct(weights[p.id]) : "—" }),
    h("td", { text: p.is_dealer ? "key dealer" : p.has_envelope ? "holds the key" : (keys.required ? "waiting for key" : "—") }),
    h("td", {}, p.removed ? h("span", { class: "badge failed", text: "removed" })
      : [h("span", { class: p.active ? "dot on" : "dot" }), p.active ? "active" : "inactive"],
    h("div", { class: "small", text: p.last_seen_at ? `seen ${fmtRelative(p.last_seen_at)}` : "" })),
  ));

  const newestFirst = [...merged].reverse();
  const shown = showAllRounds ? newestFirst : newestFirst.slice(0, LATEST_ROUNDS);
  const roundRows = shown.map((r) => {
    const uploadBytes = sum(Object.values(r.history.upload_bytes ?? {}).flatMap((c) => Object.values(c)));
    const open = r.state === "open" || r.state === "collecting";
    return h("tr", { round: String(r.index), state: r.state },
      h("td", { class: "num", text: String(r.index) }),
      h("td", {}, badge(r.state), r.reason ? h("div", { class: "small", text: r.reason }) : null),
      hasAttempt ? h("td", { class: "num", text: r.attempt ?? "—" }) : null,
      h("td", { title: r.participants.map(nameOf).join(", ") }, `${r.participants.length} `,
        h("span", { class: "small", text: r.participants.map(nameOf).join(", ") })),
      h("td", { class: "num", text: `${r.uploaded.length} / ${r.participants.length}` }),
      h("td", { class: "num", text: uploadBytes ? fmtBytes(uploadBytes) : "—", bytes: String(uploadBytes),
        title: `${uploadBytes.toLocaleString()} bytes` }),
      h("td", { class: "num", text: r.history.aggregation_s !== undefined ? `${r.history.aggregation_s.toFixed(3)} s` : "—" }),
      h("td", { text: fmtTime(r.deadline) }, open ? h("div", { class: "small", text: fmtRelative(r.deadline) }) : null),
      h("td", { text: r.closed_at ? fmtTime(r.closed_at) : "—" }),
    );
  });
  const roundHeaders = [["Round", "num"], ["State"], hasAttempt ? ["Attempt", "num"] : null, ["Participants"],
    ["Uploaded", "num"], ["Bytes up, all sites", "num"], ["Aggregation", "num"], ["Deadline"], ["Closed"]].filter(Boolean);

  return [
    h("div", { class: "title" },
      session.is_admin ? h("a", { href: "#/", text: "Federations /" }) : null,
      h("h1", { text: fed.name, federationName: "" }),
      h("span", { class: "mono muted", text: fed.id })),
    facts,
    charts,
    h("section", { class: "panel" }, h("h2", { text: "Sites" }),
      table([["Site"], ["Fingerprint"], ["Samples", "num"], ["Share of samples", "num"],
        [current ? `Weight, round ${current.index}` : "Weight", "num"], ["Key"], ["Liveness"]],
      roster, { id: "roster" })),
    h("section", { class: "panel" }, h("h2", { text: "Rounds" }),
      merged.length ? table(roundHeaders, roundRows, { id: "rounds" })
        : h("p", { class: "muted", text: "No round has opened yet." }),
      merged.length > LATEST_ROUNDS ? foldButton(merged.length) : null),
  ];
}

function foldButton(count) {
  const button = h("button", {
    class: "fold", text: showAllRounds ? `show the latest ${LATEST_ROUNDS} rounds` : `show all ${count} rounds`,
  });
  button.type = "button";
  button.addEventListener("click", () => {
    showAllRounds = !showAllRounds;
    generation += 1; // a refresh still in flight draws nothing and stops
    lastKey = null;
    window.clearTimeout(timer);
    refresh(generation);
  });
  return button;
}

function renderError(error) {
  const what = error.status === 403 || error.status === 404
    ? "This federation is not visible to you (or does not exist)."
    : "The aggregator could not be read.";
  return [h("section", { class: "panel" }, h("p", { class: "error", text: what }),
    h("p", { class: "small", text: error.message }))];
}

// -- the refresh loop ----------------------------------------------------------------------

async function refresh(run) {
  const where = route();
  try {
    const data = where.name === "list" ? await loadList() : await loadFederation(where.id);
    if (run !== generation) return;
    const key = JSON.stringify(data);
    if (key !== lastKey) {
      lastKey = key;
      view.replaceChildren(...(where.name === "list" ? renderList(data) : renderFederation(data)));
      if (where.name === "federation") document.title = `${data.fed.name} · fedsparsify`;
    }
    view.dataset.updated = new Date().toISOString();
    live.className = "live on";
    live.textContent = `live · ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    if (run !== generation || error.status === 401) return;
    if (error instanceof ApiError && (error.status === 403 || error.status === 404)) {
      lastKey = null;
      view.replaceChildren(...renderError(error));
      live.className = "live";
      live.textContent = "not visible";
      return; // nothing to poll
    }
    live.className = "live stale";
    live.textContent = "connection lost, retrying";
  }
  if (run === generation) timer = window.setTimeout(() => refresh(run), session.poll_s * 1000);
}

function start() {
  generation += 1;
  lastKey = null;
  window.clearTimeout(timer);
  view.replaceChildren(h("p", { class: "muted", text: "Loading…" }));
  refresh(generation);
}

async function main() {
  const me = await api("/dashboard/session");
  session = { ...me, is_admin: me.role === "admin" };
  document.getElementById("who").textContent = session.is_admin
    ? "signed in as admin"
    : `signed in as site ${me.name ?? me.client_id}`;
  window.addEventListener("hashchange", start);
  document.querySelector("form.sign-out").addEventListener("submit", () => {
    leaving = true;
    generation += 1;
    window.clearTimeout(timer);
  });
  start();
}

main().catch((error) => {
  if (error.status !== 401) view.replaceChildren(...renderError(error));
});
