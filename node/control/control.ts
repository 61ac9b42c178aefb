/**
 * The control API: a running node's NodeApi as JSON over HTTP on 127.0.0.1,
 * for the CLI.
 *
 * - Bound to 127.0.0.1 only. Every request carries `Authorization: Bearer
 *   <token>`, the token being 32 random bytes (hex) the server writes to
 *   `<dataDir>/api.token` (mode 0600) when it starts: whoever can read the
 *   node's data folder may drive it, nobody else. Without it: 401, and nothing
 *   is read or changed.
 * - The port (0 in the config = any free one) goes to `<dataDir>/api.port`
 *   once the server listens; both files go when it closes.
 * - JSON in and out; keys and digests as hex or text, never bytes. Errors are
 *   `{ "error": { "code", "message" } }` with a status that fits: 400 bad
 *   input, 401 no token, 404 no such route or job, 405 wrong method, 413 body
 *   too large, 500 a fault of the node.
 *
 * Routes: GET /v1/status, GET /v1/jobs, POST /v1/jobs {project, jobId?, spec},
 * GET /v1/jobs/:id, GET /v1/jobs/:id/logs, GET /v1/jobs/:id/explain,
 * POST /v1/jobs/:id/cancel {reason?}, POST /v1/availability {availability},
 * POST /v1/fetches {root, destination, providers?, limit?}, GET /v1/fetches/:id,
 * GET /v1/runs (the worker's own runs), GET /v1/runs/:job, GET /v1/runs/:job/logs,
 * and GET /metrics: Prometheus's text format, the one answer that is not
 * JSON. It needs the token like every route (a scraper sends it as a bearer
 * token): what the node runs and for whom is no one's business but whoever
 * may read its data folder.
 *
 * The same port serves the dashboard (dashboard.ts, node/dashboard/): GET /
 * (the page), GET /login and /assets/* (no session needed; they hold no
 * secret), POST /login {code} (a one-time code for a session cookie), POST
 * /v1/login-codes (bearer token only: `cimesh dashboard`) and GET /v1/events
 * (server-sent events). Every route but those public ones takes the session
 * cookie as well as the token; every request's Host must name this node (421
 * otherwise) and a state-changing one's Origin must be this node's (403).
 */
import { randomBytes, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdir, readFile, unlink } from "node:fs/promises";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import { createRequire } from "node:module";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import * as z from "zod";
import { availabilitySchema } from "../../capabilities/index.ts";
import {
  CimeshError,
  idSchema,
  maxCidChars,
  parseTreeCid,
  projectIdSchema,
  reasonSchema,
  schemaErrorFrom,
} from "../../crypto/index.ts";
import {
  type Availability,
  type JobSpec,
  jobSpecSchema,
  type ReportDelivery,
  reportIdSchema,
} from "../../jobs/index.ts";
import { maxAvailabilityWindows, maxLoadAverageCeiling, writeFileAtomic } from "../files/index.ts";
import type {
  FetchStatus,
  JobDetail,
  JobSummary,
  LogLine,
  NodeApi,
  NodeStatus,
  ReportDetail,
  ReportDraft,
  ReportSummary,
  RulesBody,
  RunSummary,
} from "./api.ts";
import {
  changesState,
  dashboardAssets,
  hostAllowed,
  loggedOutPage,
  originAllowed,
  publicRoute,
  Sessions,
  securityHeaders,
  sendAsset,
  sessionCookie,
} from "./dashboard.ts";

/**
 * node:http is taken as Node.js's CommonJS module, not imported: the ES module facade of node:http reads every
 * export once, and its lazy `WebSocket` loads undici (fetch) and compiles undici's HTTP parser to WebAssembly, about
 * 2 MiB of a node's resident memory, for what no process here uses (the control API and its client are node:http).
 */
const { createServer, request } = process.getBuiltinModule("node:http");

export const controlHost = "127.0.0.1";
export const tokenFileName = "api.token";
export const portFileName = "api.port";
export const tokenFileMode = 0o600;
export const controlTokenBytes = 32;
/** Largest request body: a job spec fits many times over (an announcement is at most 64 KiB). */
export const maxControlBodyBytes = 256 * 1024;
/** Past this much of an oversize body, the connection is cut instead of drained. */
export const maxDiscardedBodyBytes = 4 * maxControlBodyBytes;
/** Largest response the client reads: the logs of a job's every attempt. */
export const maxControlResponseBytes = 256 * 1024 * 1024;
/** A request whose headers and body take longer than this is dropped by the server. */
export const controlRequestTimeoutMs = 30_000;
/** The client gives up on a node that takes longer than this to answer. */
export const controlClientTimeoutMs = 30_000;
/** Where Prometheus looks by default: the metrics route, outside /v1/ as scrapers expect it. */
export const metricsPath = "/metrics";
/** The content type of Prometheus's text exposition format. */
export const metricsContentType = "text/plain; version=0.0.4; charset=utf-8";
/** Reason given for a cancel that names none. */
export const defaultCancelReason = "cancelled by the operator";

