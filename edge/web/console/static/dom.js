/* Small DOM helpers shared by the pages: building elements, showing messages, formatting. */
"use strict";

(function (global) {
  /* h("tag.class#id", {attr: value, onclick: f}, child, ...): text children become text
   * nodes, so nothing from the API is ever parsed as HTML. */
  function h(spec, attrs, ...children) {
    const [tagAndClasses, id] = spec.split("#");
    const [tag, ...classes] = tagAndClasses.split(".");
    const node = document.createElement(tag || "div");
    if (id) node.id = id;
    if (classes.length) node.className = classes.join(" ");
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (name === "text") node.textContent = value;
      else if (name in node && typeof value !== "string") node[name] = value;
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  let fieldCount = 0;

  /* A labelled form field: <label for=...> + the control (+ an optional hint). */
  function field(labelText, control, hint) {
    fieldCount += 1;
    control.id = control.id || "field-" + fieldCount;
    const parts = [h("label", { for: control.id }, labelText), control];
    if (hint) {
      const hintNode = h("span.hint", { id: control.id + "-hint" }, hint);
      control.setAttribute("aria-describedby", hintNode.id);
      parts.push(hintNode);
    }
    return h("div.field", {}, parts);
  }

  /* A checkbox with its label after it. */
  function checkbox(labelText, control) {
    fieldCount += 1;
    control.id = control.id || "field-" + fieldCount;
    return h("div.field.check", {}, control, h("label", { for: control.id }, labelText));
  }

  /* A message region's content: kind is "error", "ok" or "info". Errors are role=alert,
   * so a screen reader says them at once. */
  function say(region, kind, ...text) {
    region.replaceChildren();
    region.classList.remove("error", "ok", "info");
    region.classList.add("message", kind);
    region.setAttribute("role", kind === "error" ? "alert" : "status");
    region.hidden = false;
    region.append(...text.map((t) => (typeof t === "object" ? t : document.createTextNode(t))));
  }

  function quiet(region) {
    region.replaceChildren();
    region.hidden = true;
  }

  /* An error in words: the API's Code and Message, and its request id for the logs. */
  function describe(error) {
    if (error instanceof global.CosApi.ApiError) {
      const id = error.requestId ? " (request " + error.requestId + ")" : "";
      return error.describe() + id;
    }
    return "Unexpected error: " + (error && error.message ? error.message : String(error));
  }

  /* Times from the API: epoch seconds, or ISO text; shown in the user's time zone. */
  function when(value) {
    if (value === undefined || value === null || value === "") return "—";
    const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
    if (Number.isNaN(date.getTime())) return String(value);
    return date.toLocaleString();
  }

  function bytes(value) {
    if (value === undefined || value === null) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let n = Number(value);
    let unit = 0;
    while (n >= 1024 && unit < units.length - 1) {
      n /= 1024;
      unit += 1;
    }
    return (unit ? n.toFixed(1) : String(n)) + " " + units[unit];
  }

  function count(value) {
    return value === undefined || value === null ? "—" : Number(value).toLocaleString();
  }

  /* A table in a scrolling wrapper (wide tables scroll sideways on a phone). */
  function table(caption, headings, rows, emptyText) {
    if (!rows.length) return h("p.empty", {}, emptyText);
    return h(
      "div.table-wrap",
      { tabindex: "0", role: "region", "aria-label": caption },
      h(
        "table",
        {},
        h("caption", {}, caption),
        h("thead", {}, h("tr", {}, headings.map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c) => h("td", {}, c))))),
      ),
    );
  }

  global.Dom = { h, field, checkbox, say, quiet, describe, when, bytes, count, table };
})(window);
