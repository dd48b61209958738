// What both pages share: calling the management API with the browser's
// session, showing its errors next to the fields they are about, dates,
// the confirmation dialog, copying, and the new token shown once.
//
// Text from the API (descriptions, user keys, messages) is only ever set as
// textContent, never parsed as HTML. The plain token lives in this page's
// memory and DOM until "Done" and nowhere else: not in a URL, a cookie or
// browser storage.

/** The pages' context ({path}/context): who is logged in, the token rules. */
export async function loadContext() {
  const resp = await fetch("context", { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (resp.status === 401) {
    // The session ended: the page itself sends the browser to log in.
    location.reload();
    throw new Error("not logged in");
  }
  if (!resp.ok) throw new Error(await messageOf(resp));
  return resp.json();
}

let apiRoot = "/rest/de.resolution.apitokenauth/latest";

export function setApiRoot(root) {
  apiRoot = root;
}

/**
 * Calls the management API. Answers { ok, status, data }, where data is
 * the JSON body (or { errorMessages: [text] } for anything else).
 * X-Atlassian-Token: no-check is what the API's CSRF rule asks of a
 * session request that changes something.
 */
export async function api(method, path, body) {
  const headers = { Accept: "application/json", "X-Atlassian-Token": "no-check" };
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(apiRoot + path, init);
  } catch (e) {
    return { ok: false, status: 0, data: { errorMessages: ["tokengate cannot be reached: " + e.message], errors: {} } };
  }
  if (resp.status === 401) {
    // The page always calls with the session: it has ended. Loading the page
    // again goes to the login page, and back here after it.
    location.reload();
  }
  let data = null;
  const text = await resp.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { errorMessages: [text.slice(0, 200)], errors: {} };
    }
  }
  if (!resp.ok && (data === null || typeof data !== "object")) {
    data = { errorMessages: ["The request failed with status " + resp.status], errors: {} };
  }
  return { ok: resp.ok, status: resp.status, data };
}

async function messageOf(resp) {
  try {
    const data = await resp.json();
    return (data.errorMessages || []).join(" ") || "Status " + resp.status;
  } catch {
    return "Status " + resp.status;
  }
}

/** Builds an element; strings among children become text nodes. */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return e;
}

const live = () => document.getElementById("live");

/** Said by screen readers (the page's aria-live region). */
export function announce(text) {
  const region = live();
  region.textContent = "";
  // A change of text is what is announced; the same text twice must change too.
  setTimeout(() => { region.textContent = text; }, 50);
}

/** Shows a message in a banner (role=alert, or a polite status). */
export function banner(id, text, kind = "error") {
  const b = document.getElementById(id);
  b.textContent = text || "";
  b.className = "banner " + kind;
  b.hidden = !text;
}

/**
 * Puts the API's errors next to the fields they are about: each
 * errors[field] into the form's [data-error-for=field] (the input gets
 * aria-invalid and is described by it), and errorMessages, with errors for
 * fields the form does not have, into the form's .form-error.
 */
export function showErrors(form, result) {
  clearErrors(form);
  const data = result.data || {};
  const general = [...(data.errorMessages || [])];
  let first = null;
  for (const [field, message] of Object.entries(data.errors || {})) {
    const slot = form.querySelector(`[data-error-for="${CSS.escape(field)}"]`);
    if (!slot) {
      general.push(field + ": " + message);
      continue;
    }
    slot.textContent = message;
    const input = form.querySelector(`[name="${CSS.escape(field)}"]`);
    if (input) {
      input.setAttribute("aria-invalid", "true");
      first = first || input;
    }
  }
  if (general.length === 0 && !first && !result.ok) general.push("The request failed with status " + result.status);
  const box = form.querySelector(".form-error");
  if (box) {
    box.textContent = general.join(" ");
    box.hidden = general.length === 0;
  }
  (first || box)?.focus?.();
}

export function clearErrors(form) {
  for (const slot of form.querySelectorAll("[data-error-for]")) slot.textContent = "";
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  const box = form.querySelector(".form-error");
  if (box) {
    box.textContent = "";
    box.hidden = true;
  }
}

const dateFormat = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "short", day: "numeric" });
const timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

/** A <time> for epoch milliseconds; `zero` when 0 (never). */
export function when(ms, zero) {
  if (!ms) return el("span", { class: "muted", text: zero });
  const d = new Date(ms);
  return el("time", { datetime: d.toISOString(), title: timeFormat.format(d), text: dateFormat.format(d) });
}

/** "Expires" cell: the date, marked when it has passed. */
export function expiry(validUntil) {
  if (!validUntil) return el("span", { text: "Never" });
  const cell = el("span", {}, when(validUntil, ""));
  if (validUntil <= Date.now()) cell.append(" ", el("span", { class: "lozenge warn", text: "Expired" }));
  return cell;
}

/** "Last used" cell, with where from when the API says. */
export function lastUsed(token) {
  const cell = el("span", {}, when(token.lastAccessed, "Never"));
  if (token.lastAccessed && token.lastAccessedFrom) {
    cell.append(el("span", { class: "muted small", text: " from " + token.lastAccessedFrom }));
  }
  return cell;
}

export function scopeName(code) {
  return code === 1 ? "Read only" : "Read and write";
}

/** A line under the description naming the allowed addresses, if any. */
export function allowedIps(token) {
  const ips = token.allowedIps;
  if (!Array.isArray(ips) || ips.length === 0) return null;
  return el("div", { class: "muted small", text: "Only from " + ips.join(", ") });
}