/** A failure of one request, as the server answers it. */
export class ControlError extends CimeshError {
  readonly status: number;
  constructor(status: number, code: string, message: string) {
    super(code, message);
    this.status = status;
  }
}

/** The control server cannot start (its port is taken, its data folder cannot be written). */
export class ControlStartError extends CimeshError {
  constructor(message: string) {
    super("ERR_CONTROL_START", message);
  }
}

/** No node answers for this data folder. */
export class NoNodeRunningError extends CimeshError {
  constructor(dataDir: string, detail = "") {
    super(
      "ERR_NO_NODE",
      `no node is running in ${dataDir}${detail === "" ? "" : ` (${detail})`}: start one with \`cimesh start\``,
    );
  }
}

/** The node answered a request with an error. */
export class ControlRequestError extends CimeshError {
  readonly status: number;
  constructor(status: number, code: string, message: string) {
    super(code, message);
    this.status = status;
  }
}

/** The node took too long to answer. */
export class ControlTimeoutError extends CimeshError {
  constructor(port: number, timeoutMs: number) {
    super(
      "ERR_CONTROL_TIMEOUT",
      `the node at ${controlHost}:${port} did not answer within ${timeoutMs} ms: expected an answer; look at the node's log, or restart it`,
    );
  }
}

const submitBodySchema = z.strictObject({
  project: projectIdSchema,
  jobId: idSchema.nullable().optional(),
  spec: jobSpecSchema,
});
const cancelBodySchema = z.strictObject({ reason: reasonSchema.optional() });
const availabilityBodySchema = z.strictObject({ availability: availabilitySchema });
/** Minutes in a day: a window's start and end are below it. */
const minutesPerDay = 24 * 60;
const minuteOfDaySchema = z
  .number()
  .int()
  .min(0)
  .max(minutesPerDay - 1, `expected a minute of the day, 0..${minutesPerDay - 1}`);
/** The worker's rules as the page sends them: the fields of config.yaml's worker.rules, in minutes and day numbers. */
const rulesBodySchema = z.strictObject({
  windows: z
    .array(
      z.strictObject({
        days: z.array(z.number().int().min(0).max(6, "expected a day number, 0 (Sunday) to 6")).max(7).default([]),
        startMinute: minuteOfDaySchema,
        endMinute: minuteOfDaySchema,
      }),
    )
    .max(maxAvailabilityWindows),
  maxLoadAverage: z
    .number()
    .gt(0, "expected a load average above 0, or null for no ceiling")
    .max(maxLoadAverageCeiling)
    .nullable(),
});
/** Peers a fetch may be told to ask first. */
export const maxFetchProviderHints = 16;
const fetchBodySchema = z.strictObject({
  root: z.string().min(1).max(maxCidChars),
  destination: z.string().min(1).max(4096),
  providers: z.array(z.string().min(1).max(128)).max(maxFetchProviderHints).default([]),
  limit: z
    .strictObject({ maxBytes: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER), name: z.string().min(1).max(200) })
    .optional(),
});

function toJson(value: unknown): string {
  return JSON.stringify(value, (_key, item) => (item instanceof Uint8Array ? Buffer.from(item).toString("hex") : item));
}

function send(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  const body = toJson(value);
  res.writeHead(status, {
    "content-type": "application/json; charset=utf-8",
    "content-length": String(Buffer.byteLength(body)),
    "cache-control": "no-store",
    ...securityHeaders,
    ...headers,
  });
  res.end(body);
}

/** An answer that is text, not JSON (the metrics). */
class TextAnswer {
  readonly text: string;
  readonly contentType: string;
  constructor(text: string, contentType: string) {
    this.text = text;
    this.contentType = contentType;
  }
}

function sendText(res: ServerResponse, status: number, answer: TextAnswer): void {
  res.writeHead(status, {
    "content-type": answer.contentType,
    "content-length": String(Buffer.byteLength(answer.text)),
    "cache-control": "no-store",
    ...securityHeaders,
  });
  res.end(answer.text);
}

function sendError(res: ServerResponse, error: ControlError, headers: Record<string, string> = {}): void {
  send(res, error.status, { error: { code: error.code, message: error.message } }, headers);
}

/** Reads a body of at most maxControlBodyBytes; an oversize one is drained (or cut off) and refused with 413. */
function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers["content-length"] ?? "0");
    if (declared > maxDiscardedBodyBytes) {
      reject(tooLarge(declared));
      return;
    }
    const chunks: Buffer[] = [];
    let received = 0;
    req.on("data", (chunk: Buffer) => {
      received += chunk.length;
      if (received <= maxControlBodyBytes) chunks.push(chunk);
      else if (received > maxDiscardedBodyBytes) {
        reject(tooLarge(received));
        req.destroy();
      }
    });
    req.on("end", () => (received > maxControlBodyBytes ? reject(tooLarge(received)) : resolve(Buffer.concat(chunks))));
    req.on("error", reject);
  });
}

