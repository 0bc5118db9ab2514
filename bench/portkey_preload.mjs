// Loaded into Portkey's gateway by bench_field.py (node --import), and nothing else changes in it.
//
// 1. Every fetch() answer is re-wrapped in a native Response with a fresh, mutable Headers: the same
//    body stream (nothing is read or buffered here), status and status text. Portkey 1.15 keeps the
//    upstream's fetch() answer for streamed requests and its updateHeaders() then appends to the
//    answer's immutable Headers: "TypeError: immutable", and the client gets "Something went wrong".
// 2. Its CLI listens on every interface (server.listen(port) with no host); a listen() call with a
//    port and no host is given PORTKEY_BENCH_HOST (default 127.0.0.1) instead.
import net from "node:net";

const nativeFetch = globalThis.fetch;
const NativeResponse = globalThis.Response;
const NativeHeaders = globalThis.Headers;

globalThis.fetch = async function fetchWithMutableHeaders(...args) {
  const answer = await nativeFetch.apply(this, args);
  return new NativeResponse(answer.body, {
    status: answer.status,
    statusText: answer.statusText,
    headers: new NativeHeaders(answer.headers),
  });
};

const host = process.env.PORTKEY_BENCH_HOST || "127.0.0.1";
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function listenOnHost(...args) {
  if (typeof args[0] === "number" && (args[1] === undefined || typeof args[1] === "function")) {
    args.splice(1, args[1] === undefined ? 1 : 0, host);
  }
  return listen.apply(this, args);
};
