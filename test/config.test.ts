/**
 * The files people write: the job file, the node's config file and the
 * capability spec file. A complete example parses to what it says; each kind
 * of mistake gives an error naming the file, the line and the field.
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import { anchorFromGenesis } from "../crypto/index.ts";
import { defaultMasterConfig, jobSpecSchema } from "../jobs/index.ts";
import {
  configTemplate,
  defaultConfig,
  defaultJobDeadlineInMs,
  FileFieldError,
  generateIdentity,
  loadConfig,
  type NodeConfig,
  parseConfig,
  parseJobFile,
  parseSpecFile,
  saveConfig,
  YamlSyntaxError,
} from "../node/files/index.ts";

const nowMs = 1_800_000_000_000;
const rootKey = generateIdentity().publicKey;
const rootHex = Buffer.from(rootKey).toString("hex");
const project = anchorFromGenesis([rootKey], 1).project;

const completeJob = `# a complete job file
project: ${project}
id: build-42
name: build and test
steps:
  - name: install
    run: npm ci
  - name: test
    run: |
      npm test
      echo done
  - echo "a step may be a plain command"
env:
  CI: true
  RETRIES: 3
  GREETING: hello
timeout: 45m
resources:
  cpus: 2
  memory: 2GiB
  disk: 10GB
  processes: 512
network: true
outputs: [dist/app.js, coverage]
inputsDigest: bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy
requiredSpecs: [0f8fad5b-d9cb-469f-a165-70867728950e]
os: linux
replicas: 3
quorum: 2
shards: 4
priority: 10
maxAttempts: 5
deadline: in 6h
`;

/** Asserts that `run` throws a FileFieldError (or YamlSyntaxError) whose message starts with `file:line: field:`. */
function expectFieldError(
  t: import("ava").ExecutionContext,
  run: () => unknown,
  fileName: string,
  line: number,
  field: string,
): FileFieldError {
  const error = t.throws(run, { instanceOf: FileFieldError });
  t.is(error.line, line, error.message);
  t.is(error.field, field, error.message);
  t.true(error.message.startsWith(`${fileName}:${line}: ${field}: expected`), error.message);
  return error;
}

test("a complete job file parses into the JobSpec it spells out", (t) => {
  const parsed = parseJobFile(completeJob, "job.yaml", nowMs);
  t.is(parsed.project, project);
  t.is(parsed.jobId, "build-42");
  t.deepEqual(parsed.spec, {
    name: "build and test",
    steps: [
      { name: "install", run: "npm ci" },
      { name: "test", run: "npm test\necho done\n" },
      { name: 'echo "a step may be a plain command"', run: 'echo "a step may be a plain command"' },
    ],
    env: { CI: "true", RETRIES: "3", GREETING: "hello" },
    timeoutMs: 45 * 60_000,
    resources: { cpus: 2, memoryBytes: 2 * 2 ** 30, diskBytes: 10e9, processes: 512 },
    network: true,
    outputs: ["dist/app.js", "coverage"],
    inputsDigest: "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",
    requiredSpecs: ["0f8fad5b-d9cb-469f-a165-70867728950e"],
    os: "linux",
    replicas: 3,
    quorum: 2,
    shards: 4,
    priority: 10,
    maxAttempts: 5,
    deadlineMs: nowMs + 6 * 3_600_000,
  });
  t.true(jobSpecSchema.safeParse(parsed.spec).success);
});

test("a minimal job file gets the friendly defaults", (t) => {
  const parsed = parseJobFile(`project: ${project}\nname: n\nsteps: [make]\n`, "job.yaml", nowMs);
  t.is(parsed.jobId, null);
  t.deepEqual(parsed.spec, {
    name: "n",
    steps: [{ name: "make", run: "make" }],
    env: {},
    timeoutMs: 30 * 60_000,
    resources: { cpus: 1, memoryBytes: 2 ** 30, diskBytes: 2 ** 30, processes: 256 },
    network: false,
    outputs: [],
    inputsDigest: null,
    requiredSpecs: [],
    os: null,
    replicas: 1,
    quorum: 1,
    shards: 1,
    priority: 0,
    maxAttempts: 3,
    deadlineMs: nowMs + defaultJobDeadlineInMs,
  });
});

test("timeoutMs, deadlineMs and sizes in bytes are accepted as well as units", (t) => {
  const parsed = parseJobFile(
    `project: ${project}\nname: n\nsteps: [make]\ntimeoutMs: 90000\ndeadlineMs: ${nowMs + 5000}\nresources:\n  memoryBytes: 1000\n`,
    "job.yaml",
    nowMs,
  );
  t.is(parsed.spec.timeoutMs, 90_000);
  t.is(parsed.spec.deadlineMs, nowMs + 5000);
  t.is(parsed.spec.resources.memoryBytes, 1000);
});