/** Drains a body nobody will read, so the answer reaches the client; past maxDiscardedBodyBytes the connection is cut. */
function discard(req: IncomingMessage): void {
  let received = 0;
  req.on("data", (chunk: Buffer) => {
    received += chunk.length;
    if (received > maxDiscardedBodyBytes) req.destroy();
  });
}

function tooLarge(sizeBytes: number): ControlError {
  return new ControlError(
    413,
    "ERR_BODY_TOO_LARGE",
    `request body: expected at most ${maxControlBodyBytes} bytes, got ${sizeBytes} or more`,
  );
}

async function readJson<T>(req: IncomingMessage, schema: z.ZodType<T>): Promise<T> {
  const body = await readBody(req);
  let value: unknown;
  try {
    value = body.length === 0 ? {} : JSON.parse(body.toString("utf8"));
  } catch (error) {
    throw new ControlError(400, "ERR_BAD_JSON", `request body: expected JSON, ${(error as Error).message}`);
  }
  const result = schema.safeParse(value);
  if (!result.success) {
    const problem = schemaErrorFrom("body", result.error);
    throw new ControlError(400, problem.code, problem.message);
  }
  return result.data;
}

/** `cimesh trust remove` through the API: the project id from the path, checked. */
async function removeTrusted(api: NodeApi, raw: string): Promise<NodeStatus> {
  let project: string;
  try {
    project = decodeURIComponent(raw);
  } catch {
    project = raw;
  }
  if (!projectIdSchema.safeParse(project).success)
    throw new ControlError(
      400,
      "ERR_BAD_PROJECT",
      `project: expected a project id, got ${JSON.stringify(project.slice(0, 80))}`,
    );
  if (api.removeTrust === undefined)
    throw new ControlError(404, "ERR_NO_TRUST_REMOVE", "project: this node cannot remove a trusted project");
  return api.removeTrust(project);
}

function jobIdOf(raw: string): string {
  let id: string;
  try {
    id = decodeURIComponent(raw);
  } catch {
    id = raw;
  }
  if (!idSchema.safeParse(id).success) {
    throw new ControlError(
      400,
      "ERR_BAD_JOB_ID",
      `job id: expected letters, digits, '.', '_' or '-' (at most 64), got ${JSON.stringify(id.slice(0, 80))}`,
    );
  }
  return id;
}

/** An error a NodeApi threw, as an HTTP answer: its own status if it has one, 400 for bad input, else 500. */
function controlErrorOf(error: unknown): ControlError {
  if (error instanceof ControlError) return error;
  if (error instanceof CimeshError) {
    const status = (error as { status?: unknown }).status;
    return new ControlError(
      typeof status === "number" && status >= 400 && status <= 599 ? status : 400,
      error.code,
      error.message,
    );
  }
  return new ControlError(
    500,
    "ERR_INTERNAL",
    `the node failed: ${error instanceof Error ? error.message : String(error)}; see the node's log`,
  );
}

/** A report's draft: checked field by field by the node (the report schema), which adds its dimensions and specs. */
const reportBodySchema = z.strictObject({ draft: z.record(z.string(), z.unknown()) });

/** A report id from a path, or a 400 naming what a report id is. */
function reportIdOf(raw: string): string {
  const id = decodeURIComponent(raw);
  const parsed = reportIdSchema.safeParse(id);
  if (!parsed.success)
    throw new ControlError(400, "ERR_BAD_REPORT_ID", `report id: ${parsed.error.issues[0]?.message ?? "malformed"}`);
  return id;
}

/** The report routes of a node that has them (a NodeApi may leave them out). */
function reportApi(api: NodeApi) {
  const need = <T>(method: T | undefined): T => {
    if (method === undefined) throw new ControlError(404, "ERR_NO_REPORTS", "reports: this node does not take them");
    return method;
  };
  return {
    queue: (draft: ReportDraft) => need(api.queueReport)(draft),
    delivery: (reportId: string) => need(api.reportDelivery)(reportId),
    list: () => need(api.reports)(),
    one: (reportId: string) => need(api.report)(reportId),
  };
}

function newJobId(): string {
  return `job-${randomBytes(6).toString("hex")}`;
}

type Route = (req: IncomingMessage, params: string[]) => Promise<[number, unknown]>;

