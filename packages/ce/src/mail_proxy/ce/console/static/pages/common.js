// Pieces several pages share: the tenant picker and small form helpers.

import { fill, h } from "../dom.js";

/**
 * For an admin with the multitenancy plugin: a <select> of tenants that navigates on change.
 * For a tenant token (or a single-tenant install): nothing (the API binds the token's tenant).
 */
export async function tenantPicker(ctx, current, onChange) {
  if (!ctx.session.isAdmin || !ctx.session.plugins.includes("multitenancy")) return null;
  const ids = await ctx.tenants();
  const select = h(
    "select",
    { name: "tenant_id", id: "tenant_id", dataset: { test: "tenant-picker" } },
    ids.map((id) => h("option", { value: id, selected: id === current }, id)),
  );
  if (onChange) select.addEventListener("change", () => onChange(select.value));
  return h("label", { class: "inline" }, "Tenant ", select);
}

/** The tenant a tenant-scoped page works on: ?tenant_id= for an admin, else the token's. */
export function pageTenant(ctx) {
  if (!ctx.session.isAdmin) return ctx.session.tenantId;
  return ctx.params.get("tenant_id") || "default";
}

/** A labelled input. */
export function field(label, input) {
  return h("label", { class: "field" }, h("span", null, label), input);
}

/** A button that runs `fn` (disabled while it runs). */
export function button(label, fn, attrs = {}) {
  const el = h("button", { type: "button", ...attrs }, label);
  el.addEventListener("click", async () => {
    el.disabled = true;
    try {
      await fn();
    } finally {
      el.disabled = false;
    }
  });
  return el;
}

/** A box that shows a new secret once, with the warning that it is not shown again. */
export function secretOnce(title, value) {
  return h(
    "div",
    { class: "secret", role: "status", dataset: { test: "secret-once" } },
    h("strong", null, title),
    h("p", null, "Copy it now: it is shown only this once."),
    h("code", { dataset: { test: "secret-value" } }, value),
  );
}

export function placeholder(el, message) {
  fill(el, h("p", { class: "muted" }, message));
}
