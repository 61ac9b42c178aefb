import { fc, testProp } from "@fast-check/ava";
import test from "ava";
import {
  checkSpec,
  type Dimensions,
  explainPool,
  explainPoolText,
  explainUnmet,
  isEligible,
  type JobRequirements,
  matchJob,
  maxPoolSummaryRequirements,
  type Requirements,
  type Unmet,
  type WorkerAdvert,
  type WorkerCapabilities,
} from "../capabilities/index.ts";
import type { JobSpec } from "../jobs/index.ts";

const gib = 2 ** 30;
const nodeSpec = "0f8fad5b-d9cb-469f-a165-70867728950e";
const gccSpec = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

type Fits<Body, Taken> = Body extends Taken ? true : false;

test("the real message bodies fit the structural types matching takes", (t) => {
  // Checked by tsc: a JobSpec or WorkerAdvert that drifted from these types would make `false` the only value allowed.
  const fits: [Fits<JobSpec, JobRequirements>, Fits<WorkerAdvert, WorkerCapabilities>] = [true, true];
  t.deepEqual(fits, [true, true]);
});

function dims(overrides: Partial<Dimensions> = {}): Dimensions {
  return {
    os: "linux",
    arch: "x64",
    cores: 8,
    memoryBytes: 16 * gib,
    diskBytes: 100 * gib,
    tools: [
      { name: "gcc", version: "12.2.0-14" },
      { name: "node", version: "v22.1.0" },
    ],
    labels: ["gpu", "fast-net"],
    ...overrides,
  };
}

function requirements(overrides: Partial<Requirements> = {}): Requirements {
  return {
    os: ["linux", "darwin"],
    arch: ["x64"],
    minCores: 4,
    minMemoryBytes: 8 * gib,
    minDiskBytes: 10 * gib,
    tools: [
      { name: "gcc", range: ">=12 <14" },
      { name: "node", range: "^22" },
    ],
    labels: ["gpu"],
    ...overrides,
  };
}

function job(overrides: Partial<JobRequirements> = {}): JobRequirements {
  return {
    requiredSpecs: [nodeSpec],
    os: "linux",
    resources: { cpus: 4, memoryBytes: 8 * gib, diskBytes: 10 * gib },
    ...overrides,
  };
}

function worker(
  dimensionOverrides: Partial<Dimensions> = {},
  specs: WorkerCapabilities["specs"] = [{ uuid: nodeSpec, version: 1, passed: true }],
): WorkerCapabilities {
  return { dimensions: dims(dimensionOverrides), specs };
}

test("checkSpec: a worker that meets everything has nothing unmet", (t) => {
  t.deepEqual(checkSpec(requirements(), dims()), []);
});

test("checkSpec: empty os and arch lists accept any platform", (t) => {
  t.deepEqual(checkSpec(requirements({ os: [], arch: [] }), dims({ os: "win32", arch: "riscv64" })), []);
});