function routesOf(api: NodeApi): { pattern: RegExp; methods: Record<string, Route> }[] {
  return [
    { pattern: /^\/v1\/status$/, methods: { GET: async () => [200, await api.status()] } },
    {
      pattern: /^\/v1\/jobs$/,
      methods: {
        GET: async () => [200, await api.jobs()],
        POST: async (req) => {
          const body = await readJson(req, submitBodySchema);
          return [201, await api.submit(body.project, body.jobId ?? newJobId(), body.spec)];
        },
      },
    },
    {
      pattern: /^\/v1\/jobs\/([^/]+)$/,
      methods: {
        GET: async (_req, [id]) => {
          const jobId = jobIdOf(id as string);
          const job = await api.job(jobId);
          if (job === null) throw new ControlError(404, "ERR_NO_SUCH_JOB", `job ${jobId}: no such job on this node`);
          return [200, job];
        },
      },
    },
    {
      pattern: /^\/v1\/jobs\/([^/]+)\/logs$/,
      methods: { GET: async (_req, [id]) => [200, await api.logs(jobIdOf(id as string))] },
    },
    {
      pattern: /^\/v1\/jobs\/([^/]+)\/explain$/,
      methods: { GET: async (_req, [id]) => [200, { explanation: await api.explain(jobIdOf(id as string)) }] },
    },
    {
      pattern: /^\/v1\/jobs\/([^/]+)\/cancel$/,
      methods: {
        POST: async (req, [id]) => {
          const jobId = jobIdOf(id as string);
          const body = await readJson(req, cancelBodySchema);
          return [200, await api.cancel(jobId, body.reason ?? defaultCancelReason)];
        },
      },
    },
    {
      pattern: /^\/v1\/fetches$/,
      methods: {
        POST: async (req) => {
          const body = await readJson(req, fetchBodySchema);
          const { cid } = parseTreeCid(body.root, "root");
          return [202, await api.startFetch(cid, body.destination, body.providers, body.limit)];
        },
      },
    },
    {
      pattern: /^\/v1\/fetches\/([a-z0-9-]{1,64})$/,
      methods: {
        GET: async (_req, [id]) => {
          const status = await api.fetchStatus(id as string);
          if (status === null)
            throw new ControlError(404, "ERR_NO_SUCH_FETCH", `fetch ${id}: no such fetch on this node`);
          return [200, status];
        },
      },
    },
    { pattern: /^\/v1\/runs$/, methods: { GET: async () => [200, await api.runs()] } },
    {
      pattern: /^\/v1\/reports$/,
      methods: {
        GET: async () => [200, await reportApi(api).list()],
        POST: async (req) => {
          const body = await readJson(req, reportBodySchema);
          return [202, await reportApi(api).queue(body.draft as unknown as ReportDraft)];
        },
      },
    },
    {
      pattern: /^\/v1\/reports\/([^/]+)$/,
      methods: {
        GET: async (_req, [id]) => {
          const reportId = reportIdOf(id as string);
          const report = await reportApi(api).one(reportId);
          if (report === null)
            throw new ControlError(404, "ERR_NO_SUCH_REPORT", `report ${reportId}: no such report on this node`);
          return [200, report];
        },
      },
    },
    {
      pattern: /^\/v1\/reports\/([^/]+)\/delivery$/,
      methods: { GET: async (_req, [id]) => [200, await reportApi(api).delivery(reportIdOf(id as string))] },
    },
    {
      pattern: /^\/v1\/runs\/([^/]+)$/,
      methods: { GET: async (_req, [id]) => [200, await api.runs(jobIdOf(id as string))] },
    },
    {
      pattern: /^\/v1\/runs\/([^/]+)\/logs$/,
      methods: { GET: async (_req, [id]) => [200, await api.runLogs(jobIdOf(id as string))] },
    },
    {
      pattern: /^\/metrics$/,
      methods: { GET: async () => [200, new TextAnswer(await api.metrics(), metricsContentType)] },
    },
    {
      pattern: /^\/v1\/rules$/,
      methods: {
        POST: async (req) => {
          const body = await readJson(req, rulesBodySchema);
          if (api.setRules === undefined)
            throw new ControlError(404, "ERR_NO_RULES", "rules: this node cannot change its rules while it runs");
          return [200, await api.setRules(body)];
        },
      },
    },
    {
      pattern: /^\/v1\/trust\/([^/]+)$/,
      methods: {
        DELETE: async (_req, [raw]) => [200, await removeTrusted(api, raw as string)],
      },
    },
    {
      pattern: /^\/v1\/trust\/([^/]+)\/remove$/,
      methods: {
        POST: async (_req, [raw]) => [200, await removeTrusted(api, raw as string)],
      },
    },
    {
      pattern: /^\/v1\/availability$/,
      methods: {
        POST: async (req) => {
          const body = await readJson(req, availabilityBodySchema);
          return [200, await api.setAvailability(body.availability)];
        },
      },
    },
  ];
}

function authorized(req: IncomingMessage, token: Buffer): boolean {
  const header = req.headers.authorization;
  const match = typeof header === "string" ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  if (match === null) return false;
  const given = Buffer.from(match[1] as string, "utf8");
  return given.length === token.length && timingSafeEqual(given, token);
}

