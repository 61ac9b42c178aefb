/**
 * The control API over a fake NodeApi: the token guards every route (a request
 * without it, or with a wrong one, gets 401 and changes nothing), the routes
 * answer JSON, an oversize body gets 413 and an unknown route 404, and the
 * client finds the node through api.port and api.token.
 */
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import { CimeshError } from "../crypto/index.ts";
import type { Availability, JobSpec } from "../jobs/index.ts";
import type { FetchStatus, JobDetail, JobSummary, LogLine, NodeApi, NodeStatus } from "../node/control/index.ts";
import {
  ControlRequestError,
  connectControl,
  controlTokenBytes,
  maxControlBodyBytes,
  NoNodeRunningError,
  portFileName,
  startControlServer,
  tokenFileName,
} from "../node/control/index.ts";
import { parseJobFile } from "../node/files/index.ts";

const project = `b${"a".repeat(52)}`;

/** What a node throws for a project it is not master for: a CimeshError with an HTTP status, as the node's runtime does. */
class UnknownProjectRequest extends CimeshError {
  readonly status = 400;
  constructor(projectId: string) {
    super("ERR_NODE_REQUEST", `project: expected one this node is master for, got ${projectId}`);
  }
}
const spec: JobSpec = parseJobFile(`project: ${project}\nname: t\nsteps: [true]\n`, "job.yaml", 1_800_000_000_000).spec;

/** A NodeApi that keeps jobs in a map and records every call that changes something. */
function fakeNode() {
  const jobs = new Map<string, JobDetail>();
  const changes: string[] = [];
  let availability: Availability = "eager";
  const status = (): NodeStatus => ({
    peerId: "12D3KooWfake",
    publicKey: "ab".repeat(32),
    addresses: ["/ip4/127.0.0.1/tcp/1"],
    roles: { master: [project], worker: true },
    availability,
    running: 0,
    slots: 1,
    busySlots: [],
    offering: { freeSlots: 1, masters: {} },
    offersHeld: { [project]: { workers: 0, freeSlots: 0 } },
    peers: 0,
    peerScores: {},
    peerPenalties: { penalized: [], banned: [], bansTotal: 0, rateLimited: { gossip: 0, requests: 0 } },
    trusted: [{ project, share: 1, keysetVersion: "1.1" }],
  });
  const summaryOf = (job: JobDetail): JobSummary => {
    const { spec: _spec, attempts: _attempts, acceptedDigests: _digests, ...summary } = job;
    return summary;
  };
  const fetches = new Map<string, FetchStatus>();
  const api: NodeApi = {
    async startFetch(root, destination, providers) {
      const status: FetchStatus = {
        id: "fetch-1",
        root,
        destination,
        state: "fetching",
        doneBytes: 0,
        totalBytes: 0,
        fetchedBytes: 0,
        files: providers.length,
        error: "",
      };
      fetches.set(status.id, status);
      return status;
    },
    fetchStatus: async (id) => fetches.get(id) ?? null,
    runs: async () => [],
    runLogs: async () => [],
    metrics: async () => "",
    status: async () => status(),
    async submit(projectId, jobId, jobSpec) {
      if (projectId !== project) throw new UnknownProjectRequest(projectId);
      changes.push(`submit ${jobId}`);
      const job: JobDetail = {
        project: projectId,
        jobId,
        name: jobSpec.name,
        status: "open",
        reason: "",
        submittedAtMs: 1,
        endedAtMs: null,
        runsAwarded: 0,
        runsLive: 0,
        spec: jobSpec,
        waiting: "",
        attempts: [],
        acceptedDigests: [null],
      };
      jobs.set(jobId, job);
      return summaryOf(job);
    },
    jobs: async () => [...jobs.values()].map(summaryOf),
    job: async (jobId) => jobs.get(jobId) ?? null,
    logs: async (jobId): Promise<LogLine[]> =>
      jobs.has(jobId) ? [{ attempt: 0, stream: "stdout", offset: 0, text: "hello\n" }] : [],
    explain: async (jobId) => `job ${jobId} waits for bids`,
    async cancel(jobId, reason) {
      changes.push(`cancel ${jobId} ${reason}`);
      const job = jobs.get(jobId);
      if (job === undefined) throw Object.assign(new Error("no such job"), { status: 404 });
      const cancelled: JobDetail = { ...job, status: "cancelled", reason };
      jobs.set(jobId, cancelled);
      return summaryOf(cancelled);
    },
    async setAvailability(next) {
      changes.push(`availability ${next}`);
      availability = next;
      return status();
    },
  };
  return { api, jobs, changes };
}

async function withServer(
  run: (context: { dir: string; port: number; token: string; fake: ReturnType<typeof fakeNode> }) => Promise<void>,
) {
  const dir = await mkdtemp(join(tmpdir(), "cimesh-control-"));
  const fake = fakeNode();
  const server = await startControlServer(fake.api, dir, 0);
  try {
    const token = (await readFile(join(dir, tokenFileName), "utf8")).trim();
    await run({ dir, port: server.port, token, fake });
  } finally {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  }
}

