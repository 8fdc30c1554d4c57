// Overview: the queue by status, outcomes of the last hour, oldest pending age, report
// backlog, scheduler state, suspensions, plugins. Refreshed every 5 s (polling).

import { get, post } from "../api.js";
import { age, fill, h, when } from "../dom.js";
import { button, tenantPicker } from "./common.js";

const STATUSES = ["pending", "scheduled", "deferred", "sending", "sent", "error"];
const REFRESH_MS = 5000;

export async function render(ctx) {
  const admin = ctx.session.isAdmin;
  const tenant = admin ? ctx.params.get("tenant_id") || "" : ctx.session.tenantId;
  const head = h("div", { class: "toolbar" }, h("h1", null, "Overview"));
  if (admin) {
    const picker = await tenantPicker(ctx, tenant, (value) =>
      ctx.go(ctx.link("overview", { tenant_id: value === "*" ? "" : value })),
    );
    if (picker) {
      const select = picker.querySelector("select");
      select.prepend(h("option", { value: "*", selected: !tenant }, "every tenant"));
      head.append(picker);
    }
  }
  head.append(
    button("Run now", () =>
      ctx.confirmAction(
        "Wake dispatch and delivery reports now?",
        () => post("/commands/run-now", tenant ? { tenant_id: tenant } : {}),
        () => "Dispatch and reports woken.",
      ),
      { dataset: { test: "run-now" } },
    ),
  );
  const body = h("div", { class: "cards" });
  const stamp = h("p", { class: "muted", dataset: { test: "overview-updated" } });
  ctx.main.append(head, body, stamp);

  const refresh = async () => {
    const data = await get("/overview", tenant ? { tenant_id: tenant } : {});
    if (!ctx.alive()) return;
    fill(body, ...cards(ctx, data, tenant));
    stamp.textContent = `Updated ${when(data.generated_at)} (every ${REFRESH_MS / 1000} s)`;
  };
  await ctx.every(refresh, REFRESH_MS);
}

function card(title, test, ...content) {
  return h("div", { class: "card", dataset: { test } }, h("h2", null, title), ...content);
}

function cards(ctx, data, tenant) {
  const scope = tenant ? { tenant_id: tenant } : {};
  const queue = h(
    "table",
    { class: "counts" },
    h(
      "tbody",
      null,
      STATUSES.map((s) =>
        h(
          "tr",
          { dataset: { status: s } },
          h("th", null, h("a", { href: ctx.link("messages", { ...scope, status: s }) }, s)),
          h("td", { class: "num", dataset: { test: `count-${s}` } }, data.counts[s] ?? 0),
        ),
      ),
    ),
  );
  const recent = data.recent;
  const minutes = Math.round(recent.window_seconds / 60);
  const scheduler = data.scheduler_active ? "running" : "suspended";
  const out = [
    card("Queue", "card-queue", queue),
    card(
      `Last ${minutes} min`,
      "card-recent",
      h(
        "table",
        { class: "counts" },
        h(
          "tbody",
          null,
          ["sent", "error", "deferred"].map((k) =>
            h("tr", null, h("th", null, k), h("td", { class: "num", dataset: { test: `recent-${k}` } }, recent[k] ?? 0)),
          ),
        ),
      ),
      h("p", { class: "muted" }, `${((recent.sent ?? 0) / minutes).toFixed(1)} sent per minute`),
    ),
    card(
      "Waiting",
      "card-waiting",
      h("p", null, "Oldest pending: ", h("strong", { dataset: { test: "oldest-pending" } }, age(data.oldest_pending_age))),
      h("p", null, "Report backlog: ", h("strong", { dataset: { test: "report-backlog" } }, data.report_backlog)),
    ),
    card(
      "Scheduler",
      "card-scheduler",
      h("p", null, h("span", { class: `badge s-${scheduler}`, dataset: { test: "scheduler-state" } }, scheduler)),
      ctx.session.isAdmin
        ? button(
            data.scheduler_active ? "Suspend scheduler" : "Activate scheduler",
            () =>
              ctx.confirmAction(
                data.scheduler_active
                  ? "Suspend the whole scheduler (no tenant is dispatched)?"
                  : "Activate the scheduler?",
                () => post(data.scheduler_active ? "/commands/suspend" : "/commands/activate", {}),
                (a) => `Scheduler ${a.scheduler_active ? "running" : "suspended"}.`,
              ),
            { dataset: { test: "scheduler-toggle" } },
          )
        : null,
      h("p", { class: "muted" }, `${data.instance} · ${data.version} · ${data.database}`),
    ),
    card(
      "Suspended",
      "card-suspended",
      data.suspensions.length
        ? h(
            "ul",
            { class: "plain" },
            data.suspensions.map((s) =>
              h(
                "li",
                { dataset: { test: "suspension" } },
                `${s.tenant_id} · ${s.batch_code === "*" ? "whole tenant" : "batch " + s.batch_code} `,
                button(
                  "Activate",
                  () =>
                    ctx.confirmAction(
                      `Activate ${s.batch_code === "*" ? "tenant " + s.tenant_id : "batch " + s.batch_code}?`,
                      () =>
                        post("/commands/activate", {
                          tenant_id: s.tenant_id,
                          ...(s.batch_code === "*" ? {} : { batch_code: s.batch_code }),
                        }),
                      () => "Activated.",
                    ),
                  { class: "small" },
                ),
              ),
            ),
          )
        : h("p", { class: "muted" }, "Nothing suspended."),
    ),
    card(
      "Plugins",
      "card-plugins",
      h("ul", { class: "plain" }, data.plugins.map((p) => h("li", null, p))),
    ),
  ];
  return out;
}