/** Where the page redeems a login code for its session cookie (POST {code}), and serves itself (GET). */
export const loginPath = "/login";
/** Where `cimesh dashboard` asks for a one-time login code (POST, bearer token only). */
export const loginCodesPath = "/v1/login-codes";
/** The live stream the page listens to: server-sent events, a `snapshot` each time status, jobs or runs change. */
export const eventsPath = "/v1/events";
/** How often an event stream looks for changes. */
export const eventIntervalMs = 1_000;
/** A comment line on a quiet event stream this often, so that proxies and browsers keep it open. */
export const eventKeepAliveMs = 15_000;
/** Event streams open at once; past it the oldest is closed (a browser reconnects by itself). */
export const maxEventStreams = 8;

const loginBodySchema = z.strictObject({ code: z.string().regex(/^[0-9a-f]{1,128}$/) });

/** The version of this package, as the page shows it. */
const packageVersion: string = (() => {
  try {
    return (createRequire(import.meta.url)("cimesh/package.json") as { version: string }).version;
  } catch {
    return "unknown";
  }
})();

/**
 * What the page shows, in one message: the node's status, its jobs as master, the builds volunteers reported to it
 * (push-only, apart from its jobs), its runs as worker, its version.
 */
async function snapshotOf(api: NodeApi): Promise<string> {
  const [status, jobs, runs, reports] = await Promise.all([
    api.status(),
    api.jobs(),
    api.runs(),
    api.reports?.() ?? Promise.resolve([]),
  ]);
  return toJson({ status, jobs, reports, runs, version: packageVersion });
}

function serveEvents(api: NodeApi, res: ServerResponse, streams: Set<() => void>): void {
  res.writeHead(200, {
    ...securityHeaders,
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-store",
    connection: "keep-alive",
  });
  let last = "";
  let quietMs = 0;
  let busy = false;
  const tick = async () => {
    if (busy) return;
    busy = true;
    try {
      const snapshot = await snapshotOf(api);
      if (snapshot !== last) {
        last = snapshot;
        quietMs = 0;
        res.write(`event: snapshot\ndata: ${snapshot}\n\n`);
      } else {
        quietMs += eventIntervalMs;
        if (quietMs < eventKeepAliveMs) return;
        quietMs = 0;
        res.write(": keep-alive\n\n");
      }
    } catch (error) {
      res.write(`event: failure\ndata: ${toJson({ message: (error as Error).message })}\n\n`);
    } finally {
      busy = false;
    }
  };
  const timer = setInterval(() => void tick(), eventIntervalMs);
  const end = () => {
    clearInterval(timer);
    streams.delete(end);
    res.end();
  };
  streams.add(end);
  while (streams.size > maxEventStreams) streams.values().next().value?.();
  res.on("close", end);
  void tick();
}

export interface ControlServer {
  readonly port: number;
  close(): Promise<void>;
}

/** What the control server answers with: the API's routes and the server's own state. */
interface ControlContext {
  readonly api: NodeApi;
  readonly token: Buffer;
  readonly routes: ReturnType<typeof routesOf>;
  readonly sessions: Sessions;
  readonly assets: Awaited<ReturnType<typeof dashboardAssets>>;
  readonly streams: Set<() => void>;
  /** Known once the server listens, before any request can arrive. */
  boundPort: number;
}

/** Who asks, as the checks every request passes first establish it. */
interface Caller {
  readonly path: string;
  readonly nowMs: number;
  readonly viaToken: boolean;
  readonly viaCookie: boolean;
}

/**
 * The checks every request passes before anything else: its Host (a page of another site that resolves its own name
 * to 127.0.0.1 learns nothing) and, for a request that changes something, its Origin.
 */
function callerOf(context: ControlContext, req: IncomingMessage): Caller {
  const boundPort = context.boundPort;
  if (!hostAllowed(req, boundPort)) {
    discard(req);
    throw new ControlError(
      421,
      "ERR_HOST",
      `Host: expected 127.0.0.1:${boundPort} or localhost:${boundPort}, got ${String(req.headers.host ?? "none").slice(0, 100)}`,
    );
  }
  const path = new URL(req.url ?? "/", `http://${controlHost}`).pathname;
  const nowMs = Date.now();
  const viaToken = authorized(req, context.token);
  const viaCookie = !viaToken && context.sessions.fromCookie(req, boundPort, nowMs);
  if (changesState(req.method) && !originAllowed(req, boundPort, viaCookie || path === loginPath)) {
    discard(req);
    throw new ControlError(
      403,
      "ERR_ORIGIN",
      `Origin: expected this node's own page (http://127.0.0.1:${boundPort}) for a request that changes something, got ${String(req.headers.origin ?? "none").slice(0, 100)}`,
    );
  }
  return { path, nowMs, viaToken, viaCookie };
}

