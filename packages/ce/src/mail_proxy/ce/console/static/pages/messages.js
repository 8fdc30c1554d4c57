// Messages: server-side filters (status, account, batch, tenant for an admin, creation date),
// newest first, a page at a time (the API's cursor), search by id, and batch suspend/activate.

import { get, post } from "../api.js";
import { badge, fill, h, table, when } from "../dom.js";
import { button, field, pageTenant, tenantPicker } from "./common.js";

const STATUSES = ["", "pending", "scheduled", "deferred", "sending", "sent", "error"];
const PAGE_SIZE = 50;

/** datetime-local value ("2026-12-05T05:40") ↔ epoch seconds. */
function toEpoch(local) {
  if (!local) return "";
  const ms = new Date(local).getTime();
  return Number.isNaN(ms) ? "" : String(Math.floor(ms / 1000));
}
function toLocal(epoch) {
  if (!epoch) return "";
  const d = new Date(Number(epoch) * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export async function render(ctx) {
  const p = ctx.params;
  const tenant = pageTenant(ctx);
  const filters = {
    tenant_id: ctx.session.isAdmin ? tenant : "",
    status: p.get("status") || "",
    account_id: p.get("account_id") || "",
    batch_code: p.get("batch_code") || "",
    since: p.get("since") || "",
    until: p.get("until") || "",
  };

  // -- search by id ------------------------------------------------------------------------
  const idInput = h("input", { name: "id", placeholder: "message id", dataset: { test: "search-id" }, size: 30 });
  const search = h(
    "form",
    { class: "toolbar", dataset: { test: "search-form" } },
    h("h1", null, "Messages"),
    idInput,
    h("button", { type: "submit", dataset: { test: "search" } }, "Open"),
  );
  search.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = idInput.value.trim();
    if (id) ctx.go(ctx.link("message", { tenant_id: filters.tenant_id }, id));
  });

  // -- filters -------------------------------------------------------------------------------
  const accounts = await get("/accounts", ctx.session.isAdmin ? { tenant_id: tenant } : {});
  const status = h(
    "select",
    { name: "status", dataset: { test: "filter-status" } },
    STATUSES.map((s) => h("option", { value: s, selected: s === filters.status }, s || "any status")),
  );
  const account = h(
    "select",
    { name: "account_id", dataset: { test: "filter-account" } },
    h("option", { value: "" }, "any account"),
    accounts.accounts.map((a) => h("option", { value: a.id, selected: a.id === filters.account_id }, a.id)),
  );
  const batch = h("input", { name: "batch_code", value: filters.batch_code, size: 16, dataset: { test: "filter-batch" } });
  const since = h("input", { type: "datetime-local", name: "since", value: toLocal(filters.since), dataset: { test: "filter-since" } });
  const until = h("input", { type: "datetime-local", name: "until", value: toLocal(filters.until), dataset: { test: "filter-until" } });
  const picker = await tenantPicker(ctx, tenant);
  const form = h(
    "form",
    { class: "filters", dataset: { test: "filters" } },
    picker,
    field("Status", status),
    field("Account", account),
    field("Batch", batch),
    field("Created from", since),
    field("to", until),
    h("button", { type: "submit", dataset: { test: "apply-filters" } }, "Filter"),
    h("a", { href: ctx.link("messages", { tenant_id: filters.tenant_id }), class: "btn secondary" }, "Clear"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = picker ? picker.querySelector("select").value : filters.tenant_id;
    ctx.go(
      ctx.link("messages", {
        tenant_id: chosen,
        status: status.value,
        account_id: account.value,
        batch_code: batch.value.trim(),
        since: toEpoch(since.value),
        until: toEpoch(until.value),
      }),
    );
  });

  const batchBox = h("div", { class: "batch", dataset: { test: "batch-box" } });
  const list = h("div", { dataset: { test: "messages" } });
  const pager = h("div", { class: "pager" });
  ctx.main.append(search, form, batchBox, list, pager);

  if (filters.batch_code) await renderBatch(ctx, batchBox, tenant, filters.batch_code);

  const answer = await get("/messages", {
    ...filters,
    order: "desc",
    limit: PAGE_SIZE,
    cursor: p.get("cursor") || "",
  });
  if (!ctx.alive()) return;
  if (!answer.messages.length) {
    fill(list, h("p", { class: "muted", dataset: { test: "no-messages" } }, "No message matches."));
  } else {
    fill(
      list,
      table(
        [
          ["id", (m) => h("a", { href: ctx.link("message", { tenant_id: filters.tenant_id }, m.id), dataset: { test: "message-link" } }, m.id)],
          ["status", (m) => badge(m.status)],
          ["account", (m) => m.account_id],
          ["batch", (m) => m.batch_code ?? ""],
          ["attempts", (m) => m.attempts],
          ["created", (m) => when(m.created_at)],
          ["sent / failed", (m) => when(m.sent_ts ?? m.error_ts)],
          ["error", (m) => h("span", { class: "clip" }, m.error ?? "")],
        ],
        answer.messages,
        { dataset: { test: "messages-table" } },
      ),
    );
  }
  const here = Object.fromEntries(p.entries());
  fill(
    pager,
    p.get("cursor") ? h("a", { href: ctx.link("messages", { ...here, cursor: "" }), class: "btn secondary", dataset: { test: "first-page" } }, "First page") : null,
    answer.next_cursor
      ? h("a", { href: ctx.link("messages", { ...here, cursor: answer.next_cursor }), class: "btn", dataset: { test: "next-page" } }, "Next page")
      : h("span", { class: "muted" }, "End of the list."),
  );
}

/** "Batch X: active/suspended" with the button that changes it (after a confirmation). */
async function renderBatch(ctx, box, tenant, code) {
  const show = async () => {
    const data = await get("/suspended-batches", { tenant_id: tenant });
    const codes = data.suspensions.map((s) => s.batch_code);
    const suspended = codes.includes(code) || codes.includes("*");
    const state = suspended ? "suspended" : "active";
    fill(
      box,
      "Batch ",
      h("strong", null, code),
      ": ",
      h("span", { class: `badge s-${state}`, dataset: { test: "batch-state" } }, state),
      " ",
      button(
        suspended ? "Activate batch" : "Suspend batch",
        () =>
          ctx.confirmAction(
            `${suspended ? "Activate" : "Suspend"} batch ${code} of tenant ${tenant}?`,
            async () => {
              const answer = await post(suspended ? "/commands/activate" : "/commands/suspend", {
                tenant_id: tenant,
                batch_code: code,
              });
              await show();
              return answer;
            },
            () => `Batch ${code} ${suspended ? "activated" : "suspended"}.`,
          ),
        { dataset: { test: "batch-toggle" } },
      ),
    );
  };
  await show();
}
