/**
 * A small internet in network namespaces for the NAT test: a public namespace (a bridge, and the nodes on it), and
 * home networks, each a router namespace that masquerades (nftables) its LAN namespace behind its one public address.
 * Every namespace, veth and nft table made is named with the lab's own suffix and removed by `remove` (namespaces take
 * their veths along); needs root.
 *
 * The public side uses 11.0.0.0/24: libp2p's AutoNAT checks only addresses outside the private and documentation
 * ranges, and these namespaces have no link to the machine's own network, so nothing leaves them.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";

/** Bound on one ip or nft command. */
const commandTimeoutMs = 10_000;
/** The public network's prefix (a /24) and the address of its first node. */
export const publicPrefix = "11.0.0";

/**
 * A system tool's path, from the PATH's folders outside node_modules: under npm, node_modules/.bin comes first and
 * may hold a package's command of the same name (@vercel/nft's `nft`).
 */
export function systemTool(name: string): string | null {
  for (const folder of (process.env.PATH ?? "").split(":")) {
    if (folder === "" || folder.includes("node_modules")) continue;
    const path = join(folder, name);
    if (existsSync(path)) return path;
  }
  for (const folder of ["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
    if (existsSync(join(folder, name))) return join(folder, name);
  return null;
}

/** The nft command: the system's. */
const nft = () => systemTool("nft") ?? "nft";

function run(file: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: commandTimeoutMs }, (error, stdout, stderr) => {
      if (error === null) resolve(stdout);
      else reject(new Error(`${file} ${args.join(" ")}: ${stderr || error.message}`));
    });
  });
}

/** Why this process cannot build the lab (not root, no ip or nft), or null when it can. */
export async function labMissing(): Promise<string | null> {
  if (process.getuid?.() !== 0)
    return `not root (uid ${process.getuid?.()}): this test makes network namespaces and nftables NAT, and needs root`;
  for (const tool of ["ip", "nft"])
    if (systemTool(tool) === null)
      return `${tool} is not on the PATH: run \`cimesh setup --with-test-deps\` (iproute2, nftables)`;
  return null;
}

export interface Home {
  /** The namespace of the machines behind the router. */
  readonly lan: string;
  /** The router's namespace. */
  readonly router: string;
  /** The router's public address, the one the home's traffic leaves with. */
  readonly publicAddress: string;
  /** The address of the machine in `lan`. */
  readonly lanAddress: string;
}

export class Lab {
  readonly suffix = randomBytes(3).toString("hex");
  /** The public namespace: its bridge holds `${publicPrefix}.1` for a node of its own. */
  readonly publicNs = `cmn-${this.suffix}-pub`;
  readonly publicAddress = `${publicPrefix}.1`;
  private readonly namespaces: string[] = [];
  private readonly tables: { ns: string; table: string }[] = [];
  readonly nftTable = `cimesh_nat_${this.suffix}`;

  private async namespace(name: string): Promise<void> {
    await run("ip", ["netns", "add", name]);
    this.namespaces.push(name);
    await run("ip", ["-n", name, "link", "set", "lo", "up"]);
  }

  /** The public namespace and its bridge. */
  async init(): Promise<void> {
    await this.namespace(this.publicNs);
    const ns = this.publicNs;
    await run("ip", ["-n", ns, "link", "add", "br0", "type", "bridge"]);
    await run("ip", ["-n", ns, "addr", "add", `${this.publicAddress}/24`, "dev", "br0"]);
    await run("ip", ["-n", ns, "link", "set", "br0", "up"]);
  }

  /** A home network number `index` (1, 2...): a router with public address `${publicPrefix}.(index + 1)`, masquerading 10.index.0.0/24. */
  async addHome(index: number): Promise<Home> {
    const router = `cmn-${this.suffix}-r${index}`;
    const lan = `cmn-${this.suffix}-h${index}`;
    await this.namespace(router);
    await this.namespace(lan);
    const publicAddress = `${publicPrefix}.${index + 1}`;
    const routerLan = `10.${index}.0.1`;
    const lanAddress = `10.${index}.0.2`;
    // The router's WAN on the public bridge, its LAN to the home machine.
    await run("ip", [
      "link",
      "add",
      "wan",
      "netns",
      router,
      "type",
      "veth",
      "peer",
      "name",
      `up${index}`,
      "netns",
      this.publicNs,
    ]);
    await run("ip", ["-n", this.publicNs, "link", "set", `up${index}`, "master", "br0", "up"]);
    await run("ip", ["-n", router, "addr", "add", `${publicAddress}/24`, "dev", "wan"]);
    await run("ip", ["-n", router, "link", "set", "wan", "up"]);
    await run("ip", ["link", "add", "lan", "netns", router, "type", "veth", "peer", "name", "eth0", "netns", lan]);
    await run("ip", ["-n", router, "addr", "add", `${routerLan}/24`, "dev", "lan"]);
    await run("ip", ["-n", router, "link", "set", "lan", "up"]);
    await run("ip", ["-n", lan, "addr", "add", `${lanAddress}/24`, "dev", "eth0"]);
    await run("ip", ["-n", lan, "link", "set", "eth0", "up"]);
    await run("ip", ["-n", lan, "route", "add", "default", "via", routerLan]);
    // Other homes' private addresses are refused at once, as an internet router would not route them.
    await run("ip", ["-n", router, "route", "add", "unreachable", "10.0.0.0/8"]);
    await run("ip", ["netns", "exec", router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
    await run("ip", [
      "netns",
      "exec",
      router,
      nft(),
      [
        `add table ip ${this.nftTable};`,
        `add chain ip ${this.nftTable} post { type nat hook postrouting priority 100 ; };`,
        `add rule ip ${this.nftTable} post oifname "wan" masquerade`,
      ].join(" "),
    ]);
    this.tables.push({ ns: router, table: this.nftTable });
    return { lan, router, publicAddress, lanAddress };
  }

  /** Removes every nft table and namespace made (veths go with their namespaces); what fails is reported after the rest. */
  async remove(): Promise<void> {
    const problems: string[] = [];
    for (const { ns, table } of this.tables.splice(0))
      await run("ip", ["netns", "exec", ns, nft(), "delete", "table", "ip", table]).catch((error: Error) => {
        problems.push(error.message);
      });
    for (const ns of this.namespaces.splice(0).reverse())
      await run("ip", ["netns", "del", ns]).catch((error: Error) => {
        problems.push(error.message);
      });
    if (problems.length > 0) throw new Error(`lab removal: ${problems.join("; ")}`);
  }

  /** Namespaces of this lab still present (none after `remove`). */
  async leftOver(): Promise<string[]> {
    const list = await run("ip", ["netns", "list"]);
    return list
      .split("\n")
      .map((line) => line.split(" ")[0] ?? "")
      .filter((name) => name.startsWith(`cmn-${this.suffix}-`));
  }
}