interface Answer {
  status: number;
  body: unknown;
}

/** One raw HTTP request, bounded by a timeout. */
function http(
  port: number,
  method: string,
  path: string,
  options: { token?: string; authorization?: string; body?: string | Buffer } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {};
    if (options.authorization !== undefined) headers.authorization = options.authorization;
    else if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
    if (options.body !== undefined) {
      headers["content-type"] = "application/json";
      headers["content-length"] = String(Buffer.byteLength(options.body));
    }
    const req = request({ host: "127.0.0.1", port, method, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        resolve({ status: res.statusCode ?? 0, body: text === "" ? null : JSON.parse(text) });
      });
      res.on("error", reject);
    });
    req.setTimeout(10_000, () => req.destroy(new Error(`${method} ${path}: no answer within 10 s`)));
    req.on("error", reject);
    req.end(options.body);
  });
}

function errorOf(answer: Answer): { code: string; message: string } {
  return (answer.body as { error: { code: string; message: string } }).error;
}

test("the token file is 32 random bytes in hex, mode 0600; the port file names the bound port", async (t) => {
  await withServer(async ({ dir, port, token }) => {
    t.regex(token, new RegExp(`^[0-9a-f]{${controlTokenBytes * 2}}$`));
    t.is((await stat(join(dir, tokenFileName))).mode & 0o777, 0o600);
    t.is(Number((await readFile(join(dir, portFileName), "utf8")).trim()), port);
  });
});

test("without the token, or with a wrong one, every route answers 401 and nothing changes", async (t) => {
  await withServer(async ({ port, token, fake }) => {
    const wrong = `${token.slice(0, -1)}${token.endsWith("0") ? "1" : "0"}`;
    const attempts: { token?: string; authorization?: string }[] = [
      {},
      { token: wrong },
      { token: token.slice(0, 10) },
      { authorization: token },
      { authorization: `Basic ${token}` },
    ];
    const submit = JSON.stringify({ project, jobId: "j1", spec });
    for (const auth of attempts) {
      for (const [method, path, body] of [
        ["GET", "/v1/status", undefined],
        ["GET", "/v1/jobs", undefined],
        ["POST", "/v1/jobs", submit],
        ["POST", "/v1/jobs/j1/cancel", "{}"],
        ["POST", "/v1/availability", JSON.stringify({ availability: "offline" })],
        ["GET", "/nowhere", undefined],
      ] as const) {
        const answer = await http(port, method, path, { ...auth, body });
        t.is(answer.status, 401, `${method} ${path}`);
        t.is(errorOf(answer).code, "ERR_UNAUTHORIZED");
        t.regex(errorOf(answer).message, /Authorization: Bearer/);
      }
    }
    t.deepEqual(fake.changes, []);
    t.is(fake.jobs.size, 0);
  });
});

test("with the token, every route of NodeApi works", async (t) => {
  await withServer(async ({ port, token, fake }) => {
    const status = await http(port, "GET", "/v1/status", { token });
    t.is(status.status, 200);
    t.is((status.body as NodeStatus).peerId, "12D3KooWfake");

    const submitted = await http(port, "POST", "/v1/jobs", {
      token,
      body: JSON.stringify({ project, jobId: "j1", spec }),
    });
    t.is(submitted.status, 201);
    t.is((submitted.body as JobSummary).jobId, "j1");
    const unnamed = await http(port, "POST", "/v1/jobs", { token, body: JSON.stringify({ project, spec }) });
    t.is(unnamed.status, 201);
    t.regex((unnamed.body as JobSummary).jobId, /^job-[0-9a-f]{12}$/);

    t.is(((await http(port, "GET", "/v1/jobs", { token })).body as JobSummary[]).length, 2);
    const detail = await http(port, "GET", "/v1/jobs/j1", { token });
    t.deepEqual((detail.body as JobDetail).spec, spec);
    t.deepEqual((await http(port, "GET", "/v1/jobs/j1/logs", { token })).body, [
      { attempt: 0, stream: "stdout", offset: 0, text: "hello\n" },
    ]);
    t.deepEqual((await http(port, "GET", "/v1/jobs/j1/explain", { token })).body, {
      explanation: "job j1 waits for bids",
    });
    const cancelled = await http(port, "POST", "/v1/jobs/j1/cancel", { token, body: JSON.stringify({ reason: "no" }) });
    t.is((cancelled.body as JobSummary).status, "cancelled");
    const available = await http(port, "POST", "/v1/availability", {
      token,
      body: JSON.stringify({ availability: "paused" }),
    });
    t.is((available.body as NodeStatus).availability, "paused");
    t.is(fake.changes.length, 4);
  });
});

