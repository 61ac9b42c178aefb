/**
 * Images across real processes over TCP on 127.0.0.1: a project node imports
 * the test image (busybox laid out by umoci), a job naming it passes on two
 * workers, each fetching the image once and unpacking it once; a second job on
 * the same image moves no image bytes and unpacks nothing (the workers' own
 * image-ready lines say so); `cimesh run` of the job gives the same outputs
 * and result digest; a worker whose cache quota is smaller than the image
 * refuses it before fetching its chunks. Needs umoci, busybox-static, python3
 * and bubblewrap: says so in one line where they are missing.
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import test from "ava";
import { parseExposition, sampleValue } from "./exposition.ts";
import { imageTestsOr, makeTestImage, removeWorkRoots } from "./image-fixture.ts";
import { cli, cliOk, Mesh, type NodeEvent, type NodeProcess, until, writeJob } from "./mesh-harness.ts";

const specUuid = "7d3f1a2b-6c4e-4b8a-9e21-0a1b2c3d4e5f";
/** A cache quota below the test image's blobs (busybox alone is about 2 MB). */
const smallQuotaBytes = 1024 * 1024;

/** Bound on the wait for the job that needs the spec: two DHT lookups a spec miss apart, and the job itself. */
const specJobWaitMs = 150_000;

async function ended(master: NodeProcess, jobId: string, limitMs?: number) {
  return until(
    `job ${jobId} to end`,
    async () => {
      const detail = await master.control.job(jobId);
      return detail !== null && detail.status !== "open" ? detail : null;
    },
    limitMs,
  );
}

const imageReady = (node: NodeProcess): NodeEvent[] => node.events.filter((event) => event.event === "image-ready");

