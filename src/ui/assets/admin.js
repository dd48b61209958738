// {path}/admin: every token, with the filters and pages of tokensByFilter;
// revoke, rotate (when the API has it), create for a user, clear a user's
// lockout, revoke all of a user's tokens.
import {
  allowedIps, announce, api, askRotate, banner, cell, clearErrors, confirmDialog, createBody, el,
  expiry, lastUsed, loadContext, prepareCreateForm, scopeName, showErrors, showNewToken, showUser,
  when, wireNewTokenPanel,
} from "./common.js";

let ctx;
let page = 0;
let shown = [];
let forget = () => {};

async function start() {
  try {
    ctx = await loadContext();
  } catch (e) {
    banner("page-error", "The page cannot be shown: " + e.message);
    return;
  }
  showUser(ctx);
  const create = document.getElementById("create");
  prepareCreateForm(create, ctx);
  create.addEventListener("submit", createFor);
  wireNewTokenPanel(() => {
    forget();
    document.getElementById("for-user").focus();
  });
  document.getElementById("filter").addEventListener("submit", (e) => {
    e.preventDefault();
    page = 0;
    search();
  });
  document.getElementById("prev").addEventListener("click", () => { page -= 1; search(); });
  document.getElementById("next").addEventListener("click", () => { page += 1; search(); });
  document.getElementById("all").addEventListener("click", onRowAction);
  document.getElementById("user-tools").addEventListener("submit", userTool);
  await search();
}

/** The filter form as tokensByFilter's query string. */
function query() {
  const f = new FormData(document.getElementById("filter"));
  const q = new URLSearchParams();
  for (const key of String(f.get("userFilter") || "").split(/[\s,]+/).filter(Boolean)) q.append("userFilter", key);
  const description = String(f.get("descriptionFilter") || "").trim();
  if (description) q.set("descriptionFilter", description);
  if (f.get("tokenScope")) q.set("tokenScope", f.get("tokenScope"));
  const by = String(f.get("notValidAfter") || "");
  // A day: the tokens that expire by its end, in the browser's time zone.
  if (by) {
    const end = new Date(by + "T23:59:59.999").getTime();
    q.set("notValidAfter", Number.isNaN(end) ? by : String(end));
  }
  q.set("limit", f.get("limit") || "25");
  q.set("page", String(page));
  return q;
}

async function search() {
  const form = document.getElementById("filter");
  const r = await api("GET", "/user/tokensByFilter?" + query());
  if (!r.ok) {
    showErrors(form, r);
    return;
  }
  clearErrors(form);
  const p = r.data;
  shown = p.content;
  page = p.currentPage;
  document.querySelector("#all tbody").replaceChildren(...shown.map(row));
  document.getElementById("all").hidden = shown.length === 0;
  document.getElementById("empty").hidden = shown.length !== 0;
  document.getElementById("count").textContent = p.total === 1 ? "1 token" : `${p.total} tokens`;
  document.getElementById("page-of").textContent = p.totalPages > 0 ? `Page ${p.currentPage + 1} of ${p.totalPages}` : "";
  document.getElementById("prev").disabled = !p.paginationLinks.previousPage;
  document.getElementById("next").disabled = !p.paginationLinks.nextPage;
}

function row(t) {
  return el("tr", { "data-id": t.id },
    cell("Owner", t.tokenForUserKey),
    cell("Description", el("div", { class: "description", text: t.description }), allowedIps(t)),
    cell("Created", when(t.created, "")),
    cell("Last used", lastUsed(t)),
    cell("Expires", expiry(t.validUntil)),
    cell("Access", scopeName(t.tokenScope)),
    cell("Created by", t.tokenCreatedByUserKey),
    el("td", { class: "actions" },
      ctx.features.rotate
        ? el("button", { type: "button", class: "subtle", "data-action": "rotate", "data-id": t.id, "aria-label": `Rotate ${t.description} of ${t.tokenForUserKey}` }, "Rotate")
        : null,
      el("button", { type: "button", class: "subtle", "data-action": "revoke", "data-id": t.id, "aria-label": `Revoke ${t.description} of ${t.tokenForUserKey}` }, "Revoke")),
  );
}

async function onRowAction(event) {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const token = shown.find((t) => String(t.id) === button.dataset.id);
  if (!token) return;
  if (button.dataset.action === "revoke") {
    const ok = await confirmDialog("Revoke this token?",
      `"${token.description}" of ${token.tokenForUserKey} stops working at once. This cannot be undone.`, "Revoke");
    if (!ok) return;
    const r = await api("DELETE", `/user/token/${token.id}`);
    banner("page-error", r.ok ? "" : (r.data.errorMessages || []).join(" ") || "The token could not be revoked.");
    if (r.ok) announce("Token revoked");
  } else if (button.dataset.action === "rotate") {
    const grace = await askRotate(token.description);
    if (grace === null) return;
    const r = await api("POST", `/user/token/${token.id}/rotate`, { graceSeconds: grace });
    banner("page-error", r.ok ? "" : (r.data.errorMessages || []).join(" ") || "The token could not be rotated.");
    if (r.ok) forget = showNewToken(ctx, r.data, null);
  }
  await search();
}

async function createFor(event) {
  event.preventDefault();
  const form = event.target;
  const r = await api("POST", "/user/token", createBody(form, ctx));
  if (!r.ok) {
    showErrors(form, r);
    return;
  }
  clearErrors(form);
  form.querySelector("[name=tokenDescription]").value = "";
  forget = showNewToken(ctx, r.data, r.data.tokenForUserKey === ctx.user.key ? ctx.user.name : null);
  announce("Token created. Copy it now: it is shown only once.");
  await search();
}

async function userTool(event) {
  event.preventDefault();
  const form = event.target;
  const key = String(new FormData(form).get("userKey") || "").trim();
  const done = document.getElementById("tool-done");
  done.hidden = true;
  if (!key) {
    // A user key is part of the API's path: there is nothing to send without one.
    return showErrors(form, { ok: false, status: 400, data: { errors: { userKey: "Enter a user key, e.g. JIRAUSER10100" } } });
  }
  if (event.submitter?.value === "revoke") {
    const ok = await confirmDialog("Revoke all of this user's tokens?",
      `Every token of ${key || "this user"} stops working at once. This cannot be undone.`, "Revoke all");
    if (!ok) return;
    const r = await api("DELETE", `/user/token/deleteAllFor/${encodeURIComponent(key)}`);
    if (!r.ok) return showErrors(form, r);
    clearErrors(form);
    done.textContent = `${r.data} ${r.data === 1 ? "token" : "tokens"} of ${key} revoked.`;
    await search();
  } else {
    const r = await api("DELETE", `/admin/failedLogins/${encodeURIComponent(key)}`);
    if (!r.ok) return showErrors(form, r);
    clearErrors(form);
    done.textContent = `The lockout of ${key} is cleared: failed logins count from zero again.`;
  }
  done.hidden = false;
  announce(done.textContent);
}

start();
