/**
 * The config's reachability section and what a node makes of it (node/runtime's natOptionsOf): on auto, a master
 * that listens beyond loopback relays, any other such node reserves a relay slot, and a node on loopback alone gets no
 * NAT services; explicit switches win; the relay's limits are read with their units. And status's words for each.
 */
import test from "ava";
import { reachabilityLines } from "../node/cli/node-commands.ts";
import { defaultConfig, parseConfig } from "../node/files/index.ts";
import { natOptionsOf } from "../node/runtime/index.ts";

const wide = ["/ip4/0.0.0.0/tcp/0"];
const loopback = ["/ip4/127.0.0.1/tcp/0"];

test("auto: masters beyond loopback relay, other nodes beyond loopback reserve a slot, loopback gets nothing", (t) => {
  const config = defaultConfig();
  t.deepEqual(natOptionsOf(config, wide, true), {
    relay: { maxReservations: 64, dataBytes: 8 * 1024 * 1024, durationMs: 120_000, reservationTtlMs: 3_600_000 },
    reserveRelay: false,
    upnp: false,
  });
  t.deepEqual(natOptionsOf(config, wide, false), { relay: null, reserveRelay: true, upnp: false });
  t.is(natOptionsOf(config, loopback, true), undefined);
  t.is(natOptionsOf(config, ["/memory/a"], false), undefined);
});

test("explicit switches and limits, with units; a wrong switch names the field", (t) => {
  const config = parseConfig(
    "reachability:\n  relay: true\n  reserveRelay: false\n  upnp: true\n  relayLimits:\n    data: 2MiB\n    durationMs: 30000\n",
    "config.yaml",
  );
  const options = natOptionsOf(config, loopback, false);
  t.deepEqual(options?.relay, {
    maxReservations: 64,
    dataBytes: 2 * 1024 * 1024,
    durationMs: 30_000,
    reservationTtlMs: 3_600_000,
  });
  t.is(options?.reserveRelay, false);
  t.is(options?.upnp, true);
  const error = t.throws(() => parseConfig("reachability:\n  relay: sometimes\n", "config.yaml"));
  t.regex(String(error?.message), /reachability\.relay/);
  t.regex(String(error?.message), /true, false or auto/);
});

test("status says how the node is reached", (t) => {
  const base = {
    confirmed: [],
    relays: [],
    relayAddresses: [],
    holePunched: [],
    relayedPeers: 0,
    relayService: null,
    upnp: false,
  };
  t.deepEqual(reachabilityLines(null), ["reachable    on loopback only: no NAT services (AutoNAT, relays)"]);
  t.regex(
    reachabilityLines({ ...base, kind: "public", confirmed: ["/ip4/203.0.113.7/tcp/4001"] })[0] ?? "",
    /^reachable +public: \/ip4\/203\.0\.113\.7\/tcp\/4001/,
  );
  const relayed = reachabilityLines({
    ...base,
    kind: "relayed",
    relays: ["12D3KooWRelay"],
    relayAddresses: ["/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWRelay/p2p-circuit"],
    holePunched: ["12D3KooWPeer"],
  });
  t.regex(relayed[0] ?? "", /^reachable +behind NAT, through relay 12D3KooWRelay/);
  t.regex(relayed[1] ?? "", /^hole punched direct after a hole punch with 12D3KooWPeer/);
  t.regex(reachabilityLines({ ...base, kind: "unknown" })[0] ?? "", /not known yet/);
});
