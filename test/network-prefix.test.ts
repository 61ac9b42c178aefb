import test from "ava";
import { ipPrefixOf, networkPrefixOf } from "../node/host/index.ts";

test("IPv4 addresses share a prefix exactly when their first 24 bits agree", (t) => {
  t.is(ipPrefixOf("192.0.2.1"), "192.0.2.0/24");
  t.is(ipPrefixOf("192.0.2.254"), ipPrefixOf("192.0.2.7"));
  t.not(ipPrefixOf("192.0.3.1"), ipPrefixOf("192.0.2.1"));
});

test("IPv6 addresses share a prefix exactly when their first 48 bits agree, however they are written", (t) => {
  t.is(ipPrefixOf("2001:db8:1:2::5"), "2001:db8:1::/48");
  t.is(ipPrefixOf("2001:0db8:0001:ffff:0:0:0:1"), ipPrefixOf("2001:db8:1::1"));
  t.not(ipPrefixOf("2001:db8:2::1"), ipPrefixOf("2001:db8:1::1"));
  t.is(ipPrefixOf("::1"), "0:0:0::/48");
});

test("an IPv4-mapped IPv6 address is its IPv4 address", (t) => {
  t.is(ipPrefixOf("::ffff:192.0.2.9"), "192.0.2.0/24");
});

test("not an IP address: null", (t) => {
  t.is(ipPrefixOf("example.org"), null);
  t.is(ipPrefixOf("1:2:3:4:5:6:7:8:9"), null);
});

test("multiaddrs: by their IP, a relayed one by its relay's, anything else as named", (t) => {
  t.is(networkPrefixOf("/ip4/198.51.100.7/tcp/4001"), "198.51.100.0/24");
  t.is(networkPrefixOf("/ip6/2001:db8:5::1/tcp/4001/p2p/12D3KooWabc"), "2001:db8:5::/48");
  t.is(
    networkPrefixOf("/ip4/203.0.113.5/tcp/4001/p2p/12D3KooWrelay/p2p-circuit/p2p/12D3KooWpeer"),
    "relay 203.0.113.0/24",
  );
  t.is(networkPrefixOf("/memory/node-a"), "memory/node-a");
  t.not(networkPrefixOf("/memory/node-a"), networkPrefixOf("/memory/node-b"));
});
