/* The console's one way to talk to the edge: COS-signed requests to its own origin.
 *
 * Every call is signed with the key pair the user signed in with (kept in sessionStorage
 * only, so it is gone when the tab closes), path style (/<bucket>/<key>: the bucket is in
 * the signed path), with every query parameter and the Host header signed. An answer that is
 * not 2xx becomes an ApiError carrying the API's own COS XML Code and Message, so the page
 * can show the user exactly what the API said.
 */
"use strict";

(function (global) {
  const SESSION_KEY = "cosedge-console-key";

  class ApiError extends Error {
    constructor(status, code, message, requestId) {
      super(message);
      this.status = status;
      this.code = code;
      this.requestId = requestId;
    }

    /* For the page: what the API said, in its words. */
    describe() {
      const code = this.code ? this.code + ": " : "";
      return code + this.message;
    }
  }

  const session = {
    get() {
      const raw = sessionStorage.getItem(SESSION_KEY);
      if (!raw) return null;
      try {
        const key = JSON.parse(raw);
        return key && key.secretId && key.secretKey ? key : null;
      } catch (e) {
        return null;
      }
    },
    set(secretId, secretKey) {
      sessionStorage.setItem(SESSION_KEY, JSON.stringify({ secretId, secretKey }));
    },
    clear() {
      sessionStorage.removeItem(SESSION_KEY);
    },
  };

  /* The URL of a decoded path and its query: each path segment percent-encoded. */
  function urlOf(path, params) {
    const encodedPath = path.split("/").map(encodeURIComponent).join("/");
    const query = Object.entries(params)
      .map(([k, v]) => (v === "" ? encodeURIComponent(k) : encodeURIComponent(k) + "=" + encodeURIComponent(v)))
      .join("&");
    return encodedPath + (query ? "?" + query : "");
  }

  function xmlText(doc, name) {
    const node = doc && doc.getElementsByTagName(name)[0];
    return node ? node.textContent.trim() : "";
  }

  function parseXml(text) {
    const doc = new DOMParser().parseFromString(text, "application/xml");
    return doc.getElementsByTagName("parsererror").length ? null : doc;
  }

  /* An ApiError from a refused answer: COS XML when the edge wrote it, else the status. */
  function refusal(response, text) {
    const requestId = response.headers.get("x-cos-request-id") || "";
    const doc = text ? parseXml(text) : null;
    const message = xmlText(doc, "Message");
    if (message) {
      return new ApiError(response.status, xmlText(doc, "Code"), message, xmlText(doc, "RequestId") || requestId);
    }
    const words = response.statusText || "the edge refused the request";
    return new ApiError(response.status, "HTTP " + response.status, words, requestId);
  }

  async function send(url, init) {
    try {
      return await fetch(url, Object.assign({ credentials: "omit", cache: "no-store" }, init));
    } catch (e) {
      throw new ApiError(0, "NetworkError", "cannot reach the edge (" + e.message + ")", "");
    }
  }

  /* One signed request; resolves to {status, headers, text} for a 2xx answer. */
  async function request(method, path, options) {
    const opts = options || {};
    const key = session.get();
    if (!key) throw new ApiError(0, "NotSignedIn", "sign in first", "");
    const params = opts.params || {};
    const authorization = await global.CosSign.sign(
      key.secretId,
      key.secretKey,
      method,
      path,
      params,
      { host: location.host },
    );
    const headers = { Authorization: authorization };
    if (opts.body !== undefined) headers["Content-Type"] = opts.contentType || "application/xml";
    const response = await send(urlOf(path, params), { method, headers, body: opts.body });
    const text = await response.text();
    if (!response.ok) throw refusal(response, text);
    return { status: response.status, headers: response.headers, text };
  }

  async function requestXml(method, path, options) {
    const answer = await request(method, path, options);
    const doc = parseXml(answer.text);
    if (!doc) throw new ApiError(answer.status, "BadAnswer", "the edge answered something that is not XML", "");
    return doc;
  }

  async function requestJson(method, path, options) {
    const answer = await request(method, path, options);
    try {
      return JSON.parse(answer.text);
    } catch (e) {
      throw new ApiError(answer.status, "BadAnswer", "the edge answered something that is not JSON", "");
    }
  }

  /* /metrics is the Prometheus scrape: plain, unsigned (a signed request is the API's). */
  async function metricsText() {
    const response = await send("/metrics", { method: "GET" });
    const text = await response.text();
    if (!response.ok) throw refusal(response, text);
    return text;
  }

  // --- the operations the pages use ---------------------------------------------------

  async function listBuckets() {
    const doc = await requestXml("GET", "/");
    return Array.from(doc.getElementsByTagName("Bucket"), (node) => ({
      name: xmlText(node, "Name"),
      location: xmlText(node, "Location"),
      created: xmlText(node, "CreationDate"),
    }));
  }

  /* The direct child elements of `node` named `name` (local names: a namespaced body too). */
  function children(node, name) {
    return Array.from(node.children).filter((c) => c.localName === name);
  }

  function childText(node, path) {
    let here = node;
    for (const name of path) {
      here = here && children(here, name)[0];
    }
    return here ? here.textContent.trim() : "";
  }

  // What the page edits of a rule; every other element (path rewrites, standby status codes,
  // header settings, whatever a later API adds) is kept as the API gave it.
  const EDITED = ["RulePriority", "OriginType", "OriginCondition", "OriginParameter", "OriginInfo"];

  function ruleFromXml(node) {
    const hostInfo = children(node, "OriginInfo").flatMap((i) => children(i, "HostInfo"))[0];
    const standbys = hostInfo
      ? Array.from(hostInfo.children)
          .filter((c) => /^StandbyHostName_[0-9]+$/.test(c.localName))
          .sort((a, b) => parseInt(a.localName.split("_")[1], 10) - parseInt(b.localName.split("_")[1], 10))
          .map((c) => c.textContent.trim())
      : [];
    const kept = Array.from(node.children)
      .filter((c) => !EDITED.includes(c.localName))
      .map((c) => c.localName);
    for (const info of children(node, "OriginInfo")) {
      for (const c of info.children) if (c.localName !== "HostInfo") kept.push(c.localName);
    }
    for (const parameter of children(node, "OriginParameter")) {
      for (const c of parameter.children) {
        if (!["Protocol", "FollowQueryString", "FollowRedirection", "HttpRedirectCode"].includes(c.localName)) {
          kept.push(c.localName);
        }
      }
    }
    return {
      priority: childText(node, ["RulePriority"]),
      type: childText(node, ["OriginType"]) || "Proxy",
      prefix: childText(node, ["OriginCondition", "Prefix"]),
      address: childText(node, ["OriginInfo", "HostInfo", "HostName"]),
      standbys,
      protocol: (childText(node, ["OriginParameter", "Protocol"]) || "HTTP").toUpperCase(),
      redirectCode: childText(node, ["OriginParameter", "HttpRedirectCode"]) || "302",
      followQueryString: childText(node, ["OriginParameter", "FollowQueryString"]) !== "false",
      followRedirects: childText(node, ["OriginParameter", "FollowRedirection"]) === "true",
      kept,
      xml: node,
    };
  }

  function rulesOf(doc) {
    return Array.from(doc.getElementsByTagName("OriginRule"), ruleFromXml);
  }

  /* The rules in force, or [] when the bucket has none (NoSuchOriginConfiguration). */
  async function getOrigin(bucket) {
    try {
      return rulesOf(await requestXml("GET", "/" + bucket + "/", { params: { origin: "" } }));
    } catch (e) {
      if (e instanceof ApiError && e.code === "NoSuchOriginConfiguration") return [];
      throw e;
    }
  }

  /* COS's PutBucketOrigin body. A rule read from the API is sent back as it came, with only
   * the edited elements changed; values go as typed, for the API to judge. */
  function originXml(rules) {
    const doc = document.implementation.createDocument(null, "OriginConfiguration", null);
    const make = (name) => doc.createElementNS(null, name);
    const child = (parent, name, before) => {
      const found = children(parent, name)[0];
      if (found) return found;
      const node = make(name);
      const next = before && before.map((n) => children(parent, n)[0]).find(Boolean);
      parent.insertBefore(node, next || null);
      return node;
    };
    const set = (parent, name, text, before) => {
      child(parent, name, before).textContent = String(text);
    };
    for (const rule of rules) {
      const node = rule.xml ? doc.importNode(rule.xml, true) : make("OriginRule");
      doc.documentElement.appendChild(node);
      // A missing element goes before the first of the names after it, in COS's order.
      set(node, "RulePriority", rule.priority, EDITED.slice(1));
      set(node, "OriginType", rule.type, EDITED.slice(2));
      const condition = child(node, "OriginCondition", EDITED.slice(3));
      set(condition, "HTTPStatusCode", childText(condition, ["HTTPStatusCode"]) || "404");
      set(condition, "Prefix", rule.prefix);
      const parameter = child(node, "OriginParameter", EDITED.slice(4));
      set(parameter, "Protocol", rule.protocol || "HTTP", ["TransparentErrorCode", "FollowQueryString"]);
      set(parameter, "FollowQueryString", rule.followQueryString ? "true" : "false", ["HttpHeader", "FollowRedirection"]);
      set(parameter, "FollowRedirection", rule.followRedirects ? "true" : "false", ["FollowRedirectionConfiguration", "HttpRedirectCode"]);
      if (rule.type === "Mirror") {
        for (const code of children(parameter, "HttpRedirectCode")) parameter.removeChild(code);
      } else {
        set(parameter, "HttpRedirectCode", rule.redirectCode, ["CopyOriginData", "HTTPStandbyCode"]);
      }
      const info = child(node, "OriginInfo", ["HTTPStandbyCode"]);
      const host = child(info, "HostInfo", ["FileInfo"]);
      set(host, "HostName", rule.address);
      for (const old of Array.from(host.children)) {
        if (/^StandbyHostName_/.test(old.localName)) host.removeChild(old);
      }
      (rule.standbys || []).forEach((standby, n) => {
        host.appendChild(make("StandbyHostName_" + (n + 1))).textContent = standby;
      });
    }
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + new XMLSerializer().serializeToString(doc);
  }

  function putOrigin(bucket, rules) {
    return request("PUT", "/" + bucket + "/", { params: { origin: "" }, body: originXml(rules) });
  }

  function deleteOrigin(bucket) {
    return request("DELETE", "/" + bucket + "/", { params: { origin: "" } });
  }

  /* The dry run of PUT ?origin for one address: resolved addresses, ISPs, verdicts. */
  function checkOrigin(bucket, address) {
    return requestJson("GET", "/" + bucket + "/", {
      params: { "cosedge-origin-check": "", address },
    });
  }

  function copies(bucket, marker) {
    const params = { "cosedge-copies": "" };
    if (marker) params.marker = String(marker);
    return requestJson("GET", "/" + bucket + "/", { params });
  }

  function copyStatus(bucket, key) {
    return requestJson("GET", "/" + bucket + "/" + key, { params: { "cosedge-copy": "" } });
  }

  /* Labels of one exposition line's {a="b",...}, unescaped. */
  function labelsOf(text) {
    const labels = {};
    const pattern = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
    let match;
    while ((match = pattern.exec(text)) !== null) {
      labels[match[1]] = match[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    }
    return labels;
  }

  /* Samples of one metric in a Prometheus text exposition: [{labels, value}]. */
  function samples(text, metric) {
    const found = [];
    for (const line of text.split("\n")) {
      if (!line.startsWith(metric)) continue;
      const rest = line.slice(metric.length);
      let labels = {};
      let valueText = rest;
      if (rest.startsWith("{")) {
        const end = rest.lastIndexOf("}");
        labels = labelsOf(rest.slice(1, end));
        valueText = rest.slice(end + 1);
      } else if (!rest.startsWith(" ")) {
        continue; // another metric whose name starts with this one's
      }
      const value = parseFloat(valueText.trim().split(/\s+/)[0]);
      if (!Number.isNaN(value)) found.push({ labels, value });
    }
    return found;
  }

  /* A bucket's requests by outcome, from cosedge_requests_total. */
  async function requestOutcomes(bucket) {
    const outcomes = { hit: 0, redirect: 0, not_found: 0, error: 0 };
    for (const sample of samples(await metricsText(), "cosedge_requests_total")) {
      if (sample.labels.bucket !== bucket) continue;
      const outcome = sample.labels.outcome;
      outcomes[outcome] = (outcomes[outcome] || 0) + sample.value;
    }
    return outcomes;
  }

  global.CosApi = {
    ApiError,
    session,
    request,
    listBuckets,
    getOrigin,
    rulesOf,
    parseXml,
    originXml,
    putOrigin,
    deleteOrigin,
    checkOrigin,
    copies,
    copyStatus,
    samples,
    requestOutcomes,
  };
})(window);