test("malformed YAML gives an error with its line", (t) => {
  const text = `project: ${project}\nname: n\nsteps:\n  - run: make\n    name: [unclosed\nreplicas: 1\n`;
  const error = t.throws(() => parseJobFile(text, "job.yaml", nowMs), { instanceOf: YamlSyntaxError });
  t.regex(error.message, /^job\.yaml:[5-6]: expected well-formed YAML/);
  const duplicate = t.throws(() => parseJobFile(`name: a\nname: b\n`, "job.yaml", nowMs), {
    instanceOf: YamlSyntaxError,
  });
  t.is(duplicate.line, 2);
  t.regex(duplicate.message, /^job\.yaml:2: /);
});

test('replicas: "two" names its line and field', (t) => {
  const text = `project: ${project}\nname: n\nsteps: [make]\n\n\nreplicas: "two"\n`;
  const error = expectFieldError(t, () => parseJobFile(text, "job.yaml", nowMs), "job.yaml", 6, "replicas");
  t.regex(error.message, /expected a number, got the text "two"/);
});

test("quorum above replicas names the quorum line", (t) => {
  const text = `project: ${project}\nname: n\nsteps: [make]\nreplicas: 2\nquorum: 3\n`;
  const error = expectFieldError(t, () => parseJobFile(text, "job.yaml", nowMs), "job.yaml", 5, "quorum");
  t.regex(error.message, /expected at most replicas, got 3/);
});

test("a step without run names the step's line and steps[i].run", (t) => {
  const text = `project: ${project}\nname: n\nsteps:\n  - name: first\n    run: make\n  - name: second\n\nenv: {}\n`;
  const error = expectFieldError(t, () => parseJobFile(text, "job.yaml", nowMs), "job.yaml", 6, "steps[1].run");
  t.regex(error.message, /expected text, got nothing/);
});

test("more mistakes, each at its line and field", (t) => {
  const cases: [string, number, string][] = [
    [`project: ${project}\nname: n\nsteps: [make]\nstepz: []\n`, 4, "stepz"],
    [`project: nope\nname: n\nsteps: [make]\n`, 1, "project"],
    [`name: n\nsteps: [make]\n`, 1, "project"],
    [`project: ${project}\nname: n\nsteps: [make]\ntimeout: soon\n`, 4, "timeout"],
    [`project: ${project}\nname: n\nsteps: [make]\ntimeout: 2d\n`, 4, "timeout"],
    [`project: ${project}\nname: n\nsteps: [make]\ntimeout: 1m\ntimeoutMs: 60000\n`, 5, "timeoutMs"],
    [`project: ${project}\nname: n\nsteps: [make]\nresources:\n  cpus: 1\n  memory: lots\n`, 6, "resources.memory"],
    [`project: ${project}\nname: n\nsteps: [make]\nenv:\n  "1BAD": x\n`, 5, "env.1BAD"],
    [`project: ${project}\nname: n\nsteps: [make]\noutputs: [../etc/passwd]\n`, 4, "outputs[0]"],
    [`project: ${project}\nname: n\nsteps: [make]\ndeadline: tomorrow\n`, 4, "deadline"],
    [`project: ${project}\nname: n\nsteps: [make]\ndeadline: 2001-01-01T00:00:00Z\n`, 4, "deadline"],
    [`project: ${project}\nname: n\nsteps: []\n`, 3, "steps"],
    [`project: ${project}\nsteps: [make]\n`, 1, "name"],
  ];
  for (const [text, line, field] of cases)
    expectFieldError(t, () => parseJobFile(text, "ci/job.yaml", nowMs), "ci/job.yaml", line, field);
});

test("an empty file or a list is not a job", (t) => {
  expectFieldError(t, () => parseJobFile("", "job.yaml", nowMs), "job.yaml", 1, "(file)");
  expectFieldError(t, () => parseJobFile("- a\n", "job.yaml", nowMs), "job.yaml", 1, "(file)");
});

test("the config template parses to the defaults", (t) => {
  t.deepEqual(parseConfig(configTemplate, "config.yaml"), defaultConfig());
});