/** What anyone may ask without the token or a session: a login, the dashboard's files, the logged-out page. True when answered. */
async function servedWithoutAuth(
  context: ControlContext,
  caller: Caller,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<boolean> {
  const { path, nowMs } = caller;
  if (path === loginPath && req.method === "POST") {
    const body = await readJson(req, loginBodySchema);
    const opened = context.sessions.redeem(body.code, nowMs);
    if (opened === null)
      throw new ControlError(
        401,
        "ERR_LOGIN_CODE",
        "code: expected a login code from `cimesh dashboard` that was not used yet and is less than 5 minutes old; run `cimesh dashboard` again",
      );
    send(res, 200, { loggedIn: true }, { "set-cookie": sessionCookie(context.boundPort, opened.session) });
    return true;
  }
  if (publicRoute(path) && (req.method === "GET" || req.method === "HEAD")) {
    const asset = context.assets.get(path);
    if (asset === undefined) throw new ControlError(404, "ERR_NO_SUCH_ROUTE", `GET ${path}: no such file`);
    sendAsset(res, asset);
    return true;
  }
  if (caller.viaToken || caller.viaCookie) return false;
  discard(req);
  if (path === "/" && req.method === "GET") {
    sendAsset(res, { body: Buffer.from(loggedOutPage), type: "text/html; charset=utf-8" }, 401);
    return true;
  }
  throw new ControlError(
    401,
    "ERR_UNAUTHORIZED",
    // No path: whoever asks without the token learns nothing of where this node keeps its files.
    `expected the header \`Authorization: Bearer <token>\` with the token from ${tokenFileName} in this node's data folder (the cimesh CLI sends it for you), or the session cookie \`cimesh dashboard\` logs a browser in with`,
  );
}

/** What a caller with the token or a session asks: the dashboard, login codes, the event stream, the API's routes. */
async function serveAuthorized(
  context: ControlContext,
  caller: Caller,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const { path, nowMs } = caller;
  if (path === "/" && req.method === "GET") {
    const page = context.assets.get("/");
    if (page === undefined)
      throw new ControlError(500, "ERR_NO_DASHBOARD", "the dashboard's files are missing from this install");
    sendAsset(res, page);
    return;
  }
  if (path === loginCodesPath && req.method === "POST") {
    // Only the token's holder mints codes: a browser session cannot make itself new ones.
    if (!caller.viaToken) throw new ControlError(403, "ERR_TOKEN_ONLY", `${loginCodesPath}: expected the bearer token`);
    discard(req);
    const issued = context.sessions.issueCode(nowMs);
    send(res, 201, { ...issued, path: `${loginPath}#${issued.code}` });
    return;
  }
  if (path === eventsPath && req.method === "GET") {
    serveEvents(context.api, res, context.streams);
    return;
  }
  const route = context.routes.find((candidate) => candidate.pattern.test(path));
  if (route === undefined) {
    discard(req);
    throw new ControlError(
      404,
      "ERR_NO_SUCH_ROUTE",
      `${req.method} ${path}: no such route; the routes are under /v1/, and ${metricsPath}`,
    );
  }
  const handler = route.methods[req.method ?? ""];
  if (handler === undefined) {
    discard(req);
    const allowed = Object.keys(route.methods).join(", ");
    const error = new ControlError(405, "ERR_METHOD", `${req.method} ${path}: expected ${allowed}`);
    sendError(res, error, { allow: allowed });
    return;
  }
  const params = (route.pattern.exec(path) ?? []).slice(1);
  const [status, value] = await handler(req, params);
  if (value instanceof TextAnswer) sendText(res, status, value);
  else send(res, status, value);
}

/** One request, answered; a failure is answered as a ControlError (the connection closed after a refusal of who asks). */
async function serveRequest(context: ControlContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  try {
    const caller = callerOf(context, req);
    if (await servedWithoutAuth(context, caller, req, res)) return;
    await serveAuthorized(context, caller, req, res);
  } catch (error) {
    const failure = controlErrorOf(error);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    sendError(
      res,
      failure,
      failure.status === 413 || failure.status === 401 || failure.status === 421 || failure.status === 403
        ? { connection: "close" }
        : {},
    );
  }
}

/** Listens on controlHost:`port`; a port in use is refused with what to do (the token file is removed again). */
async function listenOn(server: Server, port: number, dataDir: string, tokenPath: string): Promise<number> {
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, controlHost, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (error) {
    await unlink(tokenPath).catch(() => undefined);
    const code = (error as NodeJS.ErrnoException).code;
    throw new ControlStartError(
      code === "EADDRINUSE"
        ? `control API port ${port} on ${controlHost} is in use: expected a free port; set apiPort in ${join(dataDir, "config.yaml")} to another, or to 0 for any`
        : `control API on ${controlHost}:${port}: ${(error as Error).message}`,
    );
  }
  return (server.address() as AddressInfo).port;
}

/**
 * Serves `api` on 127.0.0.1:`port` (0 = any), writes a fresh token to
 * `<dataDir>/api.token` and the port to `<dataDir>/api.port`.
 */
export async function startControlServer(api: NodeApi, dataDir: string, port: number): Promise<ControlServer> {
  if (!Number.isInteger(port) || port < 0 || port > 65_535)
    throw new ControlStartError(`apiPort: expected 0 (any) to 65535, got ${port}`);
  const tokenText = randomBytes(controlTokenBytes).toString("hex");
  const tokenPath = join(dataDir, tokenFileName);
  const portPath = join(dataDir, portFileName);
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  await writeFileAtomic(tokenPath, tokenText, tokenFileMode);

  const context: ControlContext = {
    api,
    token: Buffer.from(tokenText, "utf8"),
    routes: routesOf(api),
    sessions: new Sessions(),
    assets: await dashboardAssets(),
    streams: new Set<() => void>(),
    boundPort: 0,
  };
  const server = createServer((req, res) => {
    void serveRequest(context, req, res);
  });
  server.requestTimeout = controlRequestTimeoutMs;
  server.headersTimeout = Math.min(controlRequestTimeoutMs, 20_000);
  const bound = await listenOn(server, port, dataDir, tokenPath);
  context.boundPort = bound;
  await writeFileAtomic(portPath, `${bound}\n`, tokenFileMode);

  let closed: Promise<void> | null = null;
  return {
    port: bound,
    close() {
      closed ??= (async () => {
        for (const end of context.streams) end();
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        });
        // Remove the files only while they are still ours: another node may have started in the folder since.
        if ((await readFile(portPath, "utf8").catch(() => "")).trim() === String(bound))
          await unlink(portPath).catch(() => undefined);
        if ((await readFile(tokenPath, "utf8").catch(() => "")) === tokenText)
          await unlink(tokenPath).catch(() => undefined);
      })();
      return closed;
    },
  };
}

