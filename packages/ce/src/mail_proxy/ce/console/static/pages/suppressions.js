// Suppressions (bounce plugin): the tenant's suppressed addresses; add or remove one.

import { del, get, post, seg } from "../api.js";
import { fill, h, table, when } from "../dom.js";
import { button, field, pageTenant, tenantPicker } from "./common.js";

export async function render(ctx) {
  if (!ctx.session.plugins.includes("bounce")) {
    ctx.main.append(h("p", { class: "muted" }, "The bounce plugin is not installed: no suppression list."));
    return;
  }
  const tenant = pageTenant(ctx);
  const scope = ctx.session.isAdmin ? { tenant_id: tenant } : {};
  const picker = await tenantPicker(ctx, tenant, (value) => ctx.go(ctx.link("suppressions", { tenant_id: value })));
  const address = h("input", { name: "address", type: "email", required: true, dataset: { test: "suppress-address" } });
  const note = h("input", { name: "note" });
  const add = h(
    "form",
    { class: "filters" },
    field("Address", address),
    field("Note", note),
    h("button", { type: "submit" }, "Suppress"),
  );
  const list = h("div", { dataset: { test: "suppressions" } });
  const pager = h("div", { class: "pager" });
  ctx.main.append(h("div", { class: "toolbar" }, h("h1", null, "Suppressions"), picker), add, list, pager);

  add.addEventListener("submit", (event) => {
    event.preventDefault();
    ctx.confirmAction(
      `Suppress ${address.value}? Messages to it will be refused.`,
      async () => {
        const a = await post("/suppressions", { address: address.value.trim(), note: note.value.trim() || null }, scope);
        await show(null);
        return a;
      },
      () => "Suppressed.",
    );
  });

  const show = async (cursor) => {
    const data = await get("/suppressions", { ...scope, limit: 100, cursor });
    if (!data.suppressions.length) {
      fill(list, h("p", { class: "muted" }, "No suppressed address."));
    } else {
      fill(
        list,
        table(
          [
            ["address", (s) => s.address],
            ["reason", (s) => s.reason],
            ["code", (s) => s.code ?? ""],
            ["source", (s) => s.source],
            ["note", (s) => s.note ?? ""],
            ["since", (s) => when(s.created_at)],
            [
              "",
              (s) =>
                button(
                  "Remove",
                  () =>
                    ctx.confirmAction(
                      `Remove ${s.address} from the suppression list?`,
                      async () => {
                        const a = await del(`/suppressions/${seg(s.address)}`, scope);
                        await show(null);
                        return a;
                      },
                      () => "Removed.",
                    ),
                  { class: "small" },
                ),
            ],
          ],
          data.suppressions,
        ),
      );
    }
    fill(pager, data.next_cursor ? button("Next page", () => show(data.next_cursor)) : null);
  };
  await show(null);
}
