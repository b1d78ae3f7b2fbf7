/* The console's shell: sign-in, the bucket list, and which page the address shows.
 *
 * Pages are addressed by the URL's fragment, so the browser's back button and bookmarks
 * work without the edge serving more than one HTML file:
 *   #/                        the bucket list
 *   #/bucket/<name>/origin    the bucket's back-to-origin rules (origin.js)
 *   #/bucket/<name>/migration its migration progress (migration.js)
 */
"use strict";

(function (global) {
  const { h, field, say, describe } = global.Dom;
  const api = global.CosApi;

  const main = () => document.getElementById("main");
  let leaving = null; // what the page on screen must stop (a refresh timer) when left

  function route() {
    const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
    if (parts[0] === "bucket" && parts[1]) {
      return { page: parts[2] === "migration" ? "migration" : "origin", bucket: parts[1] };
    }
    return { page: "buckets" };
  }

  function link(page, bucket) {
    if (page === "buckets") return "#/";
    return "#/bucket/" + encodeURIComponent(bucket) + "/" + page;
  }

  function heading(text) {
    return h("h1", { tabindex: "-1" }, text);
  }

  /* Show a page: replaces the content, moves focus to its heading for keyboard users. */
  function show(title, ...content) {
    if (leaving) leaving();
    leaving = null;
    document.title = title + " · cosedge console";
    const head = heading(title);
    main().replaceChildren(head, ...content);
    head.focus();
  }

  function updateHeader() {
    const key = api.session.get();
    const who = document.getElementById("who");
    who.hidden = !key;
    document.getElementById("who-id").textContent = key ? key.secretId : "";
  }

  // --- sign-in -------------------------------------------------------------------------

  function signInPage() {
    const secretId = h("input", { name: "secret-id", autocomplete: "username", required: true, spellcheck: "false" });
    const secretKey = h("input", { name: "secret-key", type: "password", autocomplete: "current-password", required: true });
    const message = h("div.message#signin-message", { hidden: true });
    const submit = h("button.primary", { type: "submit" }, "Sign in");
    const form = h(
      "form.card.signin",
      { "aria-describedby": "signin-note" },
      field("SecretId", secretId),
      field("SecretKey", secretKey),
      message,
      h("div.actions", {}, submit),
      h(
        "p.note#signin-note",
        {},
        "The key pair stays in this browser tab's session storage and is forgotten when the " +
          "tab closes. Every request the console makes is signed with it, so the console can " +
          "do only what this key may do through the API.",
      ),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      submit.disabled = true;
      say(message, "info", "Signing in…");
      api.session.set(secretId.value.trim(), secretKey.value);
      try {
        await api.listBuckets();
        updateHeader();
        render();
      } catch (e) {
        api.session.clear();
        say(message, "error", "Sign-in failed: " + describe(e));
        submit.disabled = false;
        secretId.focus();
      }
    });
    show("Sign in", form);
    if (!global.CosSign.available()) {
      submit.disabled = true;
      say(message, "error", "Cannot sign requests here: " + global.CosSign.UNAVAILABLE + ".");
    }
    secretId.focus();
  }

  // --- the bucket list -----------------------------------------------------------------

  async function bucketsPage() {
    const message = h("div.message", { hidden: true });
    const list = h("div.card", { "aria-busy": "true" }, h("p.empty", {}, "Loading buckets…"));
    show("Buckets", message, list);
    try {
      const buckets = await api.listBuckets();
      list.removeAttribute("aria-busy");
      list.replaceChildren(
        global.Dom.table(
          "Buckets this key may manage",
          ["Name", "Location", "Created", "Pages"],
          buckets.map((b) => [
            h("a.bucket-name", { href: link("origin", b.name) }, b.name),
            b.location,
            global.Dom.when(b.created),
            h(
              "span.links",
              {},
              h("a", { href: link("origin", b.name) }, "Origin"),
              " · ",
              h("a", { href: link("migration", b.name) }, "Migration"),
            ),
          ]),
          "This key may not manage any bucket.",
        ),
      );
    } catch (e) {
      list.replaceChildren();
      say(message, "error", "Could not list the buckets: " + describe(e));
    }
  }

  // --- a bucket's pages ----------------------------------------------------------------

  function bucketTabs(bucket, current) {
    const tab = (page, text) =>
      h("a.tab", { href: link(page, bucket), "aria-current": page === current ? "page" : null }, text);
    return h(
      "nav.tabs",
      { "aria-label": "Bucket pages" },
      h("a.back", { href: link("buckets") }, "← All buckets"),
      tab("origin", "Origin"),
      tab("migration", "Migration"),
    );
  }

  function bucketPage(bucket, page) {
    const body = h("div.page");
    show(bucket, bucketTabs(bucket, page), body);
    const view = page === "migration" ? global.MigrationPage : global.OriginPage;
    leaving = view.render(body, bucket) || null;
  }

  function render() {
    updateHeader();
    if (!api.session.get()) return signInPage();
    const where = route();
    if (where.page === "buckets") return bucketsPage();
    return bucketPage(where.bucket, where.page);
  }

  function start() {
    document.getElementById("sign-out").addEventListener("click", () => {
      api.session.clear();
      location.hash = "#/";
      render();
    });
    window.addEventListener("hashchange", render);
    render();
  }

  global.ConsoleApp = { link, start };
  document.addEventListener("DOMContentLoaded", start);
})(window);