/** The control API of the node running in a data folder, as a NodeApi. */
export interface ControlClient extends NodeApi {
  readonly port: number;
  /** A one-time code that logs a browser in to the dashboard, and the path (with the code) that redeems it. */
  loginCode(): Promise<{ readonly code: string; readonly expiresAtMs: number; readonly path: string }>;
}

export interface ControlClientOptions {
  /** How long one request may take. Default controlClientTimeoutMs. */
  readonly timeoutMs?: number;
}

function readRunFile(path: string): string | null {
  try {
    return readFileSync(path, "utf8").trim();
  } catch {
    return null;
  }
}

/** The node a client talks to: its control API's port and token, and how long a request may take. */
interface ControlTarget {
  readonly dataDir: string;
  readonly port: number;
  readonly tokenText: string;
  readonly timeoutMs: number;
}

/** A node's answer, read whole: a success as JSON (or, with `asText`, text), a failure as a ControlRequestError. */
function answerOf<T>(
  port: number,
  statusCode: number | undefined,
  body: Buffer,
  asText: boolean,
): { status: number; value: T } {
  const status = statusCode ?? 0;
  const succeeded = status >= 200 && status < 300;
  if (asText && succeeded) return { status, value: body.toString("utf8") as T };
  let value: unknown;
  try {
    value = JSON.parse(body.toString("utf8"));
  } catch {
    throw new ControlRequestError(
      statusCode ?? 502,
      "ERR_BAD_RESPONSE",
      `answer from the node at ${controlHost}:${port}: expected JSON; is another program on that port?`,
    );
  }
  if (succeeded) return { status, value: value as T };
  const error = (value as { error?: { code?: unknown; message?: unknown } } | null)?.error;
  throw new ControlRequestError(
    status,
    typeof error?.code === "string" ? error.code : "ERR_NODE",
    typeof error?.message === "string" ? error.message : `the node answered ${status}`,
  );
}

/** One request; with `asText`, a successful answer is taken as text rather than JSON (the metrics). */
function controlCall<T>(
  target: ControlTarget,
  method: "GET" | "POST",
  path: string,
  body?: unknown,
  asText = false,
): Promise<{ status: number; value: T }> {
  const { dataDir, port, tokenText, timeoutMs } = target;
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : Buffer.from(toJson(body), "utf8");
    const req = request(
      {
        host: controlHost,
        port,
        path,
        method,
        agent: false,
        headers: {
          authorization: `Bearer ${tokenText}`,
          accept: "application/json",
          ...(payload === undefined
            ? {}
            : { "content-type": "application/json", "content-length": String(payload.length) }),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        let received = 0;
        res.on("data", (chunk: Buffer) => {
          received += chunk.length;
          if (received > maxControlResponseBytes) {
            req.destroy(
              new ControlRequestError(
                502,
                "ERR_RESPONSE_TOO_LARGE",
                `answer from the node: expected at most ${maxControlResponseBytes} bytes`,
              ),
            );
            return;
          }
          chunks.push(chunk);
        });
        res.on("end", () => {
          try {
            resolve(answerOf<T>(port, res.statusCode, Buffer.concat(chunks), asText));
          } catch (error) {
            reject(error);
          }
        });
        res.on("error", reject);
      },
    );
    req.setTimeout(timeoutMs, () => req.destroy(new ControlTimeoutError(port, timeoutMs)));
    req.on("error", (error: NodeJS.ErrnoException) => {
      if (error.code === "ECONNREFUSED" || error.code === "ECONNRESET")
        reject(new NoNodeRunningError(dataDir, `nothing answers on ${controlHost}:${port}`));
      else reject(error);
    });
    req.end(payload);
  });
}

