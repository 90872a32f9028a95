// Trail's integrity check in the browser, shared by the console and the embedded viewer: an event's
// inclusion proof is recomputed up to its signed checkpoint's root, and the checkpoint's signature is
// checked against the log key where the browser has Ed25519 in WebCrypto.
"use strict";

const b64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
};
const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

// RFC 9162 §2.1.3.2: the root an inclusion proof leads to.
async function rootFromInclusion(leaf, index, size, path) {
  if (index >= size) throw new Error("the proof's index lies beyond the tree");
  let fn = BigInt(index);
  let sn = BigInt(size - 1);
  let r = leaf;
  for (const p of path) {
    if (sn === 0n) throw new Error("the proof is too long");
    if ((fn & 1n) === 1n || fn === sn) {
      r = await sha256(concat([1], p, r));
      if ((fn & 1n) === 0n) {
        while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
      }
    } else {
      r = await sha256(concat([1], r, p));
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) throw new Error("the proof is too short");
  return r;
}

// The checkpoint's signature against the log key, where the browser has Ed25519 in WebCrypto.
async function checkSignature(note) {
  const vkey = (await (await fetch("/v1/log-key")).text()).trim();
  // <name>+<key id>+<base64 key>: the base64 may itself contain '+'.
  const first = vkey.indexOf("+");
  const second = vkey.indexOf("+", first + 1);
  const name = vkey.slice(0, first);
  const keyB64 = vkey.slice(second + 1);
  const key = b64(keyB64).slice(1);
  const split = note.indexOf("\n\n");
  const text = new TextEncoder().encode(note.slice(0, split + 1));
  const line = note.slice(split + 2).split("\n").find((l) => l.startsWith(`\u2014 ${name} `));
  if (!line) return "no signature by the log key";
  const sig = b64(line.split(" ")[2]).slice(4);
  let k;
  try {
    k = await crypto.subtle.importKey("raw", key, { name: "Ed25519" }, false, ["verify"]);
  } catch (e) {
    console.warn("Ed25519 key import failed", e);
    window.trailSignatureError = `${e && e.name}: ${e && e.message}`;
    return e && e.name === "NotSupportedError" ? "unsupported" : `the log key cannot be used: ${e}`;
  }
  return (await crypto.subtle.verify({ name: "Ed25519" }, k, sig, text)) ? "ok" : "bad signature";
}

// What the badge of an event (as GET /v1/orgs/{org}/events/{id} answers it) says: `null` while it
// waits for the next checkpoint, else { cls: "ok" | "bad" | "pending", text }.
async function verifyEvent(ev) {
  if (!window.crypto?.subtle) {
    return { cls: "pending", text: "Integrity: this browser cannot verify here (needs HTTPS or localhost)" };
  }
  if (ev.proof_pending) return null;
  try {
    const note = ev.proof.checkpoint;
    const body = note.split("\n");
    const size = Number(body[1]);
    const root = b64(body[2]);
    if (size !== ev.proof.tree_size) throw new Error("the proof is for another tree size than the checkpoint");
    const computed = await rootFromInclusion(b64(ev.leaf_hash), ev.seq, size, ev.proof.hashes.map(b64));
    if (!equal(computed, root)) throw new Error("the inclusion proof does not lead to the checkpoint's root");
    const sig = await checkSignature(note);
    if (sig === "ok") return { cls: "ok", text: `Integrity verified: event ${ev.seq} is in the signed log of ${size} events` };
    if (sig === "unsupported") {
      return { cls: "ok", text: `Integrity: inclusion in the log of ${size} events verified (signature not checkable in this browser)` };
    }
    throw new Error(sig);
  } catch (err) {
    return { cls: "bad", text: `Integrity check FAILED: ${err.message}` };
  }
}
