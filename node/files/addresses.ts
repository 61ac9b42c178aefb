/**
 * The libp2p addresses a person types: where a node listens (`--listen`, the
 * config's `listen`) and the peers it meets first (`--bootstrap`, the
 * config's `bootstrap`). Checked before a node opens anything, so a mistyped
 * address is one line naming the value and what a multiaddr looks like, not
 * a node half started.
 *
 * A listen address is a transport address this node can bind: an IP (or DNS
 * name) and a TCP port, or an in-process `/memory/<name>`. A bootstrap
 * address is a peer's: the same, then `/p2p/<its PeerId>` (a `/dnsaddr/`
 * name carries its own addresses), where the PeerId may be left out (the
 * handshake learns it) but is better given: a dial then reaches that node
 * or fails.
 */
import { peerIdFromString } from "@libp2p/peer-id";
import { type Component, multiaddr } from "@multiformats/multiaddr";

/** What a listen address looks like, for errors. */
export const listenExample = "/ip4/0.0.0.0/tcp/4001 (any interface, port 4001) or /ip4/127.0.0.1/tcp/0 (any free port)";
/** What a bootstrap address looks like, for errors: the line `cimesh start` prints there. */
export const bootstrapExample = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW… (the peer's address, port and PeerId)";
/** Characters of a wrong value quoted back in an error. */
export const maxQuotedAddressChars = 120;
/** Characters of an Ed25519 PeerId in base58 (12D3KooW…), the kind every cimesh node has. */
export const ed25519PeerIdChars = 52;

export type AddressRole = "listen" | "bootstrap";

const ipProtocols: ReadonlySet<string> = new Set(["ip4", "ip6", "dns", "dns4", "dns6"]);

function quoted(text: string): string {
  return JSON.stringify(text.length > maxQuotedAddressChars ? `${text.slice(0, maxQuotedAddressChars)}…` : text);
}

/** `host:port` (or `[v6]:port`) as people write it elsewhere, as the multiaddr that means the same; null otherwise. */
function hostPortForm(text: string, role: AddressRole): string | null {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+)|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(text.trim());
  if (match === null) return null;
  const [, v6, v4, name, port] = match;
  const head = v6 !== undefined ? `/ip6/${v6}` : v4 !== undefined ? `/ip4/${v4}` : `/dns/${name}`;
  return `${head}/tcp/${port}${role === "bootstrap" ? "/p2p/<its PeerId>" : ""}`;
}

function expected(role: AddressRole): string {
  return role === "listen"
    ? `expected a multiaddr to listen on, such as ${listenExample}`
    : `expected a peer's multiaddr, such as ${bootstrapExample}`;
}

/** Whether the components name a transport this node speaks: IP or DNS then TCP, or in-process memory. */
function transportProblem(components: readonly Component[]): string | null {
  const [first, second] = components;
  if (first?.name === "memory") return null;
  if (first === undefined || !ipProtocols.has(first.name))
    return `it starts with /${first?.name ?? ""}, where an address starts with /ip4, /ip6 or /dns`;
  if (second?.name !== "tcp") return `it has /${second?.name ?? "(nothing)"} after /${first.name}, where TCP is needed`;
  return null;
}

/**
 * What is wrong with an address for its role, as the rest of a sentence that starts with the field's name ("expected
 * …, got …"); null when it is fine.
 */
export function addressProblem(role: AddressRole, text: string): string | null {
  const got = `got ${quoted(text)}`;
  const hint = hostPortForm(text, role);
  if (hint !== null) return `${expected(role)}, ${got} (written as a multiaddr: ${hint})`;
  // The PeerId first: the multiaddr parser takes any text there, and libp2p's own error would not say which part.
  const p2p = /\/p2p\/([^/]*)/.exec(text);
  if (p2p !== null) {
    if (role === "listen")
      return `${expected(role)}, ${got}: a listen address has no /p2p/ part (the node's PeerId is its key's)`;
    const id = p2p[1] ?? "";
    try {
      peerIdFromString(id);
    } catch (error) {
      return `expected a PeerId after /p2p/ (12D3KooW…, ${ed25519PeerIdChars} characters: \`cimesh id\` on that node prints it), got the PeerId part ${quoted(id)} of ${quoted(text)}, which is not one (${(error as Error).message}: ${id.length} characters)`;
    }
  }
  let components: Component[];
  try {
    components = multiaddr(text).getComponents();
  } catch (error) {
    return `${expected(role)}, ${got} (${(error as Error).message})`;
  }
  const first = components[0];
  if (role === "bootstrap" && first?.name === "dnsaddr") return null;
  const transport = transportProblem(components);
  if (transport !== null) return `${expected(role)}, ${got}: ${transport}`;
  return null;
}