const specCases: { title: string; requirements: Requirements; dims: Dimensions; unmet: Unmet }[] = [
  {
    title: "os not in the list",
    requirements: requirements(),
    dims: dims({ os: "win32" }),
    unmet: { requirement: "os", expected: "one of linux, darwin", actual: "win32" },
  },
  {
    title: "arch not in the list",
    requirements: requirements(),
    dims: dims({ arch: "arm64" }),
    unmet: { requirement: "arch", expected: "x64", actual: "arm64" },
  },
  {
    title: "too few cores",
    requirements: requirements(),
    dims: dims({ cores: 2 }),
    unmet: { requirement: "cores", expected: "at least 4", actual: "2" },
  },
  {
    title: "too little memory",
    requirements: requirements(),
    dims: dims({ memoryBytes: 4 * gib }),
    unmet: { requirement: "memory", expected: "at least 8 GiB", actual: "4 GiB" },
  },
  {
    title: "memory one byte short",
    requirements: requirements({ minMemoryBytes: 8 * gib + 1 }),
    dims: dims({ memoryBytes: 8 * gib }),
    unmet: { requirement: "memory", expected: "at least 8.0 GiB (8589934593 bytes)", actual: "8 GiB" },
  },
  {
    title: "too little disk",
    requirements: requirements(),
    dims: dims({ diskBytes: 512 * 2 ** 20 }),
    unmet: { requirement: "disk", expected: "at least 10 GiB", actual: "512 MiB" },
  },
  {
    title: "a tool missing",
    requirements: requirements(),
    dims: dims({ tools: [{ name: "node", version: "22.3.0" }] }),
    unmet: { requirement: "tool gcc", expected: "version >=12 <14", actual: "not installed" },
  },
  {
    title: "a tool outside its range",
    requirements: requirements(),
    dims: dims({
      tools: [
        { name: "gcc", version: "11.4.0-1ubuntu1~22.04" },
        { name: "node", version: "v22.1.0" },
      ],
    }),
    unmet: { requirement: "tool gcc", expected: "version >=12 <14", actual: "11.4.0-1ubuntu1~22.04 (read as 11.4.0)" },
  },
  {
    title: "a tool whose version is not a version",
    requirements: requirements(),
    dims: dims({
      tools: [
        { name: "gcc", version: "unknown" },
        { name: "node", version: "v22.1.0" },
      ],
    }),
    unmet: { requirement: "tool gcc", expected: "version >=12 <14", actual: "unknown (not a version)" },
  },
  {
    title: "an invalid range",
    requirements: requirements({ tools: [{ name: "gcc", range: ">=>12" }] }),
    dims: dims(),
    unmet: { requirement: "tool gcc", expected: "a valid semver range", actual: '">=>12"' },
  },
  {
    title: "an invalid range, even with the tool missing",
    requirements: requirements({ tools: [{ name: "rustc", range: "latest" }] }),
    dims: dims(),
    unmet: { requirement: "tool rustc", expected: "a valid semver range", actual: '"latest"' },
  },
  {
    title: "a label missing",
    requirements: requirements({ labels: ["gpu", "kvm"] }),
    dims: dims(),
    unmet: { requirement: "label kvm", expected: "present", actual: "absent" },
  },
  {
    title: "a label required twice",
    requirements: requirements({ labels: ["kvm", "kvm"] }),
    dims: dims(),
    unmet: { requirement: "label kvm", expected: "present", actual: "absent" },
  },
];

for (const c of specCases) {
  test(`checkSpec: ${c.title} is exactly one unmet requirement`, (t) => {
    t.deepEqual(checkSpec(c.requirements, c.dims), [c.unmet]);
  });
}

test("checkSpec: several unmet requirements come in the order the spec states them", (t) => {
  const unmet = checkSpec(requirements({ labels: ["kvm"] }), dims({ os: "win32", cores: 1, tools: [] }));
  t.deepEqual(
    unmet.map((u) => u.requirement),
    ["os", "cores", "tool gcc", "tool node", "label kvm"],
  );
});

test("checkSpec: one of several installed versions in range is enough", (t) => {
  const installed = dims({
    tools: [
      { name: "gcc", version: "11.4.0" },
      { name: "gcc", version: "13.1.0" },
      { name: "node", version: "22.0.0" },
    ],
  });
  t.deepEqual(checkSpec(requirements(), installed), []);
  const unmet = checkSpec(requirements({ tools: [{ name: "gcc", range: "^14" }] }), installed);
  t.deepEqual(unmet, [{ requirement: "tool gcc", expected: "version ^14", actual: "11.4.0, 13.1.0" }]);
});

const semverCases: [range: string, version: string, satisfied: boolean][] = [
  [">=12 <14", "12.2.0-14", true],
  [">=12 <14", "13.99.1", true],
  [">=12 <14", "14.0.0", false],
  [">=12 <14", "11.9.9", false],
  [">=12 <14", "gcc (Debian 12.2.0-14) 12.2.0", true],
  ["^22", "v22.1.0", true],
  ["^22", "22", true],
  ["^22", "v23.0.0", false],
  ["^22", "21.7.3", false],
  ["~1.2.3", "1.2.3", true],
  ["~1.2.3", "1.2.9", true],
  ["~1.2.3", "v1.2.3-rc1", true],
  ["~1.2.3", "1.2.2", false],
  ["~1.2.3", "1.3.0", false],
  ["1.x || >=3", "2.0.0", false],
  ["1.x || >=3", "3.1", true],
];

