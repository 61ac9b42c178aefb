/**
 * `GET /metrics` on the control API of a real `cimesh start` process: Prometheus's text format with libp2p's series
 * and cimesh's, behind the control API's token like every route.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import test from "ava";
import { getRaw, parseExposition, sampleValue } from "./exposition.ts";
import { cliOk, Mesh, writeJob } from "./mesh-harness.ts";

test.serial(
  "a running node serves /metrics in Prometheus's text format: libp2p's series and cimesh's, with the token only",
  async (t) => {
    const mesh = await Mesh.create();
    try {
      const dataDir = await mesh.initNode("master");
      const { project } = await mesh.initProject(dataDir);
      const node = await mesh.start("master", dataDir, ["--master"]);
      // A job no worker takes: it stays open, which the jobs series must say.
      const jobFile = await writeJob(mesh, "waits", project, { id: "waits-1", steps: ["true"] });
      await cliOk(dataDir, ["submit", jobFile]);

      const port = node.control.port;
      const token = (await readFile(join(dataDir, "api.token"), "utf8")).trim();
      const refused = await getRaw(port, "/metrics", null);
      t.is(refused.status, 401, "the metrics need the token, as every route of the control API");
      t.false(refused.body.includes("cimesh_"), "nothing of the metrics without the token");

      const scraped = await getRaw(port, "/metrics", token);
      t.is(scraped.status, 200);
      t.regex(scraped.contentType, /^text\/plain; version=0\.0\.4/);
      const samples = parseExposition(scraped.body);
      const libp2p = samples.filter((sample) => sample.name.startsWith("libp2p_"));
      t.true(libp2p.length > 0, `libp2p's own series: ${[...new Set(libp2p.map((s) => s.name))].join(", ")}`);
      t.log(`${libp2p.length} libp2p samples, e.g. ${[...new Set(libp2p.map((s) => s.name))].slice(0, 6).join(", ")}`);
      t.true(
        samples.some((sample) => sample.name.startsWith("process_") || sample.name.startsWith("nodejs_")),
        "the process's own series",
      );
      t.is(sampleValue(samples, "cimesh_jobs", { project, state: "open" }), 1);
      t.is(sampleValue(samples, "cimesh_jobs", { project, state: "passed" }), 0);
      t.is(sampleValue(samples, "cimesh_peers"), 0, "a lone node has no peer");
      t.true((sampleValue(samples, "cimesh_store_bytes") ?? 0) > 0, "the level store holds the job");
      t.is(sampleValue(samples, "cimesh_blob_cache_bytes"), 0);
      t.is(sampleValue(samples, "cimesh_runs_total", { outcome: "succeeded" }), 0);
      t.is(sampleValue(samples, "cimesh_messages_sent_total", { type: "bid" }), 0);
      t.is(sampleValue(samples, "cimesh_worker_slots"), 0, "no worker, no slots");
      t.is(sampleValue(samples, "cimesh_run_history_entries"), 0);
      // The client the CLI uses reads the same text.
      t.is(parseExposition(await node.control.metrics()).filter((s) => s.name === "cimesh_jobs").length, 4);
    } finally {
      await mesh.stopAll();
    }
  },
);
