// Command log (admin): every state-changing API call, who made it and its result.

import { get } from "../api.js";
import { fill, h, table, text, when } from "../dom.js";
import { button, field } from "./common.js";

const PERIODS = [
  ["3600", "last hour"],
  ["86400", "last 24 hours"],
  ["604800", "last 7 days"],
  ["", "everything"],
];

export async function render(ctx) {
  if (!ctx.session.isAdmin) {
    ctx.main.append(h("p", { class: "error" }, "The command log needs the admin token."));
    return;
  }
  const period = ctx.params.get("period") ?? "86400";
  const select = h(
    "select",
    { name: "period" },
    PERIODS.map(([v, label]) => h("option", { value: v, selected: v === (period === "all" ? "" : period) }, label)),
  );
  select.addEventListener("change", () => ctx.go(ctx.link("log", { period: select.value || "all" })));
  const list = h("div", { dataset: { test: "command-log" } });
  const pager = h("div", { class: "pager" });
  ctx.main.append(h("div", { class: "toolbar" }, h("h1", null, "Command log"), field("Period", select)), list, pager);
  const since = period && period !== "all" ? Math.floor(Date.now() / 1000) - Number(period) : "";

  const show = async (cursor) => {
    const data = await get("/command-log", { limit: 100, cursor, since });
    fill(
      list,
      data.entries.length
        ? table(
            [
              ["when", (e) => when(e.ts)],
              ["who", (e) => e.principal],
              ["tenant", (e) => e.tenant_id ?? ""],
              ["call", (e) => `${e.method} ${e.path}`],
              ["status", (e) => e.status],
              ["what", (e) => h("code", null, text(e.summary))],
            ],
            data.entries,
          )
        : h("p", { class: "muted" }, "No entry in this period."),
    );
    fill(pager, data.next_cursor ? button("Next page", () => show(data.next_cursor)) : null);
  };
  await show(null);
}
