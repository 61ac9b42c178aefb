/**
 * Push-only builds with real processes: a project's master and three
 * volunteers that take no orders (plain `cimesh start`, no worker), each
 * building the project's job on its own with `cimesh report`, in the sandbox
 * (bubblewrap). The master records what its policy allows, refuses the rest
 * with their reasons, and a report made while it is down arrives once it is
 * back. Serial: one mesh of four node processes on a 2-core machine.
 */
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import test from "ava";
import { cli, cliOk, Mesh, type NodeProcess, until, writeJob } from "./mesh-harness.ts";

const replayPath = fileURLToPath(new URL("./fixtures/report-replay.ts", import.meta.url));
/** Bound on the replay fixture's run. */
const fixtureTimeoutMs = 60_000;
/** How long `cimesh report` waits for the master's answer in these tests (a down master: far less). */
const reportWaitMs = "60s";

/** A free TCP port on 127.0.0.1, so the master comes back at the address the volunteers know. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address !== null ? address.port : 0));
    });
  });
}

interface ReportJson {
  readonly reportId: string;
  readonly outcome: string;
  readonly logDigest: string;
  readonly outputsDigest: string | null;
  readonly delivery: { readonly state: string; readonly verdict?: string; readonly reason?: string };
}

async function report(
  dataDir: string,
  jobPath: string,
  extra: readonly string[] = [],
): Promise<{ code: number; json: ReportJson; stderr: string }> {
  const run = await cli(dataDir, ["report", jobPath, "--json", "--wait", reportWaitMs, ...extra]);
  const line = run.stdout.trim().split("\n").pop() ?? "";
  let json: ReportJson;
  try {
    json = JSON.parse(line) as ReportJson;
  } catch {
    throw new Error(`cimesh report printed no JSON (exit ${run.code}): ${run.stderr}${run.stdout}`);
  }
  return { code: run.code, json, stderr: run.stderr };
}

/** A tree into a folder through a node's control API (what `cimesh fetch` asks), bounded. */
async function fetchThrough(node: NodeProcess, cid: string, folder: string, providers: readonly string[] = []) {
  const started = await node.control.startFetch(cid, folder, providers);
  const done = await until(`${node.name} to fetch ${cid}`, async () => {
    const status = await node.control.fetchStatus(started.id);
    return status !== null && status.state !== "fetching" ? status : null;
  });
  if (done.state !== "done") throw new Error(`${node.name} could not fetch ${cid}: ${done.error}`);
}

function events(node: NodeProcess, event: string): Record<string, unknown>[] {
  return node.events.filter((entry) => entry.event === event) as Record<string, unknown>[];
}