test.serial(
  "a job in an image passes on two workers, each fetching and unpacking it once; a second job on it moves no image bytes and unpacks nothing; cimesh run gives the same outputs; an image past a worker's quota is refused",
  async (t) => {
    if (!(await imageTestsOr(t))) return;
    const mesh = await Mesh.create();
    const began = Date.now();
    // Logged, never asserted: where the time of this long test goes on the machine that runs it.
    const phase = (name: string) => t.log(`${name} at ${Date.now() - began} ms`);
    try {
      // Data folders made side by side: each CLI process costs seconds on a loaded machine.
      const [masterDir, layout, w1Dir, w2Dir, smallDir] = await Promise.all([
        mesh.initNode("master"),
        makeTestImage(join(mesh.root, "image")),
        mesh.initNode("w1"),
        mesh.initNode("w2"),
        mesh.initNode("small"),
      ]);
      const { project, trustArgs } = await mesh.initProject(masterDir);
      await Promise.all([w1Dir, w2Dir, smallDir].map((dir) => cliOk(dir, trustArgs)));
      await mesh.configure(smallDir, [[["worker", "cacheQuota"], smallQuotaBytes]]);
      const image = /image: (baf\S+)/.exec(await cliOk(masterDir, ["image", "import", layout]))?.[1] as string;
      t.truthy(image);
      // The image's signed name and version: a capability spec naming it, whose self-check runs in it.
      const specFile = join(mesh.root, "spec.yaml");
      await writeFile(
        specFile,
        `uuid: ${specUuid}\nname: busybox test image\nversion: 1\nimage: ${image}\nselfCheck:\n  steps: [image-tool]\n  timeout: 1m\n`,
      );
      await cliOk(masterDir, ["spec", "publish", specFile]);
      const master = await mesh.start("master", masterDir, ["--master"]);
      phase("the master started");
      const workers = await Promise.all(
        [
          ["w1", w1Dir],
          ["w2", w2Dir],
        ].map(([name, dir]) => mesh.start(name as string, dir as string, ["--worker", "--bootstrap", master.address])),
      );
      await until(
        "both workers' offers held by the master",
        async () => ((await master.control.status()).offersHeld[project]?.workers ?? 0) >= 2,
      );
      // An image the project node does not hold: refused at submit, before any worker is asked to fetch it.
      const unknown = "bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
      const lacking = await cli(masterDir, [
        "submit",
        await writeJob(mesh, "no-image", project, { image: unknown, steps: ["true"] }),
      ]);
      t.is(lacking.code, 1);
      t.regex(lacking.stderr, /image: expected an image this node's blob store holds/);
      const fields = (id: string) => ({
        id,
        image,
        steps: [
          "mkdir -p out && image-tool > out/tool.txt && cat /etc/os-release >> out/tool.txt && id -u >> out/tool.txt",
        ],
        outputs: ["out"],
        replicas: 2,
        quorum: 2,
        timeout: "1m",
      });
      const first = await writeJob(mesh, "image-1", project, fields("image-1"));
      await cliOk(masterDir, ["submit", first]);
      const one = await ended(master, "image-1");
      phase("image-1 ended");
      t.is(one.status, "passed", one.reason);
      await cliOk(masterDir, ["submit", await writeJob(mesh, "image-2", project, fields("image-2"))]);
      const two = await ended(master, "image-2");
      phase("image-2 ended");
      t.is(two.status, "passed", two.reason);

      const ran = new Set([...one.attempts, ...two.attempts].map((attempt) => attempt.worker));
      t.is(ran.size, 2, "both workers ran both jobs");
      for (const worker of workers) {
        const ready = await until(`${worker.name}'s two image-ready lines`, () => {
          const lines = imageReady(worker);
          return lines.length >= 2 ? lines : null;
        });
        t.is(ready.length, 2, worker.name);
        const [fetched, reused] = ready as [NodeEvent, NodeEvent];
        t.true(Number(fetched.fetchedBytes) > 1_000_000, `${worker.name} fetched the image for its first run`);
        t.is(fetched.unpacked, true, `${worker.name} unpacked it for its first run`);
        t.is(reused.fetchedBytes, 0, `${worker.name}: the second job moved no image bytes`);
        t.is(reused.unpacked, false, `${worker.name}: the second job found the image unpacked`);
        t.is(reused.imageUnpacks, 1, `${worker.name} unpacked the image once in all`);
        t.is(reused.imageReuses, 1);
        // The worker's own counters say the same (GET /metrics).
        const samples = parseExposition(await worker.control.metrics());
        t.is(sampleValue(samples, "cimesh_image_unpacks_total"), 1, `${worker.name}'s metrics: one unpack`);
        t.is(sampleValue(samples, "cimesh_image_reuses_total"), 1, `${worker.name}'s metrics: one reuse`);
      }
      const outputs = new Set(
        [...one.attempts, ...two.attempts].map((attempt) => attempt.outputsDigest).filter((cid) => cid !== null),
      );
      t.is(outputs.size, 1, "every run in the image made the same outputs");

      // A job that requires the spec and names no image runs in the spec's image; each worker checks the spec in it.
      const bySpec = await cliOk(masterDir, [
        "submit",
        await writeJob(mesh, "image-spec", project, {
          ...fields("image-spec"),
          image: undefined,
          requiredSpecs: [specUuid],
        }),
      ]);
      t.regex(bySpec, new RegExp(`image ${image}: from capability spec ${specUuid}`));
      // Longer than other waits: a worker that misses the spec in the DHT looks again only specMissRetryMs later.
      const three = await ended(master, "image-spec", specJobWaitMs).catch(async (error) => {
        t.log(await master.control.explain("image-spec"));
        for (const node of workers) t.log(node.name, JSON.stringify(node.events.filter((e) => /^spec/.test(e.event))));
        throw error;
      });
      phase("image-spec ended");
      t.is(three.status, "passed", three.reason);
      t.deepEqual(
        new Set(three.attempts.map((attempt) => attempt.outputsDigest)),
        outputs,
        "in the spec's image: the same outputs",
      );
      for (const worker of workers) {
        const checked = worker.events.find((event) => event.event === "spec-checked");
        t.is(checked?.passed, true, `${worker.name} ran the spec's self-check (image-tool) in the image`);
      }

      // A developer's `cimesh run` of the job, with the project node's store (which holds the image): the same outputs.
      const local = await cli(masterDir, ["run", first]);
      phase("cimesh run ended");
      t.is(local.code, 0, local.stderr);
      t.is(/outputs (baf\S+)/.exec(local.stderr)?.[1], [...outputs][0], "cimesh run: the same outputs CID");
      t.is(/shard 0\s+(\S+)/.exec(local.stderr)?.[1], one.acceptedDigests[0] ?? "", "and the same result digest");

      // A worker whose cache quota is smaller than the image: refused once its manifest is in, nothing unpacked.
      for (const worker of workers) await worker.stop();
      const small = await mesh.start("small", smallDir, ["--worker", "--bootstrap", master.address]);
      phase("the small worker started");
      await until(
        "the small worker's offer",
        async () => ((await master.control.status()).offersHeld[project]?.workers ?? 0) >= 1,
      );
      await cliOk(masterDir, [
        "submit",
        await writeJob(mesh, "image-3", project, { ...fields("image-3"), replicas: 1, quorum: 1, maxAttempts: 1 }),
      ]);
      const refused = await until("the small worker's image-refused line", () =>
        small.events.find((event) => event.event === "image-refused"),
      );
      t.regex(String(refused.error), /cache quota/);
      t.regex(String(refused.error), /nothing was written/);
      t.is(imageReady(small).length, 0);
      t.not((await ended(master, "image-3")).status, "passed");
    } finally {
      await mesh.stopAll();
      await removeWorkRoots([...mesh.peerIds.keys()]);
    }
  },
);
