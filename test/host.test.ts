/**
 * The libp2p host over real TCP on 127.0.0.1: gossip through validators,
 * forgers scored down, direct frames with the sender authenticated, DHT
 * records and provider records.
 */
import test from "ava";
import { identityFromSeed } from "../crypto/index.ts";
import { createHost, type GossipVerdict, type Host, publicKeyHexOf } from "../node/host/index.ts";

const boundMs = 20_000;

async function until(what: string, check: () => boolean | Promise<boolean>, limitMs = boundMs): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`expected ${what} within ${limitMs} ms`);
}

function seed(n: number): Uint8Array {
  return new Uint8Array(32).fill(n);
}

async function mesh(count: number, options: { recordValidators?: Record<string, () => void> } = {}): Promise<Host[]> {
  const first = await createHost({
    identity: identityFromSeed(seed(1)),
    listen: ["/ip4/127.0.0.1/tcp/0"],
    bootstrap: [],
    ipColocationWeight: 0,
    connectionMonitor: false,
    ...options,
  });
  const hosts = [first];
  for (let index = 1; index < count; index++) {
    hosts.push(
      await createHost({
        identity: identityFromSeed(seed(index + 1)),
        listen: ["/ip4/127.0.0.1/tcp/0"],
        bootstrap: [first.multiaddrs()[0] as string],
        ipColocationWeight: 0,
        connectionMonitor: false,
        ...options,
      }),
    );
  }
  return hosts;
}

test("gossip reaches subscribers through their validators; a rejected sender's score falls below zero", async (t) => {
  const hosts = await mesh(3);
  try {
    const heard: string[][] = hosts.map(() => []);
    hosts.forEach((host, index) => {
      host.subscribe("p", (bytes): GossipVerdict => {
        const text = Buffer.from(bytes).toString();
        heard[index]?.push(text);
        return text.startsWith("forged") ? "reject" : "accept";
      });
    });
    const [first, second, third] = hosts as [Host, Host, Host];
    await until("every node connected to every other", () => hosts.every((host) => host.peerCount() >= 2));
    await until("a gossip mesh", async () => {
      await first.publish("p", Buffer.from(`hello-${Date.now()}`));
      return heard[1]?.some((text) => text.startsWith("hello")) === true;
    });
    await until("the message at every node", () =>
      heard.every((list) => list.some((text) => text.startsWith("hello"))),
    );
    t.true(
      heard[0]?.some((text) => text.startsWith("hello")),
      "a node hears its own messages",
    );

    let forged = 0;
    await until("the forger scored below zero by the others", async () => {
      await third.publish("p", Buffer.from(`forged-${forged++}`));
      return first.scoreOf(third.peerId) < 0 && second.scoreOf(third.peerId) < 0;
    });
    t.true(second.scoreOf(first.peerId) >= 0, "an honest peer keeps a score at or above zero");
  } finally {
    await Promise.all(hosts.map((host) => host.stop()));
  }
});

test("a direct frame arrives once, with the sender's authenticated peer id", async (t) => {
  const hosts = await mesh(2);
  try {
    const [first, second] = hosts as [Host, Host];
    const got: { text: string; from: string }[] = [];
    second.onDirect((bytes, from) => {
      got.push({ text: Buffer.from(bytes).toString(), from });
    });
    await first.send(publicKeyHexOf(second.peerId), Buffer.from("bid"));
    await until("the frame", () => got.length === 1);
    t.deepEqual(got, [{ text: "bid", from: first.peerId }]);
    t.is(publicKeyHexOf(first.peerId), Buffer.from(identityFromSeed(seed(1)).publicKey).toString("hex"));
  } finally {
    await Promise.all(hosts.map((host) => host.stop()));
  }
});

test("a frame over the size limit is refused by the sender", async (t) => {
  const hosts = await mesh(2);
  try {
    const [first, second] = hosts as [Host, Host];
    await t.throwsAsync(first.send(publicKeyHexOf(second.peerId), new Uint8Array(300 * 1024)), {
      message: /direct frame: expected at most/,
    });
  } finally {
    await Promise.all(hosts.map((host) => host.stop()));
  }
});

test("DHT: a record put by one node is found by another; providers are found; a refused record is not stored", async (t) => {
  const refused: string[] = [];
  const hosts = await Promise.all([0]).then(async () => {
    const validators = {
      note: (_id: string, value: Uint8Array) => {
        if (Buffer.from(value).toString().startsWith("bad")) {
          refused.push(Buffer.from(value).toString());
          throw new Error("bad record");
        }
      },
    };
    const first = await createHost({
      identity: identityFromSeed(seed(11)),
      listen: ["/ip4/127.0.0.1/tcp/0"],
      bootstrap: [],
      ipColocationWeight: 0,
      recordValidators: validators,
    });
    const rest: Host[] = [];
    for (let index = 0; index < 3; index++) {
      rest.push(
        await createHost({
          identity: identityFromSeed(seed(12 + index)),
          listen: ["/ip4/127.0.0.1/tcp/0"],
          bootstrap: [first.multiaddrs()[0] as string],
          ipColocationWeight: 0,
          recordValidators: validators,
        }),
      );
    }
    return [first, ...rest];
  });
  try {
    const [first, , , last] = hosts as [Host, Host, Host, Host];
    await until("connections", () => hosts.every((host) => host.peerCount() >= 1));
    await last.putRecord("note", "a", Buffer.from("good"));
    let found: Uint8Array | null = null;
    await until("the record", async () => {
      found = await first.getRecord("note", "a");
      return found !== null;
    });
    t.is(Buffer.from(found as unknown as Uint8Array).toString(), "good");

    await last.provide("spec-uuid-1");
    let providers: string[] = [];
    await until("a provider", async () => {
      providers = await first.findProviders("spec-uuid-1");
      return providers.length > 0;
    });
    t.deepEqual(providers, [last.peerId]);

    await t.throwsAsync(last.putRecord("note", "b", Buffer.from("bad-record")), { message: "bad record" });
    t.is(await first.getRecord("note", "b"), null);
    t.true(refused.length > 0);
  } finally {
    await Promise.all(hosts.map((host) => host.stop()));
  }
});
