/* A bucket's migration page: how much is served from the bucket already, what the
 * background copies are doing, why the failed ones failed, and one key's copy status.
 *
 * The hit ratio comes from the admin port's `/metrics` (cosedge_requests_total by bucket and
 * outcome), the copies from the signed `GET /?cosedge-copies`, a key's status from
 * `GET /<key>?cosedge-copy` (SPEC §9). The page refreshes itself every few seconds while it
 * is shown; each part says in words when it could not be read.
 */
"use strict";

(function (global) {
  const { h, field, say, quiet, describe, when, bytes, count, table } = global.Dom;
  const api = global.CosApi;

  const REFRESH_SECONDS = 5;
  const OUTCOMES = [
    ["hit", "Hits"],
    ["redirect", "Redirects"],
    ["not_found", "Not found"],
    ["error", "Errors"],
  ];
  const STATES = {
    queued: "Queued: waiting for a free copy slot",
    copying: "Copying from the origin",
    stored: "Stored in the bucket",
    failed: "Failed",
    absent: "Never seen: no miss of this key started a copy",
  };

  function tile(label, value, detail, kind) {
    return h(
      "div.tile" + (kind ? "." + kind : ""),
      {},
      h("span.tile-label", {}, label),
      h("span.tile-value", {}, value),
      h("span.tile-detail", {}, detail || " "),
    );
  }

  function progress(record) {
    if (record.expected === undefined || record.expected === null) return bytes(record.bytes);
    return bytes(record.bytes) + " of " + bytes(record.expected);
  }

  /* The copy status of one key, as a definition list in the API's field order. */
  function statusList(record) {
    const rows = [
      ["State", STATES[record.state] || record.state],
      ["Origin", record.origin],
      ["Address", record.address],
      ["Received", progress(record)],
      ["Started", when(record.started)],
      ["Finished", when(record.finished)],
      ["Attempts", count(record.attempts)],
      ["Last failure", record.reason || "—"],
      ["May be fetched again", when(record.retry_at)],
      ["Started by request", record.request_id || "—"],
    ];
    return h(
      "dl.status",
      { "data-state": record.state },
      rows.flatMap(([name, value]) => [h("dt", {}, name), h("dd", {}, value === undefined || value === null || value === "" ? "—" : value)]),
    );
  }

  class MigrationPage {
    constructor(container, bucket) {
      this.bucket = bucket;
      this.failures = [];
      this.message = h("div.message#migration-message", { hidden: true });
      this.tiles = h("div.tiles", { "aria-live": "off" });
      this.outcomes = h("div.outcomes");
      this.inFlight = h("div");
      this.failureList = h("div");
      this.olderButton = h("button", { type: "button", hidden: true, onclick: () => this.older() }, "Show older failures");
      this.updated = h("span.updated", {}, "");
      this.auto = h("input", { type: "checkbox", name: "auto-refresh", checked: true });
      this.keyInput = h("input", { name: "key", placeholder: "img/hello.txt", spellcheck: "false", required: true });
      this.keyResult = h("div.key-result", { role: "status", "aria-live": "polite" });
      this.keyMessage = h("div.message", { hidden: true });
      const keyForm = h(
        "form.key-form",
        { onsubmit: (event) => this.lookUp(event) },
        field("Object key", this.keyInput),
        h("div.actions", {}, h("button.primary", { type: "submit" }, "Show status")),
      );
      container.append(
        h(
          "section.card",
          { "aria-labelledby": "progress-heading" },
          h(
            "div.section-head",
            {},
            h("h2#progress-heading", {}, "Migration progress"),
            h(
              "div.refresh",
              {},
              this.updated,
              global.Dom.checkbox("Refresh every " + REFRESH_SECONDS + " s", this.auto),
              h("button#refresh", { type: "button", onclick: () => this.refresh() }, "Refresh now"),
            ),
          ),
          this.message,
          this.tiles,
          this.outcomes,
        ),
        h("section.card", { "aria-labelledby": "inflight-heading" }, h("h2#inflight-heading", {}, "Copies in flight"), this.inFlight),
        h(
          "section.card",
          { "aria-labelledby": "failures-heading" },
          h("h2#failures-heading", {}, "Recent failures"),
          this.failureList,
          h("div.actions", {}, this.olderButton),
        ),
        h(
          "section.card",
          { "aria-labelledby": "key-heading" },
          h("h2#key-heading", {}, "One key's copy"),
          keyForm,
          this.keyMessage,
          this.keyResult,
        ),
      );
      this.timer = setInterval(() => {
        if (this.auto.checked && document.visibilityState === "visible") this.refresh();
      }, REFRESH_SECONDS * 1000);
      this.refresh();
    }

    stop() {
      clearInterval(this.timer);
    }

    async refresh() {
      const problems = [];
      const [outcomes, copies] = await Promise.all([
        api.requestOutcomes(this.bucket).catch((e) => {
          problems.push("Request counts (/metrics): " + describe(e));
          return null;
        }),
        api.copies(this.bucket).catch((e) => {
          problems.push("Copies (?cosedge-copies): " + describe(e));
          return null;
        }),
      ]);
      this.showTiles(outcomes, copies);
      if (copies) this.showCopies(copies);
      else this.unavailable();
      if (problems.length) say(this.message, "error", ...problems.map((p) => h("p", {}, p)));
      else quiet(this.message);
      this.updated.textContent = "Updated " + new Date().toLocaleTimeString();
    }

    showTiles(outcomes, copies) {
      const tiles = [];
      if (outcomes) {
        const total = OUTCOMES.reduce((sum, [name]) => sum + (outcomes[name] || 0), 0);
        const ratio = total ? ((100 * outcomes.hit) / total).toFixed(1) + " %" : "—";
        tiles.push(tile("Hit ratio", ratio, count(outcomes.hit) + " hits of " + count(total) + " requests", "accent"));
        this.outcomes.replaceChildren(
          table("Requests by outcome", OUTCOMES.map(([, label]) => label), [OUTCOMES.map(([name]) => count(outcomes[name] || 0))], ""),
        );
      } else {
        tiles.push(tile("Hit ratio", "—", "metrics unavailable"));
        this.outcomes.replaceChildren();
      }
      if (copies) {
        const counters = copies.counters || {};
        const running = copies.in_flight || [];
        const queued = running.filter((r) => r.state === "queued").length;
        tiles.push(tile("Copies stored", count(counters.stored || 0), "complete in the bucket", "ok"));
        tiles.push(tile("Copies failed", count(counters.failed || 0), "reasons below", counters.failed ? "bad" : ""));
        tiles.push(tile("In flight", count(running.length), count(queued) + " queued"));
      }
      this.tiles.replaceChildren(...tiles);
    }

    showCopies(copies) {
      this.inFlight.replaceChildren(
        table(
          "Running and queued copies",
          ["Key", "State", "Received", "Started", "Origin address"],
          (copies.in_flight || []).map((r) => [h("code", {}, r.key || ""), STATES[r.state] || r.state, progress(r), when(r.started), r.address || "—"]),
          "No copy is running.",
        ),
      );
      this.failures = copies.failures || [];
      this.nextMarker = copies.next_marker;
      this.showFailures();
    }

    unavailable() {
      const words = h("p.empty", {}, "Not available: the copies could not be read (see above).");
      this.inFlight.replaceChildren(words.cloneNode(true));
      this.failureList.replaceChildren(words);
      this.olderButton.hidden = true;
    }

    showFailures() {
      this.failureList.replaceChildren(
        table(
          "Newest first",
          ["Key", "Reason", "Attempts", "Failed at", "May retry at"],
          this.failures.map((r) => [h("code", {}, r.key || ""), r.reason || "—", count(r.attempts), when(r.finished), when(r.retry_at)]),
          "No copy has failed.",
        ),
      );
      this.olderButton.hidden = !this.nextMarker;
    }

    async older() {
      try {
        const page = await api.copies(this.bucket, this.nextMarker);
        this.failures = this.failures.concat(page.failures || []);
        this.nextMarker = page.next_marker;
        this.showFailures();
      } catch (e) {
        say(this.message, "error", "Older failures: " + describe(e));
      }
    }

    async lookUp(event) {
      event.preventDefault();
      const key = this.keyInput.value.replace(/^\/+/, "");
      if (!key) return;
      quiet(this.keyMessage);
      this.keyResult.replaceChildren(h("p.empty", {}, "Looking up " + key + "…"));
      try {
        const record = await api.copyStatus(this.bucket, key);
        this.keyResult.replaceChildren(h("h3", {}, h("code", {}, key)), statusList(record));
      } catch (e) {
        this.keyResult.replaceChildren();
        say(this.keyMessage, "error", "Could not read the status of " + key + ": " + describe(e));
      }
    }
  }

  global.MigrationPage = {
    render(container, bucket) {
      const page = new MigrationPage(container, bucket);
      return () => page.stop();
    },
  };
})(window);
