// The console's shell: sign-in, navigation, the router (#/page?query), polling that stops
// when the page changes, confirmations and notices. Pages live in pages/*.js and export
// render(ctx).

import { ApiError, call, get, onRefused, token } from "./api.js";
import { fill, h } from "./dom.js";

const PAGES = {
  overview: () => import("./pages/overview.js"),
  messages: () => import("./pages/messages.js"),
  message: () => import("./pages/message.js"),
  accounts: () => import("./pages/accounts.js"),
  tenants: () => import("./pages/tenants.js"),
  suppressions: () => import("./pages/suppressions.js"),
  log: () => import("./pages/log.js"),
};

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");

let session = null; // {status, isAdmin, tenantId, plugins}
let timers = [];
let generation = 0; // bumped on every navigation: late answers of a left page are dropped

function stopTimers() {
  timers.forEach(clearInterval);
  timers = [];
}

function parseHash() {
  const raw = window.location.hash.replace(/^#\/?/, "");
  const [path, qs] = raw.split("?");
  const parts = path.split("/").map(decodeURIComponent);
  return { page: parts[0] || "overview", arg: parts.slice(1).join("/"), params: new URLSearchParams(qs || "") };
}

/** "#/messages?status=sent" from a page name and params (empty values left out). */
export function link(page, params, arg) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== null && v !== undefined && v !== "") qs.set(k, v);
  }
  const s = qs.toString();
  return `#/${page}${arg !== undefined ? "/" + encodeURIComponent(arg) : ""}${s ? "?" + s : ""}`;
}

function navItems() {
  const items = [
    ["overview", "Overview"],
    ["messages", "Messages"],
    ["accounts", "Accounts"],
  ];
  if (session.isAdmin && session.plugins.includes("multitenancy")) items.push(["tenants", "Tenants"]);
  if (session.plugins.includes("bounce")) items.push(["suppressions", "Suppressions"]);
  if (session.isAdmin) items.push(["log", "Command log"]);
  return items;
}

function renderChrome(current) {
  nav.hidden = false;
  fill(
    nav,
    navItems().map(([page, title]) =>
      h("a", { href: `#/${page}`, class: page === current ? "active" : null, dataset: { nav: page } }, title),
    ),
  );
  const label = session.isAdmin ? "admin" : `tenant ${session.tenantId}`;
  fill(
    who,
    h("span", { dataset: { test: "who" } }, `${session.status.instance} · ${label}`),
    h("button", { type: "button", class: "link", onclick: signOut, dataset: { test: "sign-out" } }, "Sign out"),
  );
}

function signOut() {
  token.clear();
  session = null;
  window.location.hash = "#/overview";
  showSignIn();
}

function showSignIn(message) {
  stopTimers();
  generation += 1;
  nav.hidden = true;
  fill(nav);
  fill(who);
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "off",
    required: true,
    placeholder: "X-API-Token",
    size: 48,
  });
  const error = h("p", { class: "error", role: "alert", dataset: { test: "signin-error" }, hidden: !message }, message || "");
  const button = h("button", { type: "submit", dataset: { test: "signin" } }, "Sign in");
  const form = h(
    "form",
    { class: "signin", dataset: { test: "signin-form" } },
    h("h1", null, "Sign in"),
    h(
      "p",
      null,
      "Use the admin token (everything) or a tenant's API key (that tenant only). " +
        "It is kept in this browser tab only and sent to this server's API.",
    ),
    h("label", { for: "token" }, "Token"),
    input,
    button,
    error,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    error.hidden = true;
    try {
      const status = await call("GET", "/status", { tokenValue: input.value.trim() });
      token.set(input.value.trim());
      startSession(status);
    } catch (err) {
      error.textContent = signInError(err);
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
  fill(main, form);
  input.focus();
}

function signInError(err) {
  if (err instanceof ApiError && err.status === 401) {
    return `The server refused this token: ${err.message} (${err.code}). Check it and try again.`;
  }
  if (err instanceof ApiError && err.status === 403) {
    return `This token may not sign in: ${err.message} (${err.code}).`;
  }
  return `Cannot sign in: ${err.message}`;
}

function startSession(status) {
  const kind = status.token ? status.token.kind : "admin";
  session = {
    status,
    isAdmin: kind === "admin",
    tenantId: status.token ? status.token.tenant_id : null,
    plugins: status.plugins || [],
  };
  route();
}

function notice(message, kind = "info") {
  const box = document.getElementById("notice");
  if (!box) return;
  fill(box, h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status", dataset: { test: `notice-${kind}` } }, message));
}

async function route() {
  if (!session) return;
  stopTimers();
  generation += 1;
  const mine = generation;
  const { page, arg, params } = parseHash();
  const load = PAGES[page] ? page : "overview";
  renderChrome(load);
  const body = h("section", { class: "page", dataset: { page: load } });
  fill(main, h("div", { id: "notice" }), body);
  const ctx = {
    main: body,
    arg,
    params,
    session,
    link,
    notice,
    alive: () => mine === generation,
    go: (hash) => {
      window.location.hash = hash;
    },
    /** Run fn now and every ms milliseconds while this page is shown. */
    every: (fn, ms) => {
      const tick = async () => {
        if (mine !== generation) return;
        try {
          await fn();
        } catch (err) {
          if (mine === generation) notice(err.message, "error");
        }
      };
      timers.push(setInterval(tick, ms));
      return tick();
    },
    /** Ask first; then run the action and report its outcome. */
    confirmAction: async (question, action, done) => {
      if (!window.confirm(question)) return;
      try {
        const answer = await action();
        if (done) notice(done(answer), "ok");
      } catch (err) {
        notice(`${err.message}${err.code ? " (" + err.code + ")" : ""}`, "error");
      }
    },
    tenants: () => tenantIds(),
  };
  try {
    const module = await PAGES[load]();
    await module.render(ctx);
  } catch (err) {
    if (mine !== generation) return;
    if (err instanceof ApiError && err.status === 401) return; // handled by onRefused
    fill(body, h("p", { class: "error", role: "alert", dataset: { test: "page-error" } }, `${err.message}${err.code ? " (" + err.code + ")" : ""}`));
  }
}

let tenantCache = null;
/** The tenant ids an admin may pick (multitenancy installed), "default" first. */
async function tenantIds() {
  if (!session.isAdmin) return [session.tenantId];
  if (!session.plugins.includes("multitenancy")) return ["default"];
  if (tenantCache && tenantCache.at > Date.now() - 10000) return tenantCache.ids;
  const ids = ["default"];
  let cursor = null;
  do {
    const page = await get("/tenants", { limit: 1000, cursor });
    for (const t of page.tenants) if (!ids.includes(t.id)) ids.push(t.id);
    cursor = page.next_cursor;
  } while (cursor);
  tenantCache = { at: Date.now(), ids };
  return ids;
}
export function forgetTenants() {
  tenantCache = null;
}

onRefused((err) => {
  token.clear();
  session = null;
  showSignIn(`Your token was refused: ${err.message} (${err.code}). Sign in again.`);
});

window.addEventListener("hashchange", route);

async function boot() {
  const saved = token.get();
  if (!saved) return showSignIn();
  try {
    startSession(await call("GET", "/status", { tokenValue: saved }));
  } catch (err) {
    token.clear();
    showSignIn(signInError(err));
  }
}

boot();
