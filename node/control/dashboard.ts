/**
 * What keeps the control port safe to open in a browser, and the dashboard it
 * serves there.
 *
 * A page on 127.0.0.1 is reachable from every site the volunteer visits, so:
 * - the Host header must name this node (127.0.0.1:<port> or localhost:<port>),
 *   else 421: a foreign name resolving to 127.0.0.1 (DNS rebinding) reads nothing;
 * - a request that changes something (POST, PUT, PATCH, DELETE) carrying an
 *   Origin must carry this node's own, else 403 (CSRF); one authenticated by the
 *   session cookie must carry it (browsers always send it on such requests);
 * - the browser holds a session cookie (HttpOnly, SameSite=Strict, Path=/),
 *   got by redeeming a one-time login code that `cimesh dashboard` asks the node
 *   for with the bearer token; a code works once and for loginCodeLifetimeMs;
 * - pages carry a strict Content-Security-Policy (scripts and styles from this
 *   origin only, no inline script, no eval, no framing) and nosniff; no page or
 *   asset holds a token or a key.
 *
 * The page's files live in node/dashboard/ (shipped in the package); preact and
 * htm, the page's only libraries, are served from where Node resolves them.
 */
import { randomBytes, timingSafeEqual } from "node:crypto";
import { readFile } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** How long a login code from `cimesh dashboard` may wait to be used. */
export const loginCodeLifetimeMs = 5 * 60_000;
/** How long a browser session lasts once logged in. */
export const sessionLifetimeMs = 12 * 60 * 60_000;
/** Login codes outstanding at once; past it the oldest is forgotten. */
export const maxLoginCodes = 16;
/** Browser sessions at once; past it the oldest ends. */
export const maxSessions = 64;
/** Random bytes in a login code and in a session token. */
export const secretBytes = 32;
/** The session cookie's name, per port: two nodes on one machine keep their sessions apart. */
export function sessionCookieName(port: number): string {
  return `cimesh_session_${port}`;
}

export const contentSecurityPolicy = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

/** Headers every answer carries, page or JSON. */
export const securityHeaders: Readonly<Record<string, string>> = {
  "content-security-policy": contentSecurityPolicy,
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-resource-policy": "same-origin",
};

/** Whether the Host header names this node on its port. */
export function hostAllowed(req: IncomingMessage, port: number): boolean {
  const host = req.headers.host;
  return host === `127.0.0.1:${port}` || host === `localhost:${port}`;
}

export function ownOrigins(port: number): readonly string[] {
  return [`http://127.0.0.1:${port}`, `http://localhost:${port}`];
}

/** A request that changes something: it must come from this node's own page or from no browser at all. */
export function changesState(method: string | undefined): boolean {
  return method !== "GET" && method !== "HEAD" && method !== "OPTIONS";
}

/** Whether a state-changing request's Origin is acceptable; `viaCookie`: it was authenticated by the session cookie. */
export function originAllowed(req: IncomingMessage, port: number, viaCookie: boolean): boolean {
  const origin = req.headers.origin;
  if (req.headers["sec-fetch-site"] === "cross-site" || req.headers["sec-fetch-site"] === "same-site") return false;
  if (origin === undefined) return !viaCookie;
  return ownOrigins(port).includes(origin);
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a, "utf8");
  const y = Buffer.from(b, "utf8");
  return x.length === y.length && timingSafeEqual(x, y);
}

/** One-time login codes and the sessions they open, in memory: a restart of the node logs every browser out. */
export class Sessions {
  private readonly codes = new Map<string, number>();
  private readonly sessions = new Map<string, number>();

  /** A fresh one-time code and when it stops working. */
  issueCode(nowMs: number): { code: string; expiresAtMs: number } {
    const code = randomBytes(secretBytes).toString("hex");
    const expiresAtMs = nowMs + loginCodeLifetimeMs;
    this.codes.set(code, expiresAtMs);
    while (this.codes.size > maxLoginCodes) this.codes.delete(this.codes.keys().next().value as string);
    return { code, expiresAtMs };
  }