test("bad requests get a JSON error with a fitting status", async (t) => {
  await withServer(async ({ port, token, fake }) => {
    const unknown = await http(port, "GET", "/v1/nothing", { token });
    t.is(unknown.status, 404);
    t.is(errorOf(unknown).code, "ERR_NO_SUCH_ROUTE");
    t.is((await http(port, "GET", "/v2/nothing", { token })).status, 404);

    const missing = await http(port, "GET", "/v1/jobs/nope", { token });
    t.is(missing.status, 404);
    t.is(errorOf(missing).code, "ERR_NO_SUCH_JOB");

    const method = await http(port, "DELETE", "/v1/jobs", { token });
    t.is(method.status, 405);

    const oversize = await http(port, "POST", "/v1/jobs", { token, body: "x".repeat(maxControlBodyBytes + 1) });
    t.is(oversize.status, 413);
    t.is(errorOf(oversize).code, "ERR_BODY_TOO_LARGE");
    t.regex(errorOf(oversize).message, new RegExp(`at most ${maxControlBodyBytes} bytes`));

    const notJson = await http(port, "POST", "/v1/jobs", { token, body: "{" });
    t.is(notJson.status, 400);
    t.is(errorOf(notJson).code, "ERR_BAD_JSON");

    const badSpec = await http(port, "POST", "/v1/jobs", {
      token,
      body: JSON.stringify({ project, spec: { ...spec, replicas: 1, quorum: 2 } }),
    });
    t.is(badSpec.status, 400);
    t.regex(errorOf(badSpec).message, /body\.spec\.quorum/);

    const badState = await http(port, "POST", "/v1/availability", {
      token,
      body: JSON.stringify({ availability: "sleepy" }),
    });
    t.is(badState.status, 400);

    const badId = await http(port, "GET", "/v1/jobs/%2F..%2Fx", { token });
    t.is(badId.status, 400);

    const unknownProject = await http(port, "POST", "/v1/jobs", {
      token,
      body: JSON.stringify({ project: `b${"c".repeat(52)}`, spec }),
    });
    t.is(unknownProject.status, 400);
    t.deepEqual(errorOf(unknownProject), {
      code: "ERR_NODE_REQUEST",
      message: `project: expected one this node is master for, got b${"c".repeat(52)}`,
    });
    t.is(fake.jobs.size, 0);

    const failing = await http(port, "POST", "/v1/jobs/ghost/cancel", { token, body: "{}" });
    t.is(failing.status, 500);
    t.is(errorOf(failing).code, "ERR_INTERNAL");
    t.deepEqual(fake.changes, ["cancel ghost cancelled by the operator"]);
  });
});

test("the client reads port and token from the data folder and speaks NodeApi", async (t) => {
  await withServer(async ({ dir, fake }) => {
    const client = connectControl(dir, { timeoutMs: 10_000 });
    t.is((await client.status()).peerId, "12D3KooWfake");
    const summary = await client.submit(project, "", spec);
    t.regex(summary.jobId, /^job-/);
    t.is((await client.job(summary.jobId))?.name, "t");
    t.is(await client.job("missing"), null);
    t.is((await client.logs(summary.jobId)).length, 1);
    t.is(await client.explain(summary.jobId), `job ${summary.jobId} waits for bids`);
    t.is((await client.cancel(summary.jobId, "why")).reason, "why");
    t.is((await client.setAvailability("reluctant")).availability, "reluctant");
    const error = await t.throwsAsync(client.submit(project, "bad id!", spec), { instanceOf: ControlRequestError });
    t.is(error.status, 400);
    t.is(fake.jobs.size, 1);
  });
});

test("fetches: the client starts one and asks after it; a root that is no tree CID is refused naming the field", async (t) => {
  await withServer(async ({ dir }) => {
    const client = connectControl(dir, { timeoutMs: 10_000 });
    const root = "bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
    const started = await client.startFetch(root, "/tmp/somewhere", ["12D3KooWpeer"]);
    t.is(started.state, "fetching");
    t.is((await client.fetchStatus(started.id))?.root, root);
    t.is(await client.fetchStatus("fetch-none"), null);
    const dagPb = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";
    const error = await t.throwsAsync(client.startFetch(dagPb, "/tmp/x", []), { instanceOf: ControlRequestError });
    t.is(error.status, 400);
    t.regex(error.message, /root/);
  });
});

test("no node: the client says how to start one, whether the files are missing or stale", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "cimesh-control-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const missing = t.throws(() => connectControl(dir), { instanceOf: NoNodeRunningError });
  t.is(missing.message, `no node is running in ${dir}: start one with \`cimesh start\``);

  const server = await startControlServer(fakeNode().api, dir, 0);
  const client = connectControl(dir, { timeoutMs: 10_000 });
  const tokenPath = join(dir, tokenFileName);
  const token = await readFile(tokenPath, "utf8");
  await server.close();
  // close removes the files; put stale ones back, as a killed node leaves them
  const { writeFile } = await import("node:fs/promises");
  await writeFile(join(dir, portFileName), String(client.port));
  await writeFile(tokenPath, token);
  const stale = await t.throwsAsync(connectControl(dir, { timeoutMs: 10_000 }).status(), {
    instanceOf: NoNodeRunningError,
  });
  t.regex(stale.message, /start one with `cimesh start`/);
});
