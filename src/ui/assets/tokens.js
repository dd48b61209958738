// {path}/: the API tokens of whoever is logged in. Create, copy once,
// rename, rotate (when the API has it), revoke, revoke all.
import {
  allowedIps, announce, api, askRotate, banner, cell, clearErrors, confirmDialog, createBody, el,
  expiry, lastUsed, loadContext, prepareCreateForm, scopeName, showErrors, showNewToken, showUser,
  when, wireNewTokenPanel,
} from "./common.js";

let ctx;
let tokens = [];
let forget = () => {};

async function start() {
  try {
    ctx = await loadContext();
  } catch (e) {
    banner("page-error", "The page cannot be shown: " + e.message);
    return;
  }
  showUser(ctx);
  const form = document.getElementById("create");
  prepareCreateForm(form, ctx);
  form.addEventListener("submit", create);
  wireNewTokenPanel(() => {
    forget();
    document.getElementById("description").focus();
  });
  document.getElementById("revoke-all").addEventListener("click", revokeAll);
  document.getElementById("tokens").addEventListener("click", onRowAction);
  await refresh();
}

async function refresh() {
  const r = await api("GET", "/user/token");
  if (!r.ok) {
    banner("page-error", (r.data.errorMessages || []).join(" ") || "Your tokens cannot be listed.");
    return;
  }
  banner("page-error", "");
  tokens = r.data;
  render();
}

function render() {
  const body = document.querySelector("#tokens tbody");
  body.replaceChildren(...tokens.map(row));
  document.getElementById("tokens").hidden = tokens.length === 0;
  document.getElementById("empty").hidden = tokens.length !== 0;
  document.getElementById("revoke-all").hidden = tokens.length === 0;
  document.getElementById("count").textContent = tokens.length === 1 ? "1 token" : `${tokens.length} tokens`;
}

function row(t) {
  const actions = el("td", { class: "actions" },
    el("button", { type: "button", class: "subtle", "data-action": "edit", "data-id": t.id, "aria-label": `Rename ${t.description}` }, "Rename"),
    ctx.features.rotate
      ? el("button", { type: "button", class: "subtle", "data-action": "rotate", "data-id": t.id, "aria-label": `Rotate ${t.description}` }, "Rotate")
      : null,
    el("button", { type: "button", class: "subtle", "data-action": "revoke", "data-id": t.id, "aria-label": `Revoke ${t.description}` }, "Revoke"),
  );
  return el("tr", { "data-id": t.id },
    cell("Description", el("div", { class: "description", text: t.description }), allowedIps(t)),
    cell("Created", when(t.created, "")),
    cell("Last used", lastUsed(t)),
    cell("Expires", expiry(t.validUntil)),
    cell("Access", scopeName(t.tokenScope)),
    actions,
  );
}

async function create(event) {
  event.preventDefault();
  const form = event.target;
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  const r = await api("POST", "/user/token", createBody(form, ctx));
  button.disabled = false;
  if (!r.ok) {
    showErrors(form, r);
    return;
  }
  clearErrors(form);
  form.querySelector("[name=tokenDescription]").value = "";
  forget = showNewToken(ctx, r.data, ctx.user.name);
  announce("Token created. Copy it now: it is shown only once.");
  await refresh();
}

function onRowAction(event) {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const token = tokens.find((t) => String(t.id) === button.dataset.id);
  if (!token) return;
  if (button.dataset.action === "edit") edit(button.closest("tr"), token);
  if (button.dataset.action === "revoke") revoke(token);
  if (button.dataset.action === "rotate") rotate(token);
}

/** Renames in place: the description cell becomes a small form. */
function edit(tr, token) {
  const td = tr.querySelector("td");
  const id = `rename-${token.id}`;
  const input = el("input", { type: "text", id, name: "tokenDescription", value: token.description, autocomplete: "off" });
  const form = el("form", { novalidate: true, class: "rename" },
    el("label", { for: id, class: "sr-only", text: "New description" }),
    el("div", { class: "edit-row" }, input,
      el("button", { type: "submit", class: "primary" }, "Save"),
      el("button", { type: "button", "data-cancel": "1" }, "Cancel")),
    el("div", { class: "error-text", "data-error-for": "tokenDescription", id: id + "-error" }),
    el("div", { class: "error-text form-error", role: "alert", hidden: true }),
  );
  input.setAttribute("aria-describedby", id + "-error");
  td.replaceChildren(form);
  input.focus();
  input.select();
  form.querySelector("[data-cancel]").addEventListener("click", () => {
    render();
    focusRow(token.id, "edit");
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const r = await api("PATCH", `/user/token/${token.id}`, { tokenDescription: input.value });
    if (!r.ok) {
      showErrors(form, r);
      return;
    }
    announce("Description saved");
    await refresh();
    focusRow(token.id, "edit");
  });
}

function focusRow(id, action) {
  document.querySelector(`#tokens button[data-id="${id}"][data-action="${action}"]`)?.focus();
}

async function revoke(token) {
  const ok = await confirmDialog("Revoke this token?",
    `"${token.description}" stops working at once, for every script that uses it. This cannot be undone.`, "Revoke");
  if (!ok) return;
  const r = await api("DELETE", `/user/token/${token.id}`);
  if (!r.ok) {
    banner("page-error", (r.data.errorMessages || []).join(" ") || "The token could not be revoked.");
    return;
  }
  announce("Token revoked");
  await refresh();
  document.getElementById("description").focus();
}

async function revokeAll() {
  const n = tokens.length;
  const ok = await confirmDialog("Revoke all your tokens?",
    `All ${n} of your tokens stop working at once. This cannot be undone.`, "Revoke all");
  if (!ok) return;
  const failed = [];
  for (const t of tokens) {
    const r = await api("DELETE", `/user/token/${t.id}`);
    if (!r.ok && r.status !== 404) failed.push((r.data.errorMessages || []).join(" ") || String(r.status));
  }
  banner("page-error", failed.length ? `${failed.length} could not be revoked: ${failed[0]}` : "");
  announce(failed.length ? "Some tokens could not be revoked" : "All tokens revoked");
  await refresh();
  document.getElementById("description").focus();
}

async function rotate(token) {
  const grace = await askRotate(token.description);
  if (grace === null) return;
  const r = await api("POST", `/user/token/${token.id}/rotate`, { graceSeconds: grace });
  if (!r.ok) {
    banner("page-error", (r.data.errorMessages || []).join(" ") || "The token could not be rotated.");
    return;
  }
  forget = showNewToken(ctx, r.data, ctx.user.name);
  announce("Token rotated. Copy the new one now: it is shown only once.");
  await refresh();
}

start();
