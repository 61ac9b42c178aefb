/**
 * The serving side of the transfer benchmark (bench/transfer.ts), in its own
 * process so that every copy crosses a real socket between two event loops:
 *
 *   node bench/transfer-serve.ts <blob store folder> <source folder> <identity seed, 64 hex>
 *
 * - a libp2p host (node/host, TCP on 127.0.0.1) serving the blob store's
 *   blobs on the blob protocol (node/host's serveBlobs), as a master does;
 * - a plain node:net server on 127.0.0.1: a client sends one file's path
 *   (relative to the source folder) and a newline, and gets the file's bytes,
 *   then the end of the stream. Only the files present at start are served.
 *
 * Prints one JSON line on stdout once both listen: {"peerId","address","tcpPort"}.
 * Stops (host, server, exit 0) when its stdin ends or on SIGTERM/SIGINT.
 */
import { createReadStream } from "node:fs";
import { readdir } from "node:fs/promises";
import { createServer, type Socket } from "node:net";
import { join } from "node:path";
import { identityFromSeed } from "../crypto/index.ts";
import { createHost, openBlobStore, serveBlobs } from "../node/index.ts";

/** A request line (a file's relative path and a newline) longer than this is refused. */
const maxRequestLineBytes = 4096;
/** A client that sends no complete request line within this is hung up on. */
const requestTimeoutMs = 10_000;
/** Bound on stopping the libp2p host before the process exits anyway. */
const stopTimeoutMs = 10_000;
const loopback = "127.0.0.1";

const [storeRoot, sourceFolder, seedHex] = process.argv.slice(2);
if (storeRoot === undefined || sourceFolder === undefined || seedHex === undefined || !/^[0-9a-f]{64}$/.test(seedHex)) {
  console.error("usage: node bench/transfer-serve.ts <blob store folder> <source folder> <identity seed, 64 hex>");
  process.exit(2);
}

/** Relative path → absolute path of every regular file under the source folder, as it is now. */
async function filesUnder(folder: string): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  for (const entry of await readdir(folder, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const absolute = join(entry.parentPath, entry.name);
    files.set(absolute.slice(folder.length + 1), absolute);
  }
  return files;
}

const files = await filesUnder(sourceFolder);
const store = await openBlobStore(storeRoot);
const host = await createHost({
  identity: identityFromSeed(new Uint8Array(Buffer.from(seedHex, "hex"))),
  listen: [`/ip4/${loopback}/tcp/0`],
  bootstrap: [],
  ipColocationWeight: 0,
  connectionMonitor: false,
});
await serveBlobs(host, store);

const sockets = new Set<Socket>();
const server = createServer((socket) => {
  sockets.add(socket);
  socket.once("close", () => sockets.delete(socket));
  socket.setTimeout(requestTimeoutMs, () => socket.destroy());
  let line = "";
  const onData = (text: string) => {
    line += text;
    const end = line.indexOf("\n");
    if (end === -1) {
      if (line.length > maxRequestLineBytes) socket.destroy();
      return;
    }
    socket.off("data", onData);
    socket.setTimeout(0);
    const path = files.get(line.slice(0, end));
    if (path === undefined) {
      socket.destroy();
      return;
    }
    createReadStream(path)
      .on("error", () => socket.destroy())
      .pipe(socket);
  };
  socket.setEncoding("utf8").on("data", onData);
  socket.on("error", () => socket.destroy());
});
await new Promise<void>((resolve, reject) => {
  server.once("error", reject);
  server.listen(0, loopback, () => resolve());
});
const tcpAddress = server.address();
if (tcpAddress === null || typeof tcpAddress === "string") throw new Error("expected a TCP address");

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  const forced = setTimeout(() => process.exit(1), stopTimeoutMs);
  for (const socket of sockets) socket.destroy();
  server.close();
  await host.stop().catch(() => undefined);
  clearTimeout(forced);
  process.exit(0);
};
process.once("SIGTERM", () => void stop());
process.once("SIGINT", () => void stop());
process.stdin.on("end", () => void stop());
process.stdin.resume();

const address = host.multiaddrs().find((text) => text.includes(`/ip4/${loopback}/tcp/`)) ?? host.multiaddrs()[0];
process.stdout.write(`${JSON.stringify({ peerId: host.peerId, address, tcpPort: tcpAddress.port })}\n`);