  /** Spends `code` (once, before it expires) for a session token; null when it is unknown, spent or expired. */
  redeem(code: string, nowMs: number): { session: string; expiresAtMs: number } | null {
    let found: string | null = null;
    for (const [candidate, expiresAtMs] of this.codes) {
      if (expiresAtMs <= nowMs) this.codes.delete(candidate);
      else if (sameSecret(candidate, code)) found = candidate;
    }
    if (found === null) return null;
    this.codes.delete(found);
    const session = randomBytes(secretBytes).toString("hex");
    const expiresAtMs = nowMs + sessionLifetimeMs;
    this.sessions.set(session, expiresAtMs);
    while (this.sessions.size > maxSessions) this.sessions.delete(this.sessions.keys().next().value as string);
    return { session, expiresAtMs };
  }

  /** Whether the request carries a live session cookie of this node. */
  fromCookie(req: IncomingMessage, port: number, nowMs: number): boolean {
    const header = req.headers.cookie;
    if (typeof header !== "string") return false;
    const name = sessionCookieName(port);
    for (const part of header.split(";")) {
      const [key, value] = part.trim().split("=", 2);
      if (key !== name || value === undefined) continue;
      for (const [session, expiresAtMs] of this.sessions) {
        if (expiresAtMs <= nowMs) this.sessions.delete(session);
        else if (sameSecret(session, value)) return true;
      }
    }
    return false;
  }
}

export function sessionCookie(port: number, session: string): string {
  return `${sessionCookieName(port)}=${session}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${Math.floor(sessionLifetimeMs / 1000)}`;
}

/** Where the page's own files are: node/dashboard/ beside this room (dist/node/dashboard/ once built). */
export const dashboardDir = join(dirname(fileURLToPath(import.meta.url)), "..", "dashboard");

const contentTypes: Readonly<Record<string, string>> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  mjs: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
  png: "image/png",
  svg: "image/svg+xml",
};

/** The page's libraries, by the name the page imports them as: the ESM builds their packages ship. */
function vendorFiles(): Readonly<Record<string, string>> {
  const require = createRequire(import.meta.url);
  const preact = require.resolve("preact");
  const htm = join(dirname(require.resolve("htm")), "htm.mjs");
  return { "preact.mjs": preact, "htm.mjs": htm };
}

/** The files the page may load, by their path on the control port: nothing else of the disk is reachable. */
export async function dashboardAssets(): Promise<ReadonlyMap<string, { body: Buffer; type: string }>> {
  const named: [string, string][] = [
    ["/", join(dashboardDir, "index.html")],
    ["/login", join(dashboardDir, "login.html")],
    ["/assets/app.js", join(dashboardDir, "app.js")],
    ["/assets/login.js", join(dashboardDir, "login.js")],
    ["/assets/style.css", join(dashboardDir, "style.css")],
    ...Object.entries(vendorFiles()).map(([name, path]): [string, string] => [`/assets/vendor/${name}`, path]),
  ];
  const assets = new Map<string, { body: Buffer; type: string }>();
  for (const [route, path] of named) {
    const body = await readFile(path).catch(() => null);
    if (body === null) continue; // a missing file answers 404; the API still works
    const extension = route === "/" || route === "/login" ? "html" : (path.split(".").pop() ?? "");
    assets.set(route, { body, type: contentTypes[extension] ?? "application/octet-stream" });
  }
  return assets;
}

/** Routes that need no session: the login page, its script and the shared files (none holds a secret). */
export function publicRoute(path: string): boolean {
  return path === "/login" || path.startsWith("/assets/");
}

export function sendAsset(res: ServerResponse, asset: { body: Buffer; type: string }, status = 200): void {
  res.writeHead(status, {
    ...securityHeaders,
    "content-type": asset.type,
    "content-length": String(asset.body.length),
    "cache-control": "no-store",
  });
  res.end(asset.body);
}

/** What the page at / says to a browser that has no session. */
export const loggedOutPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cimesh: log in</title></head>
<body><h1>Not logged in</h1><p>Run <code>cimesh dashboard</code> on this machine and open the address it prints.</p></body></html>
`;
