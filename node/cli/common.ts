/**
 * What every command of `cimesh` shares: the root command and its
 * --data-dir, the node key in the data folder, option parsers, output, and
 * the errors a command reports with what to do.
 */
import { access, readFile, stat } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { Command, InvalidArgumentError } from "commander";
import { CimeshError } from "../../crypto/index.ts";
import { connectControl } from "../control/index.ts";
import { loadIdentity, parseDurationMs } from "../files/index.ts";

export const defaultDataDir = process.env.CIMESH_HOME ?? join(homedir(), ".cimesh");
export const keyFileName = "node.key";

/** A file the user named that cannot be read, or is too large to be what it should be. */
export class InputFileError extends CimeshError {
  constructor(path: string, expected: string) {
    super("ERR_INPUT_FILE", `${path}: expected ${expected}`);
  }
}

/** A command-line value that is out of range. */
export class CliOptionError extends CimeshError {
  constructor(option: string, expected: string, got: unknown) {
    super("ERR_CLI_OPTION", `${option}: expected ${expected}, got ${String(got)}`);
  }
}

/** The node key is missing: the node was never initialised. */
export class NoNodeKeyError extends CimeshError {
  constructor(keyPath: string, dataDir: string) {
    super("ERR_NO_KEY", `${keyPath} does not exist: run \`cimesh init --data-dir ${dataDir}\` first`);
  }
}

/** The `cimesh` command: its own options; index.ts adds the commands. */
export const program = new Command("cimesh")
  .description("A peer-to-peer mesh for volunteer continuous integration")
  .version("0.1.0")
  .option("--data-dir <dir>", "the node's data folder (or set CIMESH_HOME)", defaultDataDir)
  .showHelpAfterError("(run with --help for usage)")
  .addHelpText(
    "after",
    `
Volunteer:  cimesh init; cimesh trust add <project> --roots <hex> ...; cimesh start --worker
Project:    cimesh init; cimesh project init; cimesh start --master; cimesh submit job.yaml --wait
Anyone:     cimesh run job.yaml    (run a job here, in the sandbox a worker uses)`,
  );

/** The data folder the command runs on (--data-dir). */
export function dataDirOf(): string {
  return program.opts<{ dataDir: string }>().dataDir;
}

/** Whether the data folder was named (--data-dir or CIMESH_HOME), not taken by default: where a command may write unasked. */
export function dataDirNamed(): boolean {
  return program.getOptionValueSource("dataDir") === "cli" || process.env.CIMESH_HOME !== undefined;
}

/** Prints one line on stdout. */
export function out(line = ""): void {
  process.stdout.write(`${line}\n`);
}

/** An option parser: a whole number in [min, max]. */
export function integer(name: string, min: number, max: number) {
  return (text: string): number => {
    const value = Number(text);
    if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(value) || value < min || value > max)
      throw new InvalidArgumentError(`expected a whole number from ${min} to ${max} for ${name}, got ${text}`);
    return value;
  };
}

/** An option parser: a number above 0. */
export function positive(name: string) {
  return (text: string): number => {
    const value = Number(text);
    if (!Number.isFinite(value) || value <= 0)
      throw new InvalidArgumentError(`expected a number above 0 for ${name}, got ${text}`);
    return value;
  };
}

/** An option parser: a duration such as 90d or 12h, in milliseconds. */
export function duration(name: string) {
  return (text: string): number => {
    const value = parseDurationMs(text);
    if (value === null)
      throw new InvalidArgumentError(`expected a duration such as 90d or 12h for ${name}, got ${text}`);
    return value;
  };
}

/** An option parser for a repeatable option: every value given, in order. */
export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

export async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/** A file the user named, refused (InputFileError) when unreadable or over limitBytes. */
export async function readInputFile(path: string, limitBytes: number, what: string): Promise<string> {
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch (error) {
    throw new InputFileError(
      path,
      `${what} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}): check the path`,
    );
  }
  if (size > limitBytes) throw new InputFileError(path, `${what} of at most ${limitBytes} bytes, got ${size}`);
  return readFile(path, "utf8");
}

/** The node key in the data folder; NoNodeKeyError when the node was never initialised. */
export async function nodeIdentity(dataDir: string) {
  const keyPath = join(dataDir, keyFileName);
  if (!(await exists(keyPath))) throw new NoNodeKeyError(keyPath, dataDir);
  return loadIdentity(keyPath);
}

/** A time as the CLI prints it (UTC, to the second), or - for none. */
export function time(ms: number | null): string {
  return ms === null
    ? "-"
    : new Date(ms)
        .toISOString()
        .replace("T", " ")
        .replace(/\.\d+Z$/, "Z");
}

/** The control API of the node running in the data folder. */
export function client() {
  return connectControl(dataDirOf());
}
