/**
 * The control port as a browser meets it, over a fake NodeApi: no session or token → 401; a Host that names
 * another site → 421 (DNS rebinding); a state-changing request from another Origin → 403 and nothing changes
 * (CSRF); the one-time login code opens one HttpOnly, SameSite=Strict session once, and expires; pages carry a
 * strict Content-Security-Policy and hold no token.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { type IncomingHttpHeaders, request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import { anchorFromGenesis, identityFromSeed } from "../crypto/index.ts";
import type { Availability } from "../jobs/index.ts";
import type { NodeApi, NodeStatus, RulesBody } from "../node/control/index.ts";
import {
  connectControl,
  loginCodeLifetimeMs,
  Sessions,
  sessionCookieName,
  startControlServer,
  tokenFileName,
} from "../node/control/index.ts";

/** A project id the fake node trusts. */
const trustedProject = anchorFromGenesis([identityFromSeed(new Uint8Array(32).fill(5)).publicKey], 1).project;

function fakeNode(): NodeApi & { availability(): Availability; rules(): RulesBody; trustRemoved(): string[] } {
  let availability: Availability = "eager";
  let rules: RulesBody = { windows: [], maxLoadAverage: null };
  const trustRemoved: string[] = [];
  const status = (): NodeStatus => ({
    peerId: "12D3KooWfake",
    publicKey: "ab".repeat(32),
    addresses: ["/ip4/127.0.0.1/tcp/1"],
    roles: { master: [], worker: true },
    availability,
    running: 0,
    slots: 1,
    busySlots: [],
    offering: { freeSlots: 1, masters: {} },
    offersHeld: {},
    peers: 0,
    peerScores: {},
    peerPenalties: { penalized: [], banned: [], bansTotal: 0, rateLimited: { gossip: 0, requests: 0 } },
    trusted: [{ project: trustedProject, share: 1, keysetVersion: null }],
    availabilityRules: rules,
    trustRemoved,
  });
  const none = async () => {
    throw new Error("not in this test");
  };
  return {
    availability: () => availability,
    rules: () => rules,
    trustRemoved: () => [...trustRemoved],
    async setRules(given: RulesBody) {
      rules = given;
      return status();
    },
    async removeTrust(project: string) {
      trustRemoved.push(project);
      return status();
    },
    status: async () => status(),
    submit: none,
    jobs: async () => [],
    job: async () => null,
    logs: async () => [],
    explain: none,
    cancel: none,
    async setAvailability(given: Availability) {
      availability = given;
      return status();
    },
    startFetch: none,
    fetchStatus: async () => null,
    runs: async () => [],
    runLogs: async () => [],
    metrics: async () => "",
  };
}

interface Answer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

/** One raw request with exactly the headers given (no Host unless named: Node adds 127.0.0.1:port). */
function ask(
  port: number,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: unknown,
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = request(
      {
        host: "127.0.0.1",
        port,
        method,
        path,
        agent: false,
        headers: {
          ...headers,
          ...(payload === undefined
            ? {}
            : { "content-type": "application/json", "content-length": String(payload.length) }),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => {
          chunks.push(chunk);
          // An event stream never ends: its first event is enough.
          if (res.headers["content-type"]?.startsWith("text/event-stream") && Buffer.concat(chunks).includes("\n\n"))
            req.destroy();
        });
        const done = () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") });
        res.on("end", done);
        res.on("close", done);
      },
    );
    req.on("error", reject);
    req.end(payload);
  });
}