for (const [range, version, satisfied] of semverCases) {
  test(`checkSpec: version ${JSON.stringify(version)} ${satisfied ? "satisfies" : "misses"} ${JSON.stringify(range)}`, (t) => {
    const unmet = checkSpec(
      requirements({ tools: [{ name: "gcc", range }] }),
      dims({ tools: [{ name: "gcc", version }] }),
    );
    t.is(unmet.length, satisfied ? 0 : 1);
    if (!satisfied) t.is(unmet[0]?.requirement, "tool gcc");
  });
}

test("matchJob: a worker that meets everything has nothing unmet", (t) => {
  t.deepEqual(matchJob(job(), worker()), []);
  t.true(isEligible(job(), worker()));
});

test("matchJob: a job with no os runs on any os", (t) => {
  t.deepEqual(matchJob(job({ os: null }), worker({ os: "darwin" })), []);
});

const jobCases: { title: string; job: JobRequirements; worker: WorkerCapabilities; unmet: Unmet }[] = [
  {
    title: "a required spec not advertised",
    job: job({ requiredSpecs: [nodeSpec, gccSpec] }),
    worker: worker(),
    unmet: { requirement: `spec ${gccSpec}`, expected: "advertised as passed", actual: "not advertised" },
  },
  {
    title: "a required spec whose self-check failed",
    job: job(),
    worker: worker({}, [
      { uuid: nodeSpec, version: 3, passed: false },
      { uuid: nodeSpec, version: 2, passed: false },
      { uuid: gccSpec, version: 1, passed: true },
    ]),
    unmet: {
      requirement: `spec ${nodeSpec}`,
      expected: "advertised as passed",
      actual: "self-check failed (version 2, 3)",
    },
  },
  {
    title: "a required spec listed twice",
    job: job({ requiredSpecs: [gccSpec, gccSpec] }),
    worker: worker(),
    unmet: { requirement: `spec ${gccSpec}`, expected: "advertised as passed", actual: "not advertised" },
  },
  {
    title: "another os",
    job: job(),
    worker: worker({ os: "win32" }),
    unmet: { requirement: "os", expected: "linux", actual: "win32" },
  },
  {
    title: "more cpus than cores",
    job: job(),
    worker: worker({ cores: 2 }),
    unmet: { requirement: "cores", expected: "at least 4", actual: "2" },
  },
  {
    title: "more memory than the worker has",
    job: job(),
    worker: worker({ memoryBytes: 6 * gib }),
    unmet: { requirement: "memory", expected: "at least 8 GiB", actual: "6 GiB" },
  },
  {
    title: "more disk than the worker has",
    job: job(),
    worker: worker({ diskBytes: 1000 }),
    unmet: { requirement: "disk", expected: "at least 10 GiB", actual: "1000 bytes" },
  },
];

for (const c of jobCases) {
  test(`matchJob: ${c.title} is exactly one unmet requirement`, (t) => {
    t.deepEqual(matchJob(c.job, c.worker), [c.unmet]);
    t.false(isEligible(c.job, c.worker));
  });
}

test("matchJob: a passed claim of any version satisfies the spec", (t) => {
  const w = worker({}, [
    { uuid: nodeSpec, version: 1, passed: false },
    { uuid: nodeSpec, version: 2, passed: true },
  ]);
  t.deepEqual(matchJob(job(), w), []);
});

test("explainUnmet: one line per unmet requirement", (t) => {
  const text = explainUnmet(matchJob(job({ requiredSpecs: [] }), worker({ cores: 2, os: "darwin" })));
  t.is(text, "os: expected linux, got darwin\ncores: expected at least 4, got 2");
  t.is(explainUnmet([]), "");
});

