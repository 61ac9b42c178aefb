/**
 * The dashboard in a real browser (playwright-core driving /usr/bin/chromium) against real `cimesh start`
 * processes: a project node (master only) and a volunteer (worker only). The volunteer logs in through the address
 * `cimesh dashboard` prints and clicks "paused": a submitted job is not taken, and the project's page shows why
 * (explain). The paused choice survives a restart of the volunteer's node; after it, "eager" lets the job run: its
 * live log appears on the volunteer's page while it runs and it lands in the history with its outcome; the project's
 * page shows the job's attempts and verdict. While the job runs, the node panel shows its CPU and memory, and the
 * blob cache's use against its quota; then the volunteer edits the time windows and load ceiling with the keyboard
 * (in force at once, in config.yaml) and removes the project after a confirm step. Screenshots of both pages go to docs/ with CIMESH_UPDATE_SCREENSHOTS=1
 * (the README shows them). Needs bubblewrap (the job runs
 * in the sandbox) and Chromium.
 */
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import test from "ava";
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";
import { loadConfig } from "../node/files/index.ts";
import { probeSandbox } from "../node/sandbox/index.ts";
import { cliOk, Mesh, writeJob } from "./mesh-harness.ts";

const chromiumPath = "/usr/bin/chromium";
const docsDir = fileURLToPath(new URL("../docs/", import.meta.url));
/** Bound on anything the page is waited for: a job's run and a node's restart on a loaded 2-core machine. */
const pageWaitMs = 60_000;
/** How long the job's step sleeps after it prints: time to see its log live. */
const jobSleepSeconds = 5;
/** A phone's screen width in CSS pixels. */
const phoneWidthPx = 390;
/** How long a paused worker is watched not to take the job. */
const pausedWatchMs = 3_000;

async function sandboxProblem(): Promise<string | null> {
  const workRoot = await mkdtemp(join(tmpdir(), "cimesh-dashboard-probe-"));
  try {
    const probe = await probeSandbox({ workRoot });
    return probe.ok ? null : probe.reason;
  } finally {
    await rm(workRoot, { recursive: true, force: true });
  }
}

/** Logs a fresh browser context in through the address `cimesh dashboard` prints; returns the page on the dashboard. */
async function logIn(context: BrowserContext, dataDir: string): Promise<Page> {
  const printed = await cliOk(dataDir, ["dashboard", "--no-open"]);
  const url = /^http:\/\/127\.0\.0\.1:\d+\/login#[0-9a-f]+$/m.exec(printed)?.[0];
  if (url === undefined) throw new Error(`cimesh dashboard printed no login address: ${printed}`);
  const page = await context.newPage();
  await page.goto(url);
  await page.waitForURL(/\/$/, { timeout: pageWaitMs });
  await page.locator("#peer-id").waitFor({ timeout: pageWaitMs });
  // The code was spent: the same address logs no one else in.
  const second = await context.browser()?.newContext();
  if (second !== undefined) {
    const other = await second.newPage();
    await other.goto(url);
    await other
      .locator("#login-status")
      .filter({ hasText: /not used yet/ })
      .waitFor({ timeout: pageWaitMs });
    await second.close();
  }
  return page;
}

