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
import { join } from "node:path";
import test from "ava";
import { imageTestsOr, makeTestImage } from "./image-fixture.ts";
import { cli, cliOk, Mesh, type NodeEvent, type NodeProcess, until, writeJob } from "./mesh-harness.ts";

/** A cache quota below the test image's blobs (busybox alone is about 2 MB). */
const smallQuotaBytes = 1024 * 1024;

async function ended(master: NodeProcess, jobId: string) {
  return until(`job ${jobId} to end`, async () => {
    const detail = await master.control.job(jobId);
    return detail !== null && detail.status !== "open" ? detail : null;
  });
}

const imageReady = (node: NodeProcess): NodeEvent[] => node.events.filter((event) => event.event === "image-ready");

test.serial(
  "a job in an image passes on two workers, each fetching and unpacking it once; a second job on it moves no image bytes and unpacks nothing; cimesh run gives the same outputs; an image past a worker's quota is refused",
  async (t) => {
    if (!(await imageTestsOr(t))) return;
    const mesh = await Mesh.create();
    try {
      const masterDir = await mesh.initNode("master");
      const { project, trustArgs } = await mesh.initProject(masterDir);
      const layout = await makeTestImage(join(mesh.root, "image"));
      const image = /image: (baf\S+)/.exec(await cliOk(masterDir, ["image", "import", layout]))?.[1] as string;
      t.truthy(image);
      const master = await mesh.start("master", masterDir, ["--master"]);
      const workers: NodeProcess[] = [];
      for (const name of ["w1", "w2"]) {
        const dir = await mesh.initNode(name);
        await cliOk(dir, trustArgs);
        workers.push(await mesh.start(name, dir, ["--worker", "--bootstrap", master.address]));
      }
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
      t.is(one.status, "passed", one.reason);
      await cliOk(masterDir, ["submit", await writeJob(mesh, "image-2", project, fields("image-2"))]);
      const two = await ended(master, "image-2");
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
      }
      const outputs = new Set(
        [...one.attempts, ...two.attempts].map((attempt) => attempt.outputsDigest).filter((cid) => cid !== null),
      );
      t.is(outputs.size, 1, "every run in the image made the same outputs");

      // A developer's `cimesh run` of the job, with the project node's store (which holds the image): the same outputs.
      const local = await cli(masterDir, ["run", first]);
      t.is(local.code, 0, local.stderr);
      t.is(/outputs (baf\S+)/.exec(local.stderr)?.[1], [...outputs][0], "cimesh run: the same outputs CID");
      t.is(/shard 0\s+(\S+)/.exec(local.stderr)?.[1], one.acceptedDigests[0] ?? "", "and the same result digest");

      // A worker whose cache quota is smaller than the image: refused once its manifest is in, nothing unpacked.
      for (const worker of workers) await worker.stop();
      const smallDir = await mesh.initNode("small");
      await cliOk(smallDir, trustArgs);
      await mesh.configure(smallDir, [[["worker", "cacheQuota"], smallQuotaBytes]]);
      const small = await mesh.start("small", smallDir, ["--worker", "--bootstrap", master.address]);
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
    }
  },
);