test("explainPool: counts the workers each requirement blocks, most blocking first", (t) => {
  const workers = [
    ...Array.from({ length: 9 }, () => worker({}, [])),
    ...Array.from({ length: 3 }, () => worker({ cores: 2 })),
  ];
  const pool = explainPool(job(), workers);
  t.deepEqual(pool, {
    eligible: 0,
    total: 12,
    byRequirement: [
      {
        requirement: `spec ${nodeSpec}`,
        workers: 9,
        expected: "advertised as passed",
        actuals: [{ actual: "not advertised", workers: 9 }],
      },
      { requirement: "cores", workers: 3, expected: "at least 4", actuals: [{ actual: "2", workers: 3 }] },
    ],
  });
  t.is(
    explainPoolText(job(), workers, { specNames: new Map([[nodeSpec, "node-22-linux"]]) }),
    `0 of 12 known workers are eligible; 9 lack spec 0f8fad5b... (node-22-linux); 3 have 2 cores, job needs 4`,
  );
  t.is(
    explainPoolText(job(), workers),
    `0 of 12 known workers are eligible; 9 lack spec ${nodeSpec}; 3 have 2 cores, job needs 4`,
  );
});

test("explainPool: a worker failing several requirements counts under each; eligible ones under none", (t) => {
  const workers = [
    worker(),
    worker(),
    worker({ cores: 1, os: "darwin" }),
    worker({ cores: 2, memoryBytes: 4 * gib }),
    worker({ os: "win32" }, [{ uuid: nodeSpec, version: 1, passed: false }]),
  ];
  const pool = explainPool(job(), workers);
  t.is(pool.eligible, 2);
  t.is(pool.total, 5);
  t.deepEqual(
    pool.byRequirement.map((b) => [b.requirement, b.workers]),
    [
      ["cores", 2],
      ["os", 2],
      ["memory", 1],
      [`spec ${nodeSpec}`, 1],
    ],
  );
  t.is(
    explainPoolText(job(), workers),
    "2 of 5 known workers are eligible; " +
      "2 have too few cores (1 has 1, 1 has 2), job needs 4; " +
      "2 run another os (1 runs darwin, 1 runs win32), job needs linux; " +
      "1 has 4 GiB memory, job needs 8 GiB; " +
      `1 failed the self-check of spec ${nodeSpec}`,
  );
});

test("explainPoolText: no workers, all eligible, and more requirements than a summary names", (t) => {
  t.is(explainPoolText(job(), []), "no known workers: no worker has advertised, so none can take the job");
  t.deepEqual(explainPool(job(), []), { eligible: 0, total: 0, byRequirement: [] });
  t.is(explainPoolText(job(), [worker()]), "1 of 1 known worker is eligible");
  const specs = Array.from({ length: maxPoolSummaryRequirements + 2 }, (_, i) => `${nodeSpec.slice(0, -2)}${i}0`);
  const text = explainPoolText(job({ requiredSpecs: specs }), [
    worker({}, [{ uuid: specs[0] ?? "", version: 1, passed: false }]),
  ]);
  t.true(text.startsWith("0 of 1 known worker is eligible; 1 failed the self-check of spec "), text);
  t.true(text.endsWith("; and 2 more requirements unmet"), text);
  t.is(text.split("; ").length, 1 + maxPoolSummaryRequirements + 1);
});

test("explainPoolText: a spec some workers lack and others failed", (t) => {
  const workers = [worker({}, []), worker({}, []), worker({}, [{ uuid: nodeSpec, version: 4, passed: false }])];
  t.is(
    explainPoolText(job(), workers, { specNames: new Map([[nodeSpec, "node-22-linux"]]) }),
    "0 of 3 known workers are eligible; 3 lack a passing spec 0f8fad5b... (node-22-linux) (2 without it, 1 failed its self-check)",
  );
});

/*
 * Generators draw from small pools (four spec uuids, three platforms, a few
 * sizes) so that generated workers meet generated jobs often enough for both
 * answers of isEligible to be exercised.
 */
const specPool = [nodeSpec, gccSpec, "6ba7b810-9dad-11d1-80b4-00c04fd430c8", "3f2504e0-4f89-11d3-9a0c-0305e82c3301"];
const osPool = ["linux", "darwin", "win32"];
const sizePool = [0, gib, 4 * gib, 8 * gib, 8 * gib + 1, 16 * gib];

const arbJob: fc.Arbitrary<JobRequirements> = fc.record({
  requiredSpecs: fc.array(fc.constantFrom(...specPool), { maxLength: 3 }),
  os: fc.option(fc.constantFrom(...osPool), { nil: null }),
  resources: fc.record({
    cpus: fc.integer({ min: 1, max: 8 }),
    memoryBytes: fc.constantFrom(...sizePool.filter((size) => size > 0)),
    diskBytes: fc.constantFrom(...sizePool),
  }),
});

