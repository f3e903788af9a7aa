// sharelearn dashboard: live updates (server-sent events -> htmx refresh), log tails, signed approvals.
(function () {
  "use strict";
  function fire(name) { document.body.dispatchEvent(new CustomEvent(name)); }
  function follow() {
    document.querySelectorAll("pre.tail").forEach(function (p) { p.scrollTop = p.scrollHeight; });
  }
  document.addEventListener("DOMContentLoaded", function () {
    follow();
    var url = document.body.dataset.stream;
    if (url) {
      var first = true;
      var es = new EventSource(url);
      es.addEventListener("change", function () { if (first) { first = false; return; } fire("sl-change"); });
      es.addEventListener("end", function () { es.close(); fire("sl-change"); fire("sl-end"); });
      window.addEventListener("beforeunload", function () { es.close(); });
    }
    document.querySelectorAll("section.approval button").forEach(function (b) {
      b.addEventListener("click", function () { decide(b.closest("section"), b.dataset.decision); });
    });
  });
  document.addEventListener("htmx:afterSwap", follow);

  function readFile(id) {
    var f = document.getElementById(id).files[0];
    if (!f) { return Promise.reject(new Error("choose the party's " + id.replace("-file", "") + " file first")); }
    return f.text();
  }
  function pkcs8(pem) {
    var b64 = pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, "");
    return Uint8Array.from(atob(b64), function (c) { return c.charCodeAt(0); });
  }
  function derInt(bytes) {  // one ASN.1 INTEGER from a big-endian unsigned value
    var i = 0;
    while (i < bytes.length - 1 && bytes[i] === 0) { i++; }
    var v = Array.from(bytes.slice(i));
    if (v[0] & 0x80) { v.unshift(0); }
    return [0x02, v.length].concat(v);
  }
  function derSignature(raw) {  // WebCrypto's r||s -> the DER ECDSA-Sig-Value the coordinator verifies
    var r = derInt(raw.slice(0, 32)), s = derInt(raw.slice(32));
    return [0x30, r.length + s.length].concat(r, s);
  }
  function hex(bytes) { return bytes.map(function (b) { return ("0" + b.toString(16)).slice(-2); }).join(""); }

  async function decide(section, decision) {
    var out = section.querySelector(".result");
    try {
      var job = section.dataset.job, party = section.dataset.party;
      var reason = decision === "reject" ? section.querySelector(".reason").value : "";
      var keyPem = await readFile("key-file"), token = (await readFile("token-file")).trim();
      var q = new URLSearchParams({party: party, decision: decision, reason: reason});
      var got = await (await fetch("/api/v1/dashboard/approvals/" + job + "/payload?" + q)).json();
      var key = await crypto.subtle.importKey("pkcs8", pkcs8(keyPem), {name: "ECDSA", namedCurve: "P-256"}, false, ["sign"]);
      var raw = new Uint8Array(await crypto.subtle.sign({name: "ECDSA", hash: "SHA-256"}, key, new TextEncoder().encode(got.canonical)));
      var resp = await fetch("/api/v1/jobs/" + job + "/" + decision, {
        method: "POST",
        headers: {"Content-Type": "application/json", "Authorization": "Bearer " + token},
        body: JSON.stringify({payload: got.payload, signature: hex(derSignature(Array.from(raw)))}),
      });
      var body = await resp.json();
      out.textContent = resp.ok ? decision + "d: job " + body.state : "refused: " + body.detail;
      out.className = resp.ok ? "result done" : "result error";
    } catch (e) {
      out.textContent = String(e.message || e);
      out.className = "result error";
    }
  }
})();