async function withServer(
  run: (port: number, token: string, node: ReturnType<typeof fakeNode>, dataDir: string) => Promise<void>,
): Promise<void> {
  const dataDir = await mkdtemp(join(tmpdir(), "cimesh-dashboard-"));
  const node = fakeNode();
  const server = await startControlServer(node, dataDir, 0);
  try {
    const token = (await readFile(join(dataDir, tokenFileName), "utf8")).trim();
    await run(server.port, token, node, dataDir);
  } finally {
    await server.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}

/** Logs in with a fresh one-time code as the page's script does; returns the cookie to send. */
async function logIn(port: number, dataDir: string): Promise<string> {
  const { code } = await connectControl(dataDir).loginCode();
  const answer = await ask(port, "POST", "/login", { origin: `http://127.0.0.1:${port}` }, { code });
  if (answer.status !== 200) throw new Error(`login: ${answer.status} ${answer.body}`);
  const cookie = String(answer.headers["set-cookie"]?.[0] ?? "");
  return cookie.split(";")[0] as string;
}

test("without a session cookie or the token, every route but the login page and its files answers 401", async (t) => {
  await withServer(async (port) => {
    for (const path of ["/v1/status", "/v1/runs", "/v1/events", "/metrics", "/"]) {
      const answer = await ask(port, "GET", path);
      t.is(answer.status, 401, path);
      t.false(answer.body.includes("12D3KooWfake"), `${path} says nothing of the node`);
    }
    t.regex((await ask(port, "GET", "/")).body, /cimesh dashboard/);
    const wrong = await ask(port, "GET", "/v1/status", { cookie: `${sessionCookieName(port)}=${"00".repeat(32)}` });
    t.is(wrong.status, 401, "a made-up session");
    t.is((await ask(port, "GET", "/login")).status, 200);
    t.is((await ask(port, "GET", "/assets/app.js")).status, 200);
    t.is((await ask(port, "GET", "/assets/../api.token")).status, 401, "no path outside the shipped files");
  });
});

test("a Host header that is not 127.0.0.1 or localhost with the node's port is refused, even with the token", async (t) => {
  await withServer(async (port, token) => {
    const bearer = { authorization: `Bearer ${token}` };
    for (const host of ["evil.example", `evil.example:${port}`, "127.0.0.1:1", `localhost.evil.example:${port}`]) {
      const answer = await ask(port, "GET", "/v1/status", { ...bearer, host });
      t.is(answer.status, 421, host);
      t.false(answer.body.includes("12D3KooWfake"));
    }
    t.is((await ask(port, "GET", "/login", { host: "evil.example" })).status, 421, "public pages too");
    t.is((await ask(port, "GET", "/v1/status", { ...bearer, host: `localhost:${port}` })).status, 200);
    t.is((await ask(port, "GET", "/v1/status", { ...bearer, host: `127.0.0.1:${port}` })).status, 200);
  });
});

test("a state-changing request from another Origin is refused with 403 and changes nothing", async (t) => {
  await withServer(async (port, token, node, dataDir) => {
    const bearer = { authorization: `Bearer ${token}` };
    const body = { availability: "paused" };
    const cookie = await logIn(port, dataDir);
    const refused: Record<string, string>[] = [
      { ...bearer, origin: "http://evil.example" },
      { cookie, origin: "http://evil.example" },
      { cookie, origin: `http://127.0.0.1:${port + 1}` },
      { cookie }, // a browser always sends Origin on a POST: one without it did not come from this page
      { cookie, origin: `http://127.0.0.1:${port}`, "sec-fetch-site": "cross-site" },
    ];
    for (const headers of refused) {
      const answer = await ask(port, "POST", "/v1/availability", headers, body);
      t.is(answer.status, 403, JSON.stringify(headers));
      t.is(node.availability(), "eager");
    }
    const foreignLogin = await ask(port, "POST", "/login", { origin: "http://evil.example" }, { code: "ab" });
    t.is(foreignLogin.status, 403, "the login itself checks Origin");
    // The node's own page, and the CLI (the token, no Origin) may.
    const own = await ask(port, "POST", "/v1/availability", { cookie, origin: `http://127.0.0.1:${port}` }, body);
    t.is(own.status, 200, own.body);
    t.is(node.availability(), "paused");
    t.is((await ask(port, "POST", "/v1/availability", bearer, { availability: "eager" })).status, 200);
    t.is(node.availability(), "eager");
  });
});

test("the rules and trust-removal routes refuse no session, a foreign Host and a foreign Origin, and check what they are sent", async (t) => {
  await withServer(async (port, token, node, dataDir) => {
    const cookie = await logIn(port, dataDir);
    const own = { cookie, origin: `http://127.0.0.1:${port}` };
    const rules: RulesBody = {
      windows: [{ days: [1, 2], startMinute: 9 * 60, endMinute: 17 * 60 }],
      maxLoadAverage: 3,
    };
    const changes: [string, string, unknown][] = [
      ["POST", "/v1/rules", rules],
      ["DELETE", `/v1/trust/${trustedProject}`, undefined],
      ["POST", `/v1/trust/${trustedProject}/remove`, undefined],
    ];
    for (const [method, path, body] of changes) {
      t.is((await ask(port, method, path, {}, body)).status, 401, `${method} ${path} without a session`);
      t.is((await ask(port, method, path, { ...own, host: "evil.example" }, body)).status, 421, `${path}: Host`);
      for (const origin of ["http://evil.example", `http://localhost:${port + 1}`]) {
        const answer = await ask(port, method, path, { cookie, origin }, body);
        t.is(answer.status, 403, `${method} ${path} from ${origin}`);
      }
      t.is((await ask(port, method, path, { cookie }, body)).status, 403, `${method} ${path} with no Origin`);
      t.is(
        (await ask(port, method, path, { authorization: `Bearer ${token}`, origin: "http://evil.example" }, body))
          .status,
        403,
      );
    }
    t.deepEqual(node.rules(), { windows: [], maxLoadAverage: null }, "nothing changed");
    t.deepEqual(node.trustRemoved(), []);

    const wrong: [unknown, RegExp][] = [
      [
        { windows: [{ days: [7], startMinute: 0, endMinute: 60 }], maxLoadAverage: null },
        /windows\[0\]\.days\[0\].*0 \(Sunday\) to 6/,
      ],
      [
        { windows: [{ days: [], startMinute: 0, endMinute: 1440 }], maxLoadAverage: null },
        /windows\[0\]\.endMinute.*minute of the day/,
      ],
      [{ windows: [], maxLoadAverage: 0 }, /maxLoadAverage.*above 0/],
      [{ windows: [] }, /maxLoadAverage/],
    ];
    for (const [body, field] of wrong) {
      const answer = await ask(port, "POST", "/v1/rules", own, body);
      t.is(answer.status, 400, JSON.stringify(body));
      t.regex(JSON.parse(answer.body).error.message, field);
    }
    const badProject = await ask(port, "DELETE", "/v1/trust/not-a-project", own);
    t.is(badProject.status, 400);
    t.regex(JSON.parse(badProject.body).error.message, /project: expected a project id/);
    t.deepEqual(node.rules(), { windows: [], maxLoadAverage: null });

    const set = await ask(port, "POST", "/v1/rules", own, rules);
    t.is(set.status, 200, set.body);
    t.deepEqual(node.rules(), rules);
    t.deepEqual(JSON.parse(set.body).availabilityRules, rules, "the answer is the status with the new rules");
    const removed = await ask(port, "DELETE", `/v1/trust/${trustedProject}`, own);
    t.is(removed.status, 200, removed.body);
    t.deepEqual(JSON.parse(removed.body).trustRemoved, [trustedProject]);
    t.is((await ask(port, "POST", `/v1/trust/${trustedProject}/remove`, own)).status, 200, "the POST form too");
  });
});

test("the one-time login code opens one HttpOnly, SameSite=Strict session once; a session cannot mint codes", async (t) => {
  await withServer(async (port, token, _node, dataDir) => {
    const { code, path } = await connectControl(dataDir).loginCode();
    t.is(path, `/login#${code}`, "the code rides in the fragment, which no server and no Referer sees");
    const origin = { origin: `http://127.0.0.1:${port}` };
    const first = await ask(port, "POST", "/login", origin, { code });
    t.is(first.status, 200, first.body);
    const setCookie = String(first.headers["set-cookie"]?.[0] ?? "");
    t.regex(setCookie, new RegExp(`^${sessionCookieName(port)}=[0-9a-f]{64}; `));
    for (const attribute of ["HttpOnly", "SameSite=Strict", "Path=/"]) t.true(setCookie.includes(attribute), setCookie);
    const cookie = setCookie.split(";")[0] as string;
    t.false(cookie.includes(code), "the session is not the code");
    t.false(cookie.includes(token), "nor the token");
    const status = await ask(port, "GET", "/v1/status", { cookie });
    t.is(status.status, 200);
    t.is(JSON.parse(status.body).peerId, "12D3KooWfake");

    const again = await ask(port, "POST", "/login", origin, { code });
    t.is(again.status, 401, "a code works once");
    t.is(again.headers["set-cookie"], undefined);
    t.is((await ask(port, "POST", "/v1/login-codes", { cookie, ...origin }, {})).status, 403, "only the token mints");

    // Expiry, at the sessions' own clock (passed in): a code past loginCodeLifetimeMs opens nothing.
    const sessions = new Sessions();
    const issued = sessions.issueCode(1_000);
    t.is(issued.expiresAtMs, 1_000 + loginCodeLifetimeMs);
    t.is(sessions.redeem(issued.code, 1_000 + loginCodeLifetimeMs), null);
    const fresh = sessions.issueCode(1_000);
    t.not(sessions.redeem(fresh.code, 1_000 + loginCodeLifetimeMs - 1), null);
  });
});

test("pages carry a strict Content-Security-Policy and nosniff; no page, asset or event holds the token", async (t) => {
  await withServer(async (port, token, _node, dataDir) => {
    const cookie = await logIn(port, dataDir);
    const paths = [
      "/",
      "/login",
      "/assets/app.js",
      "/assets/login.js",
      "/assets/style.css",
      "/assets/vendor/preact.mjs",
      "/assets/vendor/htm.mjs",
      "/v1/events",
    ];
    for (const path of paths) {
      const answer = await ask(port, "GET", path, { cookie });
      t.is(answer.status, 200, path);
      const csp = String(answer.headers["content-security-policy"]);
      t.true(csp.includes("default-src 'self'") && csp.includes("script-src 'self'"), `${path}: ${csp}`);
      t.true(csp.includes("frame-ancestors 'none'"), csp);
      t.false(/unsafe-inline|unsafe-eval/.test(csp), csp);
      t.is(answer.headers["x-content-type-options"], "nosniff", path);
      t.false(answer.body.includes(token), `${path} holds no token`);
      t.false(answer.body.includes(cookie.split("=")[1] as string), `${path} holds no session`);
    }
    const page = (await ask(port, "GET", "/", { cookie })).body;
    t.false(/<script(?![^>]*\bsrc=)[^>]*>/.test(page), "no inline script");
    t.regex((await ask(port, "GET", "/v1/events", { cookie })).body, /^event: snapshot\ndata: \{"status":/);
  });
});
