// A message's story: its fields and recipients, every event in order with its metadata (SMTP
// replies, per-recipient outcomes, bounces, PEC receipts) and whether the client acknowledged
// the report of each. Refreshed every 3 s. Actions: re-queue a failed message, delete an
// unsent one, suspend or activate its batch.

import { ApiError, get, post } from "../api.js";
import { badge, fields, fill, h, table, text, when } from "../dom.js";
import { button, pageTenant } from "./common.js";

const REFRESH_MS = 3000;
const UNSENT = ["pending", "scheduled", "deferred"];
const NOT_REPORTED = ["queued", "requeued"];

export async function render(ctx) {
  const id = ctx.arg;
  const tenant = pageTenant(ctx);
  const scope = ctx.session.isAdmin ? { tenant_id: tenant } : {};
  const title = h("h1", null, "Message ", h("code", { dataset: { test: "message-id" } }, id));
  const actions = h("div", { class: "toolbar", dataset: { test: "actions" } });
  const body = h("div", { class: "story" });
  const stamp = h("p", { class: "muted", dataset: { test: "story-updated" } });
  ctx.main.append(title, actions, body, stamp);

  let lastStatus = null;
  const refresh = async () => {
    let message;
    let events;
    try {
      [message, events] = await Promise.all([
        get(`/messages/${encodeURIComponent(id)}`, scope),
        get(`/messages/${encodeURIComponent(id)}/events`, scope),
      ]);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        fill(actions);
        fill(
          body,
          h(
            "p",
            { class: "error", role: "alert", dataset: { test: "not-found" } },
            `Not found: ${err.message}.`,
          ),
        );
        return;
      }
      throw err;
    }
    if (!ctx.alive()) return;
    const m = message.message;
    if (m.status !== lastStatus) {
      lastStatus = m.status;
      fill(actions, ...messageActions(ctx, m, scope));
    }
    fill(body, ...story(m, events.events));
    stamp.textContent = `Updated ${when(Date.now() / 1000)} (every ${REFRESH_MS / 1000} s)`;
  };
  await ctx.every(refresh, REFRESH_MS);
}

function story(m, events) {
  const list = (v) => (Array.isArray(v) ? (v.length ? v.join(", ") : "—") : text(v));
  const out = [
    fields(
      [
        ["status", h("span", { dataset: { test: "status" } }, badge(m.status))],
        ["subject", h("span", { dataset: { test: "subject" } }, m.subject ?? "")],
        ["from", m.from],
        ["to", list(m.to)],
        ["cc", list(m.cc)],
        ["tenant", m.tenant_id],
        ["account", m.account_id],
        ["batch", m.batch_code],
        ["priority", m.priority],
        ["attempts", m.attempts],
        ["created", when(m.created_at)],
        ["deferred until", when(m.deferred_ts)],
        ["sent", when(m.sent_ts)],
        ["failed", when(m.error_ts)],
        ["error", h("span", { dataset: { test: "error" } }, m.error ?? "—")],
        ["Message-ID", m.message_id],
        ["attachments", list(m.attachments)],
        ["possible duplicate", m.uncertain ? "yes (retaken after a lost claim)" : "no"],
      ],
      "message-fields",
    ),
  ];
  if (m.recipients && m.recipients.length) {
    out.push(
      h("h2", null, "Recipients"),
      table(
        [
          ["address", (r) => r.address],
          ["status", (r) => badge(r.status)],
          ["code", (r) => r.code ?? ""],
          ["reply", (r) => r.reply ?? ""],
        ],
        m.recipients,
        { dataset: { test: "recipients" } },
      ),
    );
  }
  out.push(
    h("h2", null, "Events"),
    h(
      "ol",
      { class: "events", dataset: { test: "events" } },
      events.map((e) =>
        h(
          "li",
          { class: "event", dataset: { test: "event", type: e.event_type } },
          h(
            "div",
            { class: "event-head" },
            h("time", null, when(e.event_ts)),
            " ",
            badge(e.event_type),
            " ",
            h("span", { class: "desc", dataset: { test: "event-description" } }, e.description ?? ""),
            " ",
            h("span", { class: "report", dataset: { test: "event-report" } }, reportState(e)),
          ),
          metadata(e.metadata),
        ),
      ),
    ),
  );
  return out;
}

function reportState(e) {
  if (NOT_REPORTED.includes(e.event_type)) return "";
  return e.reported_ts ? `report acknowledged ${when(e.reported_ts)}` : "report not yet acknowledged";
}

function metadata(meta) {
  const entries = Object.entries(meta || {});
  if (!entries.length) return null;
  return h(
    "table",
    { class: "meta", dataset: { test: "event-metadata" } },
    h(
      "tbody",
      null,
      entries.map(([k, v]) => h("tr", null, h("th", null, k), h("td", null, h("code", null, text(v))))),
    ),
  );
}

function messageActions(ctx, m, scope) {
  const out = [];
  const tenantBody = ctx.session.isAdmin ? { tenant_id: m.tenant_id } : {};
  if (m.status === "error") {
    out.push(
      button(
        "Re-queue",
        () =>
          ctx.confirmAction(
            `Queue message ${m.id} again? Recipients that took it are not sent it again.`,
            () => post("/commands/requeue-messages", { ids: [m.id], ...tenantBody }),
            (a) => (a.requeued ? "Queued again." : "Not queued: it is no longer failed."),
          ),
        { dataset: { test: "requeue" } },
      ),
    );
  }
  if (UNSENT.includes(m.status)) {
    out.push(
      button(
        "Delete",
        () =>
          ctx.confirmAction(
            `Delete unsent message ${m.id}? It will not be sent.`,
            () => post("/commands/delete-messages", { ids: [m.id], ...tenantBody }),
            (a) => (a.removed ? "Deleted." : "Not deleted: it is being sent or was sent."),
          ),
        { dataset: { test: "delete" }, class: "danger" },
      ),
    );
  }
  if (m.batch_code) {
    out.push(
      h(
        "a",
        { class: "btn secondary", href: ctx.link("messages", { ...scope, batch_code: m.batch_code }) },
        `Batch ${m.batch_code}`,
      ),
    );
  }
  out.push(h("a", { class: "btn secondary", href: ctx.link("messages", scope) }, "All messages"));
  return out;
}