/** A cell with a label for narrow screens (where rows become cards). */
export function cell(label, ...children) {
  return el("td", { "data-label": label }, ...children);
}

/** Asks, in the page's <dialog>; resolves true when confirmed. */
export function confirmDialog(title, text, action) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = action;
  const opener = document.activeElement;
  dialog.returnValue = "";
  dialog.showModal();
  document.getElementById("confirm-cancel").focus();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      opener?.focus?.();
      resolve(dialog.returnValue === "ok");
    }, { once: true });
  });
}

/** Copies `text`; says "Copied" to screen readers and on the button. */
export async function copy(text, button) {
  let done = false;
  try {
    await navigator.clipboard.writeText(text);
    done = true;
  } catch {
    // No clipboard API (a plain-HTTP origin that is not loopback): select
    // the text so that Ctrl-C copies it.
    const code = button.parentElement.querySelector("code");
    if (code) {
      const range = document.createRange();
      range.selectNodeContents(code);
      const sel = getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
    }
  }
  const label = button.textContent;
  button.textContent = done ? "Copied" : "Press Ctrl+C";
  announce(done ? "Copied" : "Selected: press Control C to copy");
  setTimeout(() => { button.textContent = label; }, 2000);
}

/** Shell-quotes a word for the curl lines. */
function quoted(word) {
  return /^[A-Za-z0-9_.:/@-]+$/.test(word) ? word : "'" + word.replaceAll("'", "'\\''") + "'";
}

/**
 * Shows a token created (or rotated) just now, once: the token, a copy
 * button, and curl lines with it for Bearer and Basic. `user` is the
 * owner's username, when known. "Done" forgets it.
 */
export function showNewToken(ctx, created, user) {
  const panel = document.getElementById("new-token");
  const token = created.plainTextToken;
  const url = ctx.baseUrl + ctx.whoAmI;
  const lines = {
    "new-value": token,
    "curl-bearer": `curl -H ${quoted("Authorization: Bearer " + token)} ${quoted(url)}`,
    "curl-basic": `curl -u ${quoted((user || "USERNAME") + ":" + token)} ${quoted(url)}`,
  };
  for (const [id, text] of Object.entries(lines)) document.getElementById(id).textContent = text;
  const expires = document.getElementById("new-expires");
  expires.textContent = created.tokenExpirationDateTimeMillis
    ? "It expires on " + timeFormat.format(new Date(created.tokenExpirationDateTimeMillis)) + "."
    : "It never expires.";
  panel.hidden = false;
  panel.focus();
  panel.scrollIntoView({ block: "nearest" });
  const forget = () => {
    for (const id of Object.keys(lines)) document.getElementById(id).textContent = "";
    panel.hidden = true;
  };
  return forget;
}

/** Wires the copy buttons and "Done" of the new-token panel. */
export function wireNewTokenPanel(onDone) {
  const panel = document.getElementById("new-token");
  panel.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-copy]");
    if (button) copy(document.getElementById(button.dataset.copy).textContent, button);
  });
  document.getElementById("new-done").addEventListener("click", () => onDone());
}

/** The create form's body: description, validity, scope, and what else it has. */
export function createBody(form, ctx) {
  const f = new FormData(form);
  const body = { tokenDescription: f.get("tokenDescription") || "" };
  const months = String(f.get("tokenValidityTimeInMonths") || "").trim();
  if (months !== "") body.tokenValidityTimeInMonths = /^-?\d+$/.test(months) ? Number(months) : months;
  if (!ctx.tokens.forceReadOnly) body.tokenScope = f.get("readOnly") ? 1 : 2;
  const key = f.get("tokenForUserKey");
  if (key !== null) body.tokenForUserKey = String(key).trim();
  const ips = f.get("allowedIps");
  if (ips !== null && String(ips).trim() !== "") {
    body.allowedIps = String(ips).split(/[\s,]+/).filter(Boolean);
  }
  return body;
}

/** Fills in the create form's rules: the validity's hint and default, scope, allowed IPs. */
export function prepareCreateForm(form, ctx) {
  const t = ctx.tokens;
  const months = form.querySelector("[name=tokenValidityTimeInMonths]");
  const hint = form.querySelector("#validity-hint");
  if (t.defaultValidityMonths > 0) months.value = String(t.defaultValidityMonths);
  if (t.maxValidityMonths > 0) {
    months.max = String(t.maxValidityMonths);
    hint.textContent = `1 to ${t.maxValidityMonths} months`;
  } else {
    hint.textContent = t.defaultValidityMonths > 0 ? "Any number of months" : "Empty: never expires";
  }
  const readOnly = form.querySelector("[name=readOnly]");
  if (t.forceReadOnly) {
    readOnly.checked = true;
    readOnly.disabled = true;
    form.querySelector("#read-only-hint").textContent = "Every token is read only here.";
  }
  form.querySelector("#allowed-ips-field").hidden = !ctx.features.allowedIps;
}

/** Says who is logged in, and offers the admin console to administrators. */
export function showUser(ctx) {
  document.getElementById("who").textContent = "Logged in as " + ctx.user.name;
  const admin = document.getElementById("admin-link");
  if (admin) admin.hidden = !ctx.user.admin;
  setApiRoot(ctx.apiRoot);
}

/** The rotate dialog's answer: the grace period in seconds, or null. */
export async function askRotate(description) {
  const ok = await confirmDialog(
    "Rotate this token?",
    `"${description}" gets a new secret; the old one stops working at once. Scripts that use it need the new one.`,
    "Rotate",
  );
  return ok ? 0 : null;
}
