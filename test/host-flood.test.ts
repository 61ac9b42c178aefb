/**
 * A flooding peer against real hosts over TCP on 127.0.0.1, with small limits
 * so the test is quick: its gossip over the rate limit is dropped unread, what
 * the runtime refuses is charged to it, its score falls, it is banned, hung up
 * on and refused when it dials again; the log holds a few lines and a summary;
 * an honest peer on the same mesh keeps its score and its messages arrive.
 */
import test from "ava";
import { identityFromSeed } from "../crypto/index.ts";
import { createHost, EventLog, type Host, type HostOptions, publicKeyHexOf } from "../node/host/index.ts";

const boundMs = 30_000;
const limits = {
  gossip: { burst: 20, perSecond: 10 },
  requests: { burst: 20, perSecond: 10 },
  requestTurnWaitMs: 200,
  penalties: { halfLifeMs: 60_000, banPoints: 60, banMs: 60_000 },
};

async function until(what: string, check: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + boundMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`expected ${what} within ${boundMs} ms`);
}

function hostOptions(seed: number, bootstrap: string[], extra: Partial<HostOptions> = {}): HostOptions {
  return {
    identity: identityFromSeed(new Uint8Array(32).fill(seed)),
    listen: ["/ip4/127.0.0.1/tcp/0"],
    bootstrap,
    ipColocationWeight: 0,
    connectionMonitor: false,
    ...extra,
  };
}

test("a gossip flood: dropped past the rate, charged, banned, hung up on, refused; the log stays short; the honest peer is untouched", async (t) => {
  const lines: { event: string; fields: Record<string, unknown> }[] = [];
  const events = new EventLog((event, fields) => lines.push({ event, fields }), {
    linesPerKey: 3,
    linesPerEvent: 20,
    windowMs: 60_000,
  });
  let judged = 0;
  const heard: string[] = [];
  const hosts: Host[] = [];
  try {
    const victim = await createHost(
      hostOptions(0x91, [], { limits, log: (event, fields) => events.note(event, fields) }),
    );
    hosts.push(victim);
    const bootstrap = [victim.multiaddrs()[0] as string];
    const flooder = await createHost(hostOptions(0x92, bootstrap));
    const honest = await createHost(hostOptions(0x93, bootstrap));
    hosts.push(flooder, honest);
    // The victim's runtime: messages starting "stale" are ignored as the sender's doing, and charged.
    victim.subscribe("p", (bytes, from) => {
      if (from === flooder.peerId) judged++;
      const text = Buffer.from(bytes).toString();
      heard.push(text);
      if (!text.startsWith("stale")) return "accept";
      victim.penalize(from, "useless");
      events.note("gossip-ignore", { from, reason: "stale" });
      return "ignore";
    });
    flooder.subscribe("p", () => "accept");
    // As a real node's runtime: what it ignores it does not pass on.
    honest.subscribe("p", (bytes) => (Buffer.from(bytes).toString().startsWith("stale") ? "ignore" : "accept"));
    await until("the mesh", () => victim.peerCount() >= 2);
    await until("gossip from the honest peer", async () => {
      await honest.publish("p", Buffer.from(`hello-${Date.now()}`));
      return heard.some((text) => text.startsWith("hello"));
    });

    let sent = 0;
    await until("the flooder banned", async () => {
      for (let index = 0; index < 200; index++) await flooder.publish("p", Buffer.from(`stale-${sent++}`));
      return victim.isBanned(flooder.peerId);
    });
    const status = victim.penalties();
    t.true(
      status.banned.some((ban) => ban.peer === flooder.peerId),
      "status lists the ban",
    );
    t.is(status.bansTotal, 1);
    t.true(status.rateLimited.gossip > 0, "some of the flood was dropped unread");
    t.true(judged < sent, `the validator judged ${judged} of ${sent}`);
    t.true(victim.scoreOf(flooder.peerId) <= -limits.penalties.banPoints || victim.peerCount() < 2);
    await until("the flooder hung up on", () => !victim.scores()[flooder.peerId] || victim.peerCount() === 1);

    const judgedAtBan = judged;
    for (let index = 0; index < 200; index++) await flooder.publish("p", Buffer.from(`stale-${sent++}`));
    await new Promise((resolve) => setTimeout(resolve, 500));
    t.is(judged, judgedAtBan, "nothing more from the banned peer reaches the validator");

    const redial = await createHost(hostOptions(0x92, bootstrap)).catch((error: unknown) => error);
    if (redial instanceof Error) t.fail(String(redial));
    else {
      hosts.push(redial as Host);
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      t.is((redial as Host).peerCount(), 0, "the banned peer id is refused when it dials again");
    }
    t.true(
      lines.some((line) => line.event === "peer-refused"),
      "the refusal is logged",
    );

    t.true(victim.scoreOf(honest.peerId) >= 0, "the honest peer's score");
    t.false(victim.isBanned(honest.peerId));
    const before = heard.length;
    await until("gossip from the honest peer after the flood", async () => {
      await honest.publish("p", Buffer.from(`after-${Date.now()}`));
      return heard.slice(before).some((text) => text.startsWith("after"));
    });

    events.close();
    const written = lines.filter((line) => line.event !== "log-suppressed");
    t.true(written.length <= 4 * 20, `${written.length} lines for a flood of ${sent}`);
    const summaries = lines.filter((line) => line.event === "log-suppressed");
    t.true(
      summaries.some((line) => line.fields.of === "gossip-ignore" || line.fields.of === "peer-rate-limited"),
      "what was held back is summed up",
    );
    t.is(lines.filter((line) => line.event === "peer-banned").length, 1);
  } finally {
    events.close();
    await Promise.all(hosts.map((host) => host.stop()));
  }
});

test("a direct flood: streams past the rate wait their turn or are refused; refusals charged; banned past the bound", async (t) => {
  const hosts: Host[] = [];
  let handled = 0;
  try {
    const victim = await createHost(hostOptions(0xa1, [], { limits }));
    hosts.push(victim);
    const flooder = await createHost(hostOptions(0xa2, [victim.multiaddrs()[0] as string]));
    hosts.push(flooder);
    victim.onDirect((_bytes, from) => {
      handled++;
      victim.penalize(from, "forged");
    });
    await until("connected", () => victim.peerCount() >= 1);
    const to = publicKeyHexOf(victim.peerId);
    let sent = 0;
    await until("the flooder banned", async () => {
      await Promise.all(
        Array.from({ length: 20 }, () => flooder.send(to, Buffer.from(`forged-${sent++}`)).catch(() => undefined)),
      );
      return victim.isBanned(flooder.peerId);
    });
    t.true(
      handled <= limits.penalties.banPoints / 10 + limits.requests.burst,
      `${handled} direct messages reached the handler before the ban`,
    );
    const handledAtBan = handled;
    await t.throwsAsync(flooder.send(to, Buffer.from("after the ban")));
    t.is(handled, handledAtBan, "nothing after the ban");
    t.true(victim.penalties().penalized.some((entry) => entry.peer === flooder.peerId && entry.offences.forged));
  } finally {
    await Promise.all(hosts.map((host) => host.stop()));
  }
});