test.serial(
  "push-only builds: a volunteer's report is recorded with its log and outputs byte-identical; a key the policy does not allow, a replay and a reporter over the rate limit are refused with their reasons; a report made while the master is down arrives once it is back",
  async (t) => {
    t.timeout(300_000);
    const mesh = await Mesh.create();
    const beganMs = Date.now();
    const phase = (what: string) => t.log(`${what} at ${Math.round((Date.now() - beganMs) / 1000)} s`);
    try {
      // Made at once where one does not wait for another, to save time on a busy machine.
      const names = ["alice", "bob", "carol"];
      const [masterDir = "", ...volunteerDirs] = await Promise.all(
        ["master", ...names].map((name) => mesh.initNode(name)),
      );
      const { project, trustArgs } = await mesh.initProject(masterDir);
      const port = await freePort();
      await mesh.configure(masterDir, [
        [["listen"], [`/ip4/127.0.0.1/tcp/${port}`]],
        [["reports"], { from: "volunteers", perReporterPerHour: 2, perProjectPerHour: 100 }],
      ]);
      const [started] = await Promise.all([
        mesh.start("master", masterDir, ["--master"]),
        ...volunteerDirs.map((dir) => cliOk(dir, trustArgs)),
      ]);
      let master = started as NodeProcess;
      // No --worker: volunteers that take no orders, only report what they built.
      const volunteers = await Promise.all(
        volunteerDirs.map((dir, index) => mesh.start(names[index] as string, dir, ["--bootstrap", master.address])),
      );
      const [alice, bob, carol] = volunteers as [NodeProcess, NodeProcess, NodeProcess];
      const job = await writeJob(mesh, "nightly", project, {
        steps: [
          {
            name: "build",
            run: "mkdir -p out && head -c 65536 /dev/urandom > out/blob.bin && echo built > out/note.txt && echo hello stdout && echo hello stderr >&2",
          },
          { name: "test", run: "test -s out/blob.bin" },
        ],
        outputs: ["out"],
      });

      phase("mesh up");
      // 1. A volunteer that trusts the project builds and reports: the master records it as a report, not a job.
      const first = await report(alice.dataDir, job, ["--source", "https://example.org/nightly.git@0123abcd"]);
      t.is(first.code, 0, first.stderr);
      t.is(first.json.delivery.verdict, "accepted");
      const jobs = await cliOk(masterDir, ["jobs"]);
      t.regex(
        jobs,
        new RegExp(
          `${first.json.reportId}  \\[report\\]  succeeded, exit 0  nightly  https://example.org/nightly.git@0123abcd`,
        ),
      );
      t.deepEqual(await master.control.jobs(), [], "a report is never one of the master's scheduled jobs");
      const shown = await cliOk(masterDir, ["result", first.json.reportId]);
      t.regex(shown, /a build reported by a volunteer, not a scheduled job/);
      t.regex(shown, /step 1 "build": succeeded, exit 0/);
      t.regex(shown, /step 2 "test": succeeded, exit 0/);
      const logs = await cliOk(masterDir, ["logs", first.json.reportId]);
      t.regex(logs, /==> report \S+, stdout <==\nhello stdout\n/);
      t.regex(logs, /==> report \S+, stderr <==\nhello stderr\n/);
      // Outputs and log, fetched through the mesh from the reporter, against the reporter's own copies.
      const outputsCid = first.json.outputsDigest as string;
      await cliOk(masterDir, ["result", first.json.reportId, "--download", join(mesh.root, "m-out")]);
      await fetchThrough(alice, outputsCid, join(mesh.root, "a-out"));
      for (const file of ["out/blob.bin", "out/note.txt"]) {
        const [there, here] = await Promise.all([
          readFile(join(mesh.root, "m-out", file)),
          readFile(join(mesh.root, "a-out", file)),
        ]);
        t.true(there.equals(here), `${file} differs`);
      }
      t.is((await readFile(join(mesh.root, "m-out", "out/blob.bin"))).length, 65_536);
      await fetchThrough(master, first.json.logDigest, join(mesh.root, "m-log"), [alice.peerId]);
      await fetchThrough(alice, first.json.logDigest, join(mesh.root, "a-log"));
      for (const file of ["stdout.log", "stderr.log"])
        t.true((await readFile(join(mesh.root, "m-log", file))).equals(await readFile(join(mesh.root, "a-log", file))));
      t.is(await readFile(join(mesh.root, "m-log", "stdout.log"), "utf8"), "hello stdout\n");

      phase("recorded and downloaded");
      // 2. Over the rate limit (two an hour per reporter): the third is refused, and says why.
      t.is((await report(alice.dataDir, job)).code, 0);
      const third = await report(alice.dataDir, job);
      t.is(third.code, 3);
      t.is(third.json.delivery.verdict, "refused");
      t.regex(third.json.delivery.reason ?? "", /^rate-limited: reporter \S+ 2 reports within 3600000 ms, at most 2/);

      phase("rate limit");
      // 3. The same signed bytes twice: recorded once, the copy refused as a replay (no answer to it).
      const replayId = "report-replayed-once";
      const fixture = await new Promise<string>((resolve, reject) =>
        execFile(
          process.execPath,
          [replayPath, project, master.address, replayId],
          { timeout: fixtureTimeoutMs, env: { ...process.env, CIMESH_TEST_MESH: "1" } },
          (error, stdout, stderr) => (error === null ? resolve(stdout) : reject(new Error(`${error}: ${stderr}`))),
        ),
      );
      t.regex(fixture, /sent copy 2/);
      await until("the replay refused", () =>
        events(master, "report-refused").some((entry) => entry.reportId === replayId && entry.reason === "replay"),
      );
      t.is(events(master, "report-accepted").filter((entry) => entry.reportId === replayId).length, 1);
      t.is((await master.control.reports?.())?.filter((entry) => entry.reportId === replayId).length, 1);

      phase("replay");
      // 4. The master is down: bob's report waits in his node's outbox (exit 4) and arrives once the master is back.
      // The master comes back taking reports only from alice's and bob's keys.
      await master.stop();
      const down = await cli(bob.dataDir, ["report", job, "--json", "--wait", "1s"]);
      t.is(down.code, 4, down.stderr);
      const queued = JSON.parse(down.stdout.trim().split("\n").pop() ?? "{}") as ReportJson;
      t.is(queued.delivery.state, "waiting");
      const listed = [(await alice.control.status()).publicKey, (await bob.control.status()).publicKey];
      await mesh.configure(masterDir, [[["reports", "from"], listed]]);
      master = await mesh.start("master", masterDir, ["--master"]);
      const back = master;
      await until(
        "bob's report, made while the master was down, recorded",
        async () => (await back.control.reports?.())?.some((entry) => entry.reportId === queued.reportId),
        90_000,
      );
      await until("bob's node told of the answer", async () => {
        const delivery = await bob.control.reportDelivery?.(queued.reportId);
        return delivery?.state === "done" && delivery.verdict === "accepted";
      });

      phase("delivered after the master came back");
      // 5. A key the policy does not list: refused, and says why.
      const stranger = await report(carol.dataDir, job);
      t.is(stranger.code, 3, stranger.stderr);
      t.regex(stranger.json.delivery.reason ?? "", /^reporter-not-allowed: /);
      t.false((await master.control.reports?.())?.some((entry) => entry.reportId === stranger.json.reportId));
      t.log(
        `recorded ${(await master.control.reports?.())?.length} reports; refusals: ${events(master, "report-refused")
          .map((entry) => entry.reason)
          .join(", ")}`,
      );
    } finally {
      await mesh.stopAll();
    }
  },
);
