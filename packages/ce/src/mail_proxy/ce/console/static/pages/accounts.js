// Accounts: limits and connection settings of the tenant's accounts, and "test connection"
// (connect, TLS, login and QUIT, nothing sent) through POST /account/{id}/test.

import { get, post, seg } from "../api.js";
import { h, table } from "../dom.js";
import { button, pageTenant, tenantPicker } from "./common.js";

export async function render(ctx) {
  const tenant = pageTenant(ctx);
  const scope = ctx.session.isAdmin ? { tenant_id: tenant } : {};
  const picker = await tenantPicker(ctx, tenant, (value) => ctx.go(ctx.link("accounts", { tenant_id: value })));
  ctx.main.append(h("div", { class: "toolbar" }, h("h1", null, "Accounts"), picker));
  const data = await get("/accounts", scope);
  if (!data.accounts.length) {
    ctx.main.append(h("p", { class: "muted" }, "No account yet (POST /account, or mail-proxy NAME accounts add)."));
    return;
  }
  const limits = (a) =>
    ["minute", "hour", "day"]
      .map((p) => `${a["limit_per_" + p] ?? "–"}/${p}`)
      .join(" · ") + ` (${a.limit_behavior})`;
  const security = (a) => {
    if (a.transport !== "smtp") return "—";
    const tls = a.use_tls || (a.use_tls === null && a.port === 465) ? "TLS" : a.starttls === false ? "no STARTTLS" : "STARTTLS";
    return `${tls}${a.user ? ", login " + a.user : ""}`;
  };
  const rows = data.accounts.map((a) => {
    const result = h("span", { class: "probe", dataset: { test: `probe-${a.id}` } });
    const test = button(
      "Test connection",
      async () => {
        result.className = "probe muted";
        result.textContent = "testing…";
        try {
          const answer = await post(`/account/${seg(a.id)}/test`, {}, scope);
          result.className = `probe ${answer.connected ? "ok" : "bad"}`;
          result.textContent = `${answer.connected ? "OK" : "FAILED"}: ${answer.detail} (${answer.elapsed_ms} ms)`;
        } catch (err) {
          result.className = "probe bad";
          result.textContent = `${err.message} (${err.code})`;
        }
      },
      { class: "small", dataset: { test: `test-${a.id}` } },
    );
    return { a, test, result };
  });
  ctx.main.append(
    table(
      [
        ["id", (r) => h("strong", null, r.a.id, r.a.default ? " (default)" : "")],
        ["transport", (r) => r.a.transport],
        ["server", (r) => (r.a.transport === "smtp" ? `${r.a.host}:${r.a.port}` : r.a.options?.directory ?? "")],
        ["security", (r) => security(r.a)],
        ["connections", (r) => r.a.max_connections],
        ["limits", (r) => limits(r.a)],
        ["test", (r) => h("span", null, r.test, " ", r.result)],
      ],
      rows,
      { dataset: { test: "accounts" } },
    ),
  );
}