const arbWorker: fc.Arbitrary<WorkerCapabilities> = fc.record({
  dimensions: fc.record({
    os: fc.constantFrom(...osPool),
    arch: fc.constantFrom("x64", "arm64"),
    cores: fc.integer({ min: 1, max: 8 }),
    memoryBytes: fc.constantFrom(...sizePool),
    diskBytes: fc.constantFrom(...sizePool),
    tools: fc.constant([]),
    labels: fc.constant([]),
  }),
  specs: fc.array(
    fc.record({ uuid: fc.constantFrom(...specPool), version: fc.integer({ min: 1, max: 3 }), passed: fc.boolean() }),
    { maxLength: 5 },
  ),
});

test("the generators produce both eligible and ineligible pairs", (t) => {
  const pairs = fc.sample(fc.tuple(arbJob, arbWorker), { numRuns: 2000, seed: 1 });
  const eligible = pairs.filter(([j, w]) => isEligible(j, w)).length;
  t.true(eligible > 20, `${eligible} eligible of ${pairs.length}`);
  t.true(eligible < pairs.length - 20, `${eligible} eligible of ${pairs.length}`);
});

testProp(
  "isEligible agrees with matchJob",
  [arbJob, arbWorker],
  (t, j, w) => {
    t.is(isEligible(j, w), matchJob(j, w).length === 0);
  },
  { numRuns: 2000 },
);

testProp("matchJob names each requirement at most once", [arbJob, arbWorker], (t, j, w) => {
  const names = matchJob(j, w).map((u) => u.requirement);
  t.is(new Set(names).size, names.length);
});

testProp(
  "explainPool counts agree with isEligible and matchJob",
  [arbJob, fc.array(arbWorker, { maxLength: 20 })],
  (t, j, ws) => {
    const pool = explainPool(j, ws);
    t.is(pool.total, ws.length);
    t.is(pool.eligible, ws.filter((w) => isEligible(j, w)).length);
    for (const blocker of pool.byRequirement) {
      const failing = ws.filter((w) => matchJob(j, w).some((u) => u.requirement === blocker.requirement)).length;
      t.is(blocker.workers, failing, blocker.requirement);
      t.is(
        blocker.actuals.reduce((sum, a) => sum + a.workers, 0),
        failing,
      );
    }
    const counts = pool.byRequirement.map((b) => b.workers);
    t.deepEqual(
      counts,
      [...counts].sort((a, b) => b - a),
    );
  },
);

const arbVersionParts = fc.tuple(fc.nat({ max: 30 }), fc.nat({ max: 30 }), fc.nat({ max: 30 }));

/** Versions as tools print them: bare, with a leading "v", or with a distribution revision. */
const arbTool = fc
  .tuple(
    fc.constantFrom("gcc", "node", "cargo", "python3"),
    arbVersionParts,
    fc.constantFrom("", "v"),
    fc.constantFrom("", "-14", "+deb12"),
  )
  .map(([name, [major, minor, patch], prefix, suffix]) => ({
    name,
    version: `${prefix}${major}.${minor}.${patch}${suffix}`,
    own: `${major}.${minor}.${patch}`,
  }));

testProp(
  "a spec drawn from a worker's own dimensions is met",
  [arbWorker, fc.array(arbTool, { maxLength: 6 }), fc.subarray(["gpu", "kvm", "fast-net", "arm:v8"])],
  (t, w, tools, labels) => {
    const d: Dimensions = {
      ...w.dimensions,
      tools: tools.map(({ name, version }) => ({ name, version })),
      labels,
    };
    const own: Requirements = {
      os: [d.os],
      arch: [d.arch, "riscv64"],
      minCores: d.cores,
      minMemoryBytes: d.memoryBytes,
      minDiskBytes: d.diskBytes,
      tools: tools.map((tool) => ({ name: tool.name, range: `>=${tool.own}` })),
      labels,
    };
    t.deepEqual(checkSpec(own, d), []);
  },
);