test("a complete config file parses, days and times into what the worker machine takes", (t) => {
  const text = `listen: [/ip4/0.0.0.0/tcp/4001]
bootstrap: [/ip4/192.0.2.1/tcp/4001]
mdns: false
apiPort: 7700
worker:
  slots: 2
  allowNetwork: true
  availability: reluctant
  rules:
    windows:
      - days: [mon, tuesday, 3]
        start: "18:00"
        end: "08:30"
      - start: "12:00"
        end: "13:00"
    maxLoadAverage: 3.5
  dimensions:
    cores: 4
    memory: 8GiB
    disk: null
    tools: [{ name: gcc, version: 13.2.0 }]
  labels: [gpu]
  locks: { vm: 1, staging-db: 2 }
trust:
  - project: ${project}
    roots: [${rootHex}]
    threshold: 1
    share: 2.5
masters: [${project}]
timing:
  leaseMs: 9000
  renewIntervalMs: 3000
quorum:
  weight: 2
  spotCheckFraction: 0.25
`;
  const config = parseConfig(text, "config.yaml");
  t.deepEqual(config, {
    listen: ["/ip4/0.0.0.0/tcp/4001"],
    bootstrap: ["/ip4/192.0.2.1/tcp/4001"],
    mdns: false,
    apiPort: 7700,
    worker: {
      slots: 2,
      cacheQuota: 10 * 1024 ** 3,
      allowNetwork: true,
      availability: "reluctant",
      rules: {
        windows: [
          { days: [1, 2, 3], startMinute: 18 * 60, endMinute: 8 * 60 + 30 },
          { days: [], startMinute: 12 * 60, endMinute: 13 * 60 },
        ],
        maxLoadAverage: 3.5,
      },
      dimensions: { cores: 4, memoryBytes: 8 * 2 ** 30, diskBytes: null, tools: [{ name: "gcc", version: "13.2.0" }] },
      labels: ["gpu"],
      locks: { vm: 1, "staging-db": 2 },
    },
    trust: [{ project, roots: [rootHex], threshold: 1, share: 2.5 }],
    masters: [project],
    timing: {
      leaseMs: 9000,
      bidWindowMs: 250,
      reannounceIntervalMs: 30_000,
      renewIntervalMs: 3000,
      offerLifetimeMs: 3_600_000,
      keysetRepublishMs: 10_000,
    },
    quorum: {
      weight: 2,
      validRunsForFullWeight: defaultMasterConfig.validRunsForFullWeight,
      distinctPrefixes: true,
      spotCheckFraction: 0.25,
    },
    reports: { from: "volunteers", perReporterPerHour: 12, perProjectPerHour: 1000 },
    reachability: {
      relay: "auto",
      reserveRelay: "auto",
      upnp: false,
      relayLimits: { maxReservations: 64, dataBytes: 8388608, durationMs: 120000, reservationTtlMs: 3600000 },
    },
  });
});

test("config mistakes name their line and field", (t) => {
  const otherRoot = Buffer.from(generateIdentity().publicKey).toString("hex");
  const cases: [string, number, string][] = [
    ["worker:\n  slots: many\n", 2, "worker.slots"],
    [
      "worker:\n  rules:\n    windows:\n      - start: '18:00'\n        end: '25:00'\n",
      5,
      "worker.rules.windows[0].end",
    ],
    [
      "worker:\n  rules:\n    windows:\n      - days: [someday]\n        start: '18:00'\n        end: '19:00'\n",
      4,
      "worker.rules.windows[0].days[0]",
    ],
    ["worker:\n  availability: sleepy\n", 2, "worker.availability"],
    ["worker:\n  locks:\n    vm: 0\n", 3, "worker.locks.vm"],
    ["worker:\n  locks:\n    Big VM: 1\n", 3, "worker.locks.Big VM"],
    ["mdns: true\nwrker: {}\n", 2, "wrker"],
    ["apiPort: 70000\n", 1, "apiPort"],
    ["quorum:\n  spotCheckFraction: 2\n", 2, "quorum.spotCheckFraction"],
    ["quorum:\n  validRunsForFullWeight: 0\n", 2, "quorum.validRunsForFullWeight"],
    ["quorum:\n  weigth: 1\n", 2, "quorum.weigth"],
    ["listen: [tcp-4001]\n", 1, "listen[0]"],
    [`trust:\n  - project: ${project}\n    roots: [${otherRoot}]\n`, 3, "trust[0].roots"],
    [`trust:\n  - project: ${project}\n    roots: [${rootHex}]\n    share: 0\n`, 4, "trust[0].share"],
    [
      `trust:\n  - project: ${project}\n    roots: [${rootHex}]\nmasters:\n  - ${anchorFromGenesis([generateIdentity().publicKey], 1).project}\n`,
      5,
      "masters[0]",
    ],
  ];
  for (const [text, line, field] of cases) {
    const error = t.throws(() => parseConfig(text, "/data/config.yaml"), { instanceOf: FileFieldError });
    t.is(error.line, line, `${field}: ${error.message}`);
    t.is(error.field, field, error.message);
    t.true(error.message.startsWith(`/data/config.yaml:${line}: ${field}: expected`), error.message);
  }
  t.throws(() => parseConfig("worker: [\n", "/data/config.yaml"), { instanceOf: YamlSyntaxError });
});

