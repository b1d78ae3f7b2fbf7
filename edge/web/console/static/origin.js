/* A bucket's back-to-origin page: the switch, the rules, and each address's ISP verdict.
 *
 * The page never judges an address itself: the dry run (`GET /?cosedge-origin-check`) shows
 * what each address resolves to and which ISP it belongs to, and saving (`PUT /?origin`)
 * shows the API's own message when it refuses, so what the page says is what the API says.
 * Switching off deletes the API's rules (`DELETE /?origin`); a bucket whose config file has
 * an `origin:` then falls back to that, and the page says so.
 */
"use strict";

(function (global) {
  const { h, field, checkbox, say, quiet, describe } = global.Dom;
  const api = global.CosApi;

  const TYPES = [
    ["Proxy", "Proxy (redirect, copy)"],
    ["Redirect", "Redirect only"],
    ["Mirror", "Mirror (client waits, copy)"],
  ];
  const CODES = ["302", "301", "307"];
  const PROTOCOLS = [
    ["HTTP", "HTTP"],
    ["HTTPS", "HTTPS (certificate checked)"],
    ["FOLLOW", "Follow: the client's scheme"],
  ];

  function blankRule(priority) {
    return {
      priority: String(priority),
      type: "Proxy",
      prefix: "",
      address: "",
      standbys: [],
      protocol: "HTTP",
      redirectCode: "302",
      followQueryString: true,
      followRedirects: false,
      kept: [],
      xml: null,
    };
  }

  // Words for the parts of a rule the page keeps without editing them.
  const KEPT_WORDS = {
    FileInfo: "path rewrite",
    HTTPStandbyCode: "standby status codes",
    HttpHeader: "header settings",
    TransparentErrorCode: "error pass-through",
    FollowRedirectionConfiguration: "redirect settings",
    CopyOriginData: "copy settings",
  };

  function keptWords(names) {
    return Array.from(new Set(names.map((n) => KEPT_WORDS[n] || n))).join(", ");
  }

  function wide(node) {
    node.classList.add("wide");
    return node;
  }

  function addresses(text) {
    return text.split(/[\s,]+/).filter(Boolean);
  }

  /* A select of `options`; a value the page has no option for (one a later API added) is
   * offered too, so saving keeps it. */
  function select(name, options, value) {
    const control = h("select", { name });
    const all = options.some(([v]) => v === value) || !value ? options : options.concat([[value, value]]);
    for (const [optionValue, text] of all) {
      control.appendChild(h("option", { value: optionValue, selected: optionValue === value }, text));
    }
    return control;
  }

  /* What the dry run said about one address: each resolved address, its ISP, its verdict. */
  function verdictList(answer) {
    const items = (answer.addresses || []).map((a) => {
      const isp = a.isps && a.isps.length ? a.isps.join(", ") : "no ISP";
      const why = a.reason ? (a.accepted ? " (" + a.reason + ")" : ": " + a.reason) : "";
      const verdict = (a.accepted ? "accepted" : "refused") + why;
      return h(
        "li." + (a.accepted ? "accepted" : "refused"),
        {},
        h("code", {}, a.address),
        " — ",
        h("span.isp", {}, isp),
        " — ",
        h("span.verdict", {}, verdict),
      );
    });
    const summary = answer.accepted
      ? h("p.summary.accepted", {}, answer.address + " would be accepted.")
      : h("p.summary.refused", {}, answer.address + " would be refused: " + (answer.reason || "no addresses"));
    return [summary, items.length ? h("ul.addresses", {}, items) : null];
  }

  class RuleEditor {
    constructor(rule, page) {
      this.page = page;
      this.rule = rule;
      this.priority = h("input", { name: "priority", type: "number", min: "1", step: "1", value: rule.priority, inputmode: "numeric" });
      this.type = select("type", TYPES, rule.type);
      this.prefix = h("input", { name: "prefix", value: rule.prefix, placeholder: "every key", spellcheck: "false" });
      this.address = h("input", { name: "address", value: rule.address, placeholder: "origin.example.com:8080", spellcheck: "false", autocomplete: "off" });
      this.standbys = h("input", { name: "standbys", value: rule.standbys.join(" "), placeholder: "backup.example.com 203.0.113.9:8080", spellcheck: "false", autocomplete: "off" });
      this.protocol = select("protocol", PROTOCOLS, rule.protocol);
      this.redirectCode = select("redirect-code", CODES.map((c) => [c, c]), rule.redirectCode);
      this.follow = h("input", { name: "follow-query", type: "checkbox", checked: rule.followQueryString });
      this.followRedirects = h("input", { name: "follow-redirects", type: "checkbox", checked: rule.followRedirects });
      this.verdict = h("div.verdict-box", { role: "status", "aria-live": "polite" });
      this.legend = h("legend", {});
      this.address.addEventListener("change", () => this.check());
      // A Mirror rule answers with the origin's bytes: it has no redirect code.
      const mirror = () => (this.redirectCode.disabled = this.type.value === "Mirror");
      this.type.addEventListener("change", mirror);
      mirror();
      this.standbys.addEventListener("change", () => this.check());
      const known = [rule.address, ...rule.standbys].map((a) => page.verdicts.get(a));
      if (rule.address && known.every(Boolean)) this.showVerdicts(known);
      this.node = h(
        "fieldset.rule",
        {},
        this.legend,
        h(
          "div.grid",
          {},
          field("Priority", this.priority, "Lowest first; unique"),
          field("Type", this.type, "Proxy and Mirror also store the object"),
          field("Key prefix", this.prefix, "Empty: every key"),
          field("Origin address", this.address, "host[:port]"),
          field("Redirect code", this.redirectCode),
          field("Protocol", this.protocol),
          wide(field("Standby origins", this.standbys, "Tried in turn when a copy fails; space-separated")),
          h(
            "div.checks",
            {},
            checkbox("Keep the query string", this.follow),
            checkbox("Follow the origin's redirects (up to 3)", this.followRedirects),
          ),
        ),
        rule.kept.length
          ? h("p.note.kept", {}, "Also in this rule, kept as saved: " + keptWords(rule.kept) + ".")
          : null,
        this.verdict,
        h(
          "div.actions",
          {},
          h("button", { type: "button", onclick: () => this.check() }, "Check address"),
          h("button.danger", { type: "button", onclick: () => page.remove(this) }, "Remove rule"),
        ),
      );
    }

    value() {
      return {
        priority: this.priority.value.trim(),
        type: this.type.value,
        prefix: this.prefix.value,
        address: this.address.value.trim(),
        standbys: addresses(this.standbys.value),
        protocol: this.protocol.value,
        redirectCode: this.redirectCode.value,
        followQueryString: this.follow.checked,
        followRedirects: this.followRedirects.checked,
        kept: this.rule.kept,
        xml: this.rule.xml,
      };
    }

    showVerdicts(answers) {
      const accepted = answers.every((a) => a.accepted);
      say(this.verdict, accepted ? "ok" : "error", ...answers.flatMap(verdictList));
      this.verdict.setAttribute("role", "status");
    }

    /* The dry run for this rule's address and standbys; resolves to whether all would be
     * accepted. */
    async check() {
      const address = this.address.value.trim();
      if (!address) {
        quiet(this.verdict);
        return false;
      }
      const all = [address, ...addresses(this.standbys.value)];
      say(this.verdict, "info", "Checking " + all.join(", ") + "…");
      try {
        const answers = await Promise.all(all.map((a) => api.checkOrigin(this.page.bucket, a)));
        answers.forEach((answer, n) => this.page.verdicts.set(all[n], answer));
        this.showVerdicts(answers);
        return answers.every((a) => a.accepted);
      } catch (e) {
        say(this.verdict, "error", describe(e));
        return false;
      }
    }
  }

  class OriginPage {
    constructor(container, bucket) {
      this.bucket = bucket;
      this.editors = [];
      this.saved = [];
      this.verdicts = new Map(); // address -> the last dry run's answer, kept across reloads
      this.message = h("div.message#origin-message", { hidden: true });
      this.switch = h("button.switch#origin-switch", { type: "button", role: "switch", "aria-checked": "false", onclick: () => this.toggle() }, h("span.knob", { "aria-hidden": "true" }), h("span.switch-text", {}, "Off"));
      this.rulesNode = h("div.rules");
      this.source = h("p.note", {});
      this.addButton = h("button", { type: "button", onclick: () => this.add() }, "Add rule");
      this.saveButton = h("button.primary#save-rules", { type: "button", onclick: () => this.save() }, "Save rules");
      this.resetButton = h("button", { type: "button", onclick: () => this.load() }, "Discard changes");
      this.editorNode = h(
        "div.editor",
        {},
        this.rulesNode,
        h("div.actions", {}, this.addButton, this.resetButton, this.saveButton),
      );
      container.append(
        h(
          "section.card",
          { "aria-labelledby": "origin-heading" },
          h("div.section-head", {}, h("h2#origin-heading", {}, "Back-to-origin"), h("div.switch-row", {}, h("span#origin-switch-label", {}, "Enabled"), this.switch)),
          h("p.note", {}, "A miss (a key not in the bucket) goes to the first rule whose prefix matches it: Proxy redirects the client and copies the object into the bucket, Redirect only redirects, Mirror sends the client the origin's bytes while storing them. Either way a stored object makes the next request a hit."),
          this.message,
          this.source,
          this.editorNode,
        ),
      );
      this.switch.setAttribute("aria-labelledby", "origin-switch-label");
      this.load();
    }

    setEnabled(on) {
      this.switch.setAttribute("aria-checked", on ? "true" : "false");
      this.switch.querySelector(".switch-text").textContent = on ? "On" : "Off";
      this.editorNode.hidden = !on;
    }

    show(rules) {
      this.editors = rules.map((r) => new RuleEditor(r, this));
      this.renumber();
      this.setEnabled(rules.length > 0);
    }

    renumber() {
      this.rulesNode.replaceChildren(...this.editors.map((e) => e.node));
      this.editors.forEach((e, n) => (e.legend.textContent = "Rule " + (n + 1)));
    }

    async load(keepMessage) {
      if (!keepMessage) quiet(this.message);
      try {
        this.saved = await api.getOrigin(this.bucket);
        this.show(this.saved);
        this.source.textContent = this.saved.length
          ? this.saved.length + (this.saved.length === 1 ? " rule" : " rules") + " in force."
          : "No rules: a miss answers 404 NoSuchKey.";
      } catch (e) {
        say(this.message, "error", "Could not read the origin rules: " + describe(e));
      }
    }

    add() {
      const used = this.editors.map((e) => parseInt(e.priority.value, 10) || 0);
      const editor = new RuleEditor(blankRule(Math.max(0, ...used) + 1), this);
      this.editors.push(editor);
      this.renumber();
      this.setEnabled(true);
      editor.address.focus();
    }

    remove(editor) {
      this.editors = this.editors.filter((e) => e !== editor);
      this.renumber();
      if (this.editors.length) this.editors[0].priority.focus();
      else this.addButton.focus();
    }

    async toggle() {
      const on = this.switch.getAttribute("aria-checked") === "true";
      if (!on) {
        if (!this.editors.length) this.add();
        else this.setEnabled(true);
        say(this.message, "info", "Fill in the origin, then save the rules.");
        return;
      }
      if (!this.saved.length) {
        this.show([]);
        quiet(this.message);
        return;
      }
      this.switch.disabled = true;
      try {
        await api.deleteOrigin(this.bucket);
        await this.load();
        if (this.saved.length) {
          say(this.message, "info", "The API's rules are deleted; the config file's origin: applies again. Turn it off in the config file.");
        } else {
          say(this.message, "ok", "Back-to-origin is off: misses answer 404 NoSuchKey.");
        }
      } catch (e) {
        say(this.message, "error", "Could not turn back-to-origin off: " + describe(e));
      } finally {
        this.switch.disabled = false;
      }
    }

    async save() {
      if (!this.editors.length) {
        say(this.message, "error", "Add a rule first, or switch back-to-origin off.");
        return;
      }
      this.saveButton.disabled = true;
      say(this.message, "info", "Checking the addresses…");
      try {
        // Show every address's ISP before saving; the API has the last word either way.
        await Promise.all(this.editors.map((e) => e.check()));
        say(this.message, "info", "Saving…");
        await api.putOrigin(this.bucket, this.editors.map((e) => e.value()));
        await this.load(true);
        say(this.message, "ok", "Saved: " + this.saved.length + (this.saved.length === 1 ? " rule" : " rules") + " in force.");
      } catch (e) {
        say(this.message, "error", "Not saved: " + describe(e));
      } finally {
        this.saveButton.disabled = false;
      }
    }
  }

  global.OriginPage = {
    render(container, bucket) {
      new OriginPage(container, bucket);
      return null;
    },
  };
})(window);
