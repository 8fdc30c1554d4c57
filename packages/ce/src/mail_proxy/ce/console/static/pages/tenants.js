// Tenants (admin, multitenancy plugin): create one (its API key shown once), suspend or
// activate its dispatch, rotate its API key (the new key shown once).

import { get, post, seg } from "../api.js";
import { fill, h, table, when } from "../dom.js";
import { forgetTenants } from "../app.js";
import { button, field, secretOnce } from "./common.js";

export async function render(ctx) {
  if (!ctx.session.isAdmin) {
    ctx.main.append(h("p", { class: "error" }, "Tenants are managed with the admin token."));
    return;
  }
  const shown = h("div", { dataset: { test: "tenant-secret" } });
  const id = h("input", { name: "id", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9._@+\\-]{0,127}", dataset: { test: "new-tenant-id" } });
  const name = h("input", { name: "name", dataset: { test: "new-tenant-name" } });
  const create = h(
    "form",
    { class: "filters", dataset: { test: "create-tenant" } },
    field("New tenant id", id),
    field("Name", name),
    h("button", { type: "submit" }, "Create"),
  );
  const list = h("div");
  ctx.main.append(h("h1", null, "Tenants"), create, shown, list);

  create.addEventListener("submit", (event) => {
    event.preventDefault();
    ctx.confirmAction(
      `Create tenant ${id.value}?`,
      async () => {
        const answer = await post("/tenant", { id: id.value.trim(), name: name.value.trim() || null });
        forgetTenants();
        fill(shown, secretOnce(`API key of tenant ${answer.tenant.id}`, answer.api_key));
        id.value = "";
        name.value = "";
        await show();
        return answer;
      },
      (a) => `Tenant ${a.tenant.id} created.`,
    );
  });

  const show = async () => {
    const [tenants, suspended] = await Promise.all([get("/tenants", { limit: 1000 }), get("/suspended-batches")]);
    const whole = new Set(suspended.suspensions.filter((s) => s.batch_code === "*").map((s) => s.tenant_id));
    fill(
      list,
      table(
        [
          ["id", (t) => t.id],
          ["name", (t) => t.name ?? ""],
          ["active", (t) => (t.active ? "yes" : "no (tokens refused)")],
          ["dispatch", (t) => h("span", { dataset: { test: `dispatch-${t.id}` } }, whole.has(t.id) ? "suspended" : "running")],
          ["API key", (t) => (t.has_api_key ? (t.api_key_expires_at ? `until ${when(t.api_key_expires_at)}` : "yes") : "none")],
          ["created", (t) => when(t.created_at)],
          [
            "",
            (t) =>
              h(
                "span",
                null,
                button(
                  whole.has(t.id) ? "Activate" : "Suspend",
                  () =>
                    ctx.confirmAction(
                      `${whole.has(t.id) ? "Activate" : "Suspend"} dispatch of tenant ${t.id}?`,
                      async () => {
                        const a = await post(whole.has(t.id) ? "/commands/activate" : "/commands/suspend", { tenant_id: t.id });
                        await show();
                        return a;
                      },
                      () => `Tenant ${t.id} ${whole.has(t.id) ? "activated" : "suspended"}.`,
                    ),
                  { class: "small", dataset: { test: `suspend-${t.id}` } },
                ),
                " ",
                button(
                  "Rotate key",
                  () =>
                    ctx.confirmAction(
                      `Give tenant ${t.id} a new API key? The current key stops working at once.`,
                      async () => {
                        const a = await post(`/tenant/${seg(t.id)}/api-key`, {});
                        fill(shown, secretOnce(`New API key of tenant ${t.id}`, a.api_key));
                        await show();
                        return a;
                      },
                      () => `New key for ${t.id}.`,
                    ),
                  { class: "small", dataset: { test: `rotate-${t.id}` } },
                ),
              ),
          ],
        ],
        tenants.tenants,
        { dataset: { test: "tenants" } },
      ),
    );
  };
  await show();
}