test("loadConfig gives the defaults without a file; saveConfig writes it atomically, keeping the comments", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "cimesh-config-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  t.deepEqual(await loadConfig(dir), defaultConfig());
  await writeFile(join(dir, "config.yaml"), `# my own comment\n${configTemplate}`);
  const config = await loadConfig(dir);
  const changed: NodeConfig = {
    ...config,
    worker: {
      ...config.worker,
      slots: 4,
      rules: { windows: [{ days: [6, 0], startMinute: 0, endMinute: 24 * 60 - 1 }], maxLoadAverage: null },
    },
    trust: [{ project, roots: [rootHex], threshold: 1, share: 1 }],
  };
  await saveConfig(dir, changed);
  const text = await readFile(join(dir, "config.yaml"), "utf8");
  t.true(text.startsWith("# my own comment\n"));
  t.true(text.includes("# Jobs run at once."));
  t.true(text.includes('start: "00:00"'));
  t.deepEqual(await loadConfig(dir), changed);
  // Saving the same config again changes nothing.
  await saveConfig(dir, changed);
  t.is(await readFile(join(dir, "config.yaml"), "utf8"), text);
});

test("a capability spec file parses; a missing uuid suggests one", (t) => {
  const spec = parseSpecFile(
    `uuid: 0f8fad5b-d9cb-469f-a165-70867728950e
name: node 22 on linux
version: 2
requirements:
  os: [linux]
  minCores: 2
  minMemory: 4GiB
  tools: [{ name: node, range: ">=22" }]
selfCheck:
  steps: [node --version]
  timeout: 1m
`,
    "spec.yaml",
    nowMs,
  );
  t.is(spec.uuid, "0f8fad5b-d9cb-469f-a165-70867728950e");
  t.is(spec.requirements.minMemoryBytes, 4 * 2 ** 30);
  t.deepEqual(spec.selfCheck, { steps: [{ name: "node --version", run: "node --version" }], timeoutMs: 60_000 });
  t.is(spec.issuedAtMs, nowMs);
  const error = t.throws(() => parseSpecFile("name: x\n", "spec.yaml", nowMs), { instanceOf: FileFieldError });
  t.regex(error.message, /^spec\.yaml:1: uuid: expected .*uuid: [0-9a-f-]{36}/);
  const bad = t.throws(
    () =>
      parseSpecFile(
        "uuid: 0f8fad5b-d9cb-469f-a165-70867728950e\nname: x\nrequirements:\n  arch: [X86]\n",
        "spec.yaml",
        nowMs,
      ),
    {
      instanceOf: FileFieldError,
    },
  );
  t.is(bad.line, 4);
  t.is(bad.field, "requirements.arch[0]");
});

test("the README's config, job and spec examples are valid", async (t) => {
  const readme = await readFile(new URL("../README.md", import.meta.url), "utf8");
  const from = readme.indexOf("## Config file and job file");
  const to = readme.indexOf("\n## ", from + 1);
  const section = readme.slice(from, to < 0 ? undefined : to);
  const blocks = [...section.matchAll(/```yaml\n([\s\S]*?)```/g)].map((match) => match[1] as string);
  // The config, job and spec examples come first; a Prometheus scrape config (not ours to parse) follows.
  t.true(blocks.length >= 3, `${blocks.length} yaml blocks`);
  const [config, job, spec] = blocks as [string, string, string];
  t.is(parseConfig(config, "README config").worker.slots, 2);
  const parsed = parseJobFile(job, "README job", nowMs);
  t.is(parsed.spec.shards, 4);
  t.is(parsed.spec.steps[2]?.name, "npm run lint");
  t.is(parseSpecFile(spec, "README spec", nowMs).requirements.minDiskBytes, 10 * 2 ** 30);
});

test("timing: a renewal interval not under the lease is refused, naming the field", (t) => {
  const error = t.throws(() => parseConfig("timing:\n  leaseMs: 1000\n  renewIntervalMs: 2000\n", "config.yaml"));
  t.regex(error?.message ?? "", /timing\.renewIntervalMs/);
  t.regex(error?.message ?? "", /less than leaseMs/);
  const tooShort = t.throws(() => parseConfig("timing:\n  leaseMs: 5\n", "config.yaml"));
  t.regex(tooShort?.message ?? "", /config\.yaml:2.*timing\.leaseMs.*at least 100/s);
});
