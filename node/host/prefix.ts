/**
 * The network prefix of a connection's remote address: what a master compares so that replicas of one shard go to
 * workers on distinct networks (jobs/master.ts). Identities are free; addresses are not: an attacker's many keys
 * usually sit behind few of them.
 *
 * IPv4: the /24 (a home or small office network, a cloud subnet); IPv6: the /48 (the usual end-site allocation,
 * RFC 6177). A relayed connection (/p2p-circuit) is judged by its relay's address, conservatively: peers that reach
 * us through one relay count as one network. Anything else (in-process memory transport, DNS names never resolved)
 * is named as it is, so distinct ones stay distinct and equal ones equal.
 */
import { isIPv4, isIPv6 } from "node:net";

/** Bits of an IPv4 address that name its network here. */
export const ipv4PrefixBits = 24;
/** Bits of an IPv6 address that name its network here. */
export const ipv6PrefixBits = 48;

function ipv6Groups(address: string): number[] | null {
  if (!isIPv6(address)) return null;
  const [head = "", tail] = address.split("::") as [string, string?];
  const part = (text: string) => (text === "" ? [] : text.split(":"));
  let left = part(head);
  let right = tail === undefined ? [] : part(tail);
  // An embedded IPv4 tail (::ffff:192.0.2.1) is two groups.
  const embed = (groups: string[]) => {
    const last = groups[groups.length - 1];
    if (last === undefined || !isIPv4(last)) return groups;
    const [a, b, c, d] = last.split(".").map(Number) as [number, number, number, number];
    return [...groups.slice(0, -1), ((a << 8) | b).toString(16), ((c << 8) | d).toString(16)];
  };
  left = embed(left);
  right = embed(right);
  const missing = 8 - left.length - right.length;
  if (tail === undefined ? missing !== 0 : missing < 0) return null;
  return [...left, ...Array.from({ length: missing }, () => "0"), ...right].map((group) => Number.parseInt(group, 16));
}

/** The prefix of one IP address as text, or null when it is none. */
export function ipPrefixOf(address: string): string | null {
  if (isIPv4(address)) {
    const octets = address.split(".").slice(0, ipv4PrefixBits / 8);
    return `${octets.join(".")}.0/${ipv4PrefixBits}`;
  }
  const groups = ipv6Groups(address);
  if (groups === null) return null;
  // An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is that IPv4 address.
  if (groups.slice(0, 5).every((group) => group === 0) && groups[5] === 0xffff) {
    const [high, low] = [groups[6] as number, groups[7] as number];
    return ipPrefixOf(`${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`);
  }
  const kept = groups.slice(0, ipv6PrefixBits / 16).map((group) => group.toString(16));
  return `${kept.join(":")}::/${ipv6PrefixBits}`;
}

/** The network prefix of a multiaddr (as text): its relay's for a relayed address. */
export function networkPrefixOf(address: string): string {
  const parts = address.split("/").filter((part) => part !== "");
  const circuit = parts.indexOf("p2p-circuit");
  const direct = circuit >= 0 ? parts.slice(0, circuit) : parts;
  for (let i = 0; i + 1 < direct.length; i++) {
    if (direct[i] !== "ip4" && direct[i] !== "ip6") continue;
    const prefix = ipPrefixOf(direct[i + 1] as string);
    if (prefix !== null) return circuit >= 0 ? `relay ${prefix}` : prefix;
  }
  return direct.join("/");
}