test.serial(
  "a volunteer pauses and resumes from the page, sees the run live and in its history; the project sees why, the attempts and the verdict",
  async (t) => {
    if (!existsSync(chromiumPath)) {
      t.fail(`needs Chromium at ${chromiumPath} (\`cimesh setup --with-test-deps\` installs it as root)`);
      return;
    }
    const problem = await sandboxProblem();
    if (problem !== null) {
      t.fail(`needs bubblewrap with unprivileged user namespaces to run jobs, and cannot make it here: ${problem}`);
      return;
    }
    const startedMs = Date.now();
    const mesh = await Mesh.create();
    let browser: Browser | null = null;
    try {
      const masterDir = await mesh.initNode("project");
      const { project, trustArgs } = await mesh.initProject(masterDir);
      const master = await mesh.start("project", masterDir, ["--master"]);
      const workerDir = await mesh.initNode("volunteer");
      await cliOk(workerDir, trustArgs);
      await mesh.configure(workerDir, [[["worker", "slots"], 1]]);
      const workerFlags = ["--worker", "--bootstrap", master.address];
      let worker = await mesh.start("volunteer", workerDir, workerFlags);

      browser = await chromium.launch({
        executablePath: chromiumPath,
        args: process.getuid?.() === 0 ? ["--no-sandbox"] : [],
      });
      const volunteerContext = await browser.newContext({ viewport: { width: 1100, height: 900 } });
      const projectContext = await browser.newContext({ viewport: { width: 1100, height: 900 } });
      let volunteer = await logIn(volunteerContext, workerDir);
      t.is(await volunteer.locator("#peer-id").textContent(), worker.peerId);

      // Paused from the page: the node acts on it and keeps it.
      await volunteer.getByRole("button", { name: "paused" }).click();
      await volunteer.locator('button[aria-pressed="true"]', { hasText: "paused" }).waitFor({ timeout: pageWaitMs });
      t.is((await worker.control.status()).availability, "paused");

      const jobFile = await writeJob(mesh, "dashboard", project, {
        id: "dash-1",
        steps: ["echo dashboard says hello", `sleep ${jobSleepSeconds}`, "echo dashboard says bye"],
        timeout: "2m",
      });
      await cliOk(masterDir, ["submit", jobFile]);
      const projectPage = await logIn(projectContext, masterDir);
      await projectPage.goto(`${new URL(projectPage.url()).origin}/#project`);
      await projectPage.getByRole("button", { name: "Show dash-1" }).click();
      await projectPage.locator("#explain").filter({ hasText: /\S/ }).waitFor({ timeout: pageWaitMs });
      await new Promise((resolve) => setTimeout(resolve, pausedWatchMs));
      t.is((await master.control.job("dash-1"))?.attempts.length, 0, "a paused worker takes nothing");
      await projectPage
        .locator("#explain")
        .filter({ hasText: /1 are paused or offline/ })
        .waitFor({ timeout: pageWaitMs });
      const explained = (await projectPage.locator("#explain").textContent()) ?? "";
      t.regex(explained, /^job dash-1: open\n/, "the page shows the master's explain");
      t.log(`explain while the only worker is paused:\n${explained}`);
      t.regex((await projectPage.locator("#job-waiting").textContent()) ?? "", /Waiting: \S/);

      // The choice survives a restart of the volunteer's node (sessions do not: it logs in again).
      await worker.stop();
      worker = await mesh.start("volunteer", workerDir, workerFlags);
      t.is((await worker.control.status()).availability, "paused");
      await volunteer.close();
      volunteer = await logIn(volunteerContext, workerDir);
      await volunteer.locator('button[aria-pressed="true"]', { hasText: "paused" }).waitFor({ timeout: pageWaitMs });

      // Eager: the job runs; its log shows live while it sleeps, then the history has it.
      await volunteer.getByRole("button", { name: "eager" }).click();
      await volunteer.locator(".live-log").filter({ hasText: "dashboard says hello" }).waitFor({ timeout: pageWaitMs });
      // What the running job uses, from its process tree in /proc, while it sleeps.
      const jobsUse = volunteer.locator("#jobs-use").filter({ hasText: /dash-1 shard 0: CPU .* memory \d/ });
      await jobsUse.waitFor({ timeout: pageWaitMs });
      t.log(`the running job's use on the node panel: ${await jobsUse.textContent()}`);
      // .live-log is drawn only for a run the node reports running: the log was seen while the run went on.
      const row = volunteer.locator("#history tr", { hasText: "dash-1" });
      await row.filter({ hasText: "succeeded" }).waitFor({ timeout: pageWaitMs });
      t.regex((await row.textContent()) ?? "", /succeeded, exit 0/);
      await row.getByRole("button", { name: "log" }).click();
      await volunteer.locator("pre", { hasText: "dashboard says bye" }).waitFor({ timeout: pageWaitMs });

      // The project's page: passed, the attempt by the volunteer, the verdict.
      await projectPage.locator("#job-state", { hasText: "passed" }).waitFor({ timeout: pageWaitMs });
      await projectPage.locator("#verdicts", { hasText: "accepted" }).waitFor({ timeout: pageWaitMs });
      const attempts = (await projectPage.locator("#attempts").textContent()) ?? "";
      t.true(attempts.includes(worker.peerId.slice(0, 20)), attempts);
      t.regex(attempts, /succeeded, exit 0/);
      await projectPage.locator("#job-log", { hasText: "dashboard says hello" }).waitFor({ timeout: pageWaitMs });

      // The README's screenshots are rewritten with CIMESH_UPDATE_SCREENSHOTS=1; otherwise they go to a temporary
      // folder, so a test run leaves the checkout as it was.
      const shotsDir =
        process.env.CIMESH_UPDATE_SCREENSHOTS === "1" ? docsDir : await mkdtemp(join(tmpdir(), "cimesh-shots-"));
      await mkdir(shotsDir, { recursive: true });
      await volunteer.screenshot({ path: join(shotsDir, "dashboard-volunteer.png"), fullPage: true });
      await projectPage.screenshot({ path: join(shotsDir, "dashboard-project.png"), fullPage: true });
      if (shotsDir !== docsDir) await rm(shotsDir, { recursive: true, force: true });

      // On a phone's width the page reads without sideways scrolling (wide tables scroll inside their own box).
      for (const page of [volunteer, projectPage]) {
        await page.setViewportSize({ width: phoneWidthPx, height: 800 });
        const width = Number(await page.evaluate("document.documentElement.scrollWidth"));
        t.true(width <= phoneWidthPx, `page ${page.url()} is ${width} px wide on a ${phoneWidthPx} px screen`);
      }
      await volunteer.setViewportSize({ width: 1100, height: 900 });
      t.regex((await volunteer.locator("#cache-use").textContent()) ?? "", /^\d.* used of \d.* quota \(\d+%\)$/);

      // The rules, edited with the keyboard: in force at once and kept in config.yaml.
      await volunteer.getByRole("button", { name: "Edit time windows and load ceiling" }).click();
      await volunteer.getByRole("button", { name: "Add a window" }).press("Enter");
      await volunteer.getByLabel("Mon").check();
      await volunteer.getByLabel("From").fill("08:00");
      await volunteer.getByLabel("Until").fill("20:30");
      await volunteer.getByLabel(/Load ceiling/).fill("1000");
      await volunteer.getByLabel(/Load ceiling/).press("Enter");
      await volunteer
        .locator("#rules-now", { hasText: "Mon 08:00–20:30. Load ceiling: 1000. Saved to config.yaml; in force now." })
        .waitFor({ timeout: pageWaitMs });
      const rules = { windows: [{ days: [1], startMinute: 8 * 60, endMinute: 20 * 60 + 30 }], maxLoadAverage: 1000 };
      t.deepEqual((await worker.control.status()).availabilityRules, rules, "the worker acts on them");
      t.deepEqual((await loadConfig(workerDir)).worker.rules, rules, "config.yaml keeps them");

      // The project removed, after a confirm step: out of config.yaml, in force at the next start.
      await volunteer.getByRole("button", { name: `Remove ${project}` }).click();
      await volunteer.getByRole("button", { name: "Yes, remove" }).click();
      await volunteer.getByText("takes effect at the next start").waitFor({ timeout: pageWaitMs });
      t.deepEqual((await loadConfig(workerDir)).trust, []);
      t.log(`browser test took ${Date.now() - startedMs} ms`);
    } finally {
      await browser?.close();
      await mesh.stopAll();
    }
  },
);
