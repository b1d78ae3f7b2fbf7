/* COS request signatures (q-sign-algorithm=sha1) made in the browser with WebCrypto.
 *
 * The same algorithm as edge/api/signature.py, step for step, so the edge verifies what the
 * console signs (tests/browser/test_signer.py checks both give the same signature):
 *
 *   FormatString = method\npath\nparams\nheaders\n
 *   StringToSign = sha1\n<q-sign-time>\nsha1hex(FormatString)\n
 *   SignKey      = hmac_sha1_hex(SecretKey, <q-key-time>)
 *   Signature    = hmac_sha1_hex(SignKey, StringToSign)
 *
 * params and headers: names lowercased after percent-encoding, names and values encoded
 * with only -_.~ left as they are, sorted, joined k=v&k=v. Everything is UTF-8.
 */
"use strict";

(function (global) {
  const ALGORITHM = "sha1";
  const utf8 = new TextEncoder();

  function hex(buffer) {
    return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  /* Python's urllib.parse.quote(text, safe="-_.~"): encodeURIComponent also spares !'()*. */
  function encode(text) {
    return encodeURIComponent(String(text)).replace(
      /[!'()*]/g,
      (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase(),
    );
  }

  /* [k=v&k=v over the encoded, lowercased names, the ;-joined name list]. */
  function canonical(pairs) {
    const encoded = new Map();
    for (const [name, value] of Object.entries(pairs || {})) {
      encoded.set(encode(name).toLowerCase(), encode(value));
    }
    const names = Array.from(encoded.keys()).sort();
    return [names.map((n) => n + "=" + encoded.get(n)).join("&"), names.join(";")];
  }

  /* WebCrypto exists only in a secure context: https, or http to localhost / 127.0.0.1. */
  const UNAVAILABLE =
    "the browser offers WebCrypto only to https pages or to http://localhost and " +
    "http://127.0.0.1 pages; open the console through one of those (an SSH tunnel, say)";

  function available() {
    return Boolean(global.isSecureContext && global.crypto && global.crypto.subtle);
  }

  function subtle() {
    if (!available()) {
      throw new Error(UNAVAILABLE);
    }
    return global.crypto.subtle;
  }

  async function sha1Hex(text) {
    return hex(await subtle().digest("SHA-1", utf8.encode(text)));
  }

  async function hmacSha1Hex(key, text) {
    const cryptoKey = await subtle().importKey(
      "raw",
      utf8.encode(key),
      { name: "HMAC", hash: "SHA-1" },
      false,
      ["sign"],
    );
    return hex(await subtle().sign("HMAC", cryptoKey, utf8.encode(text)));
  }

  async function stringToSign(method, path, params, headers, signTime) {
    const [paramsText] = canonical(params);
    const [headersText] = canonical(headers);
    const formatString =
      method.toLowerCase() + "\n" + path + "\n" + paramsText + "\n" + headersText + "\n";
    return ALGORITHM + "\n" + signTime + "\n" + (await sha1Hex(formatString)) + "\n";
  }

  async function signature(secretKey, keyTime, toSign) {
    const signKey = await hmacSha1Hex(secretKey, keyTime);
    return hmacSha1Hex(signKey, toSign);
  }

  /* The Authorization value for one request. `now` (seconds) and `expires` as in the
   * Python sign(): valid from a minute before now for `expires` seconds. */
  async function sign(secretId, secretKey, method, path, params, headers, options) {
    const opts = options || {};
    const now = opts.now === undefined || opts.now === null ? Date.now() / 1000 : opts.now;
    const expires = opts.expires === undefined ? 600 : opts.expires;
    const start = Math.floor(now);
    const signTime = start - 60 + ";" + (start + expires);
    const toSign = await stringToSign(method, path, params || {}, headers || {}, signTime);
    const paramNames = canonical(params)[1];
    const headerNames = canonical(headers)[1];
    return (
      "q-sign-algorithm=" + ALGORITHM +
      "&q-ak=" + secretId +
      "&q-sign-time=" + signTime +
      "&q-key-time=" + signTime +
      "&q-header-list=" + headerNames +
      "&q-url-param-list=" + paramNames +
      "&q-signature=" + (await signature(secretKey, signTime, toSign))
    );
  }

  global.CosSign = { UNAVAILABLE, available, encode, canonical, stringToSign, signature, sign };
})(window);