/**
 * Connects to the node running in `dataDir` (reads its api.port and
 * api.token). Throws NoNodeRunningError when there is none; a request to a
 * node that has gone (the files are stale) throws it too.
 */
export function connectControl(dataDir: string, options: ControlClientOptions = {}): ControlClient {
  const portText = readRunFile(join(dataDir, portFileName));
  const tokenText = readRunFile(join(dataDir, tokenFileName));
  if (portText === null || tokenText === null) throw new NoNodeRunningError(dataDir);
  const port = Number(portText);
  if (!Number.isInteger(port) || port < 1 || port > 65_535)
    throw new NoNodeRunningError(dataDir, `${portFileName} holds no port`);
  const timeoutMs = options.timeoutMs ?? controlClientTimeoutMs;

  const target: ControlTarget = { dataDir, port, tokenText, timeoutMs };
  const call = <T>(method: "GET" | "POST", path: string, body?: unknown, asText = false) =>
    controlCall<T>(target, method, path, body, asText);

  const jobPath = (jobId: string, suffix = "") => `/v1/jobs/${encodeURIComponent(jobId)}${suffix}`;
  return {
    port,
    status: async () => (await call<NodeStatus>("GET", "/v1/status")).value,
    jobs: async () => (await call<JobSummary[]>("GET", "/v1/jobs")).value,
    async submit(project: string, jobId: string, spec: JobSpec) {
      return (await call<JobSummary>("POST", "/v1/jobs", { project, jobId: jobId === "" ? null : jobId, spec })).value;
    },
    async job(jobId: string) {
      try {
        return (await call<JobDetail>("GET", jobPath(jobId))).value;
      } catch (error) {
        if (error instanceof ControlRequestError && error.code === "ERR_NO_SUCH_JOB") return null;
        throw error;
      }
    },
    logs: async (jobId: string) => (await call<LogLine[]>("GET", jobPath(jobId, "/logs"))).value,
    explain: async (jobId: string) =>
      (await call<{ explanation: string }>("GET", jobPath(jobId, "/explain"))).value.explanation,
    cancel: async (jobId: string, reason: string) =>
      (await call<JobSummary>("POST", jobPath(jobId, "/cancel"), { reason })).value,
    setAvailability: async (availability: Availability) =>
      (await call<NodeStatus>("POST", "/v1/availability", { availability })).value,
    setRules: async (rules: RulesBody) => (await call<NodeStatus>("POST", "/v1/rules", rules)).value,
    removeTrust: async (project: string) =>
      (await call<NodeStatus>("POST", `/v1/trust/${encodeURIComponent(project)}/remove`)).value,
    startFetch: async (
      root: string,
      destination: string,
      providers: readonly string[],
      limit?: { readonly maxBytes: number; readonly name: string },
    ) => (await call<FetchStatus>("POST", "/v1/fetches", { root, destination, providers, limit })).value,
    async fetchStatus(id: string) {
      try {
        return (await call<FetchStatus>("GET", `/v1/fetches/${encodeURIComponent(id)}`)).value;
      } catch (error) {
        if (error instanceof ControlRequestError && error.code === "ERR_NO_SUCH_FETCH") return null;
        throw error;
      }
    },
    runs: async (jobId?: string) =>
      (await call<RunSummary[]>("GET", jobId === undefined ? "/v1/runs" : `/v1/runs/${encodeURIComponent(jobId)}`))
        .value,
    runLogs: async (jobId: string) =>
      (await call<LogLine[]>("GET", `/v1/runs/${encodeURIComponent(jobId)}/logs`)).value,
    metrics: async () => (await call<string>("GET", metricsPath, undefined, true)).value,
    queueReport: async (draft: ReportDraft) => (await call<ReportDelivery>("POST", "/v1/reports", { draft })).value,
    reportDelivery: async (reportId: string) =>
      (await call<ReportDelivery>("GET", `/v1/reports/${encodeURIComponent(reportId)}/delivery`)).value,
    async reports() {
      try {
        return (await call<ReportSummary[]>("GET", "/v1/reports")).value;
      } catch (error) {
        // A node that takes no reports has recorded none.
        if (error instanceof ControlRequestError && error.code === "ERR_NO_REPORTS") return [];
        throw error;
      }
    },
    async report(reportId: string) {
      if (!reportIdSchema.safeParse(reportId).success) return null;
      try {
        return (await call<ReportDetail>("GET", `/v1/reports/${encodeURIComponent(reportId)}`)).value;
      } catch (error) {
        if (error instanceof ControlRequestError && ["ERR_NO_SUCH_REPORT", "ERR_NO_REPORTS"].includes(error.code))
          return null;
        throw error;
      }
    },
    loginCode: async () =>
      (await call<{ code: string; expiresAtMs: number; path: string }>("POST", loginCodesPath, {})).value,
  };
}
