#!/usr/bin/env node
/**
 * The `cimesh` command. Today it manages the node's identity; the mesh
 * commands (start, submit, trust, ...) arrive with the mesh node (issue 4).
 */
import { access, mkdir } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { Command } from "commander";
import { CimeshError } from "../crypto/index.ts";
import { generateIdentity, loadIdentity, peerIdOf, saveIdentity } from "./identity.ts";

export const defaultDataDir = process.env.CIMESH_HOME ?? join(homedir(), ".cimesh");
export const keyFileName = "node.key";

const program = new Command("cimesh")
  .description("A peer-to-peer mesh for volunteer continuous integration")
  .version("0.1.0")
  .option("--data-dir <dir>", "the node's data folder (or set CIMESH_HOME)", defaultDataDir);

program
  .command("init")
  .description("create this node's ed25519 key (its libp2p PeerId) in the data folder")
  .action(async () => {
    const dataDir: string = program.opts().dataDir;
    const keyPath = join(dataDir, keyFileName);
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    const identity = generateIdentity();
    if (await exists(keyPath)) {
      throw new CimeshError(
        "ERR_EXISTS",
        `${keyPath} already exists: this node has a key; move it away first to make a new identity`,
      );
    }
    await saveIdentity(keyPath, identity);
    console.log(`created ${keyPath}\npeer id ${peerIdOf(identity.publicKey).toString()}`);
  });

program
  .command("id")
  .description("print this node's PeerId")
  .action(async () => {
    const keyPath = join(program.opts().dataDir, keyFileName);
    if (!(await exists(keyPath)))
      throw new CimeshError("ERR_NO_KEY", `${keyPath} does not exist: run \`cimesh init\` first`);
    console.log(peerIdOf((await loadIdentity(keyPath)).publicKey).toString());
  });

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

try {
  await program.parseAsync(process.argv);
} catch (error) {
  console.error(`cimesh: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
}
