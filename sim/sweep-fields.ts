/**
 * Scenario fields set from the command line by their dotted path
 * (`jobs.replicas=3`, `--sweep network.loss=0,0.01,0.05`): each value is read
 * as YAML reads it (numbers, booleans, durations as text), set in the file's
 * parsed value, and the whole scenario validated again with the file's
 * schema, so a swept value is held to what the file is held to.
 */
import { readFileSync } from "node:fs";
import { FileFieldError, readYaml, validateYaml } from "../node/files/index.ts";
import { maxScenarioFileBytes, type Scenario, ScenarioError, scenarioSchema } from "./scenario.ts";

type YamlFile = ReturnType<typeof readYaml>;

/** Bounds of a sweep: what one command may ask for. */
export const maxSweepValuesCount = 100;
export const maxSweepFieldsCount = 8;
export const maxSweepCombinationsCount = 10_000;

/** A command-line field that cannot be used: names the option, the field and what was expected. */
export class SweepFieldError extends Error {
  readonly code = "ERR_SIM_FIELD";
  constructor(option: string, text: string, expected: string) {
    super(`${option} ${text}: ${expected}`);
  }
}

/** One swept field: its dotted path and the values to try, as YAML read them. */
export interface SweptField {
  readonly field: string;
  readonly values: readonly unknown[];
  /** The values as written on the command line, for labels and commands. */
  readonly texts: readonly string[];
}

const fieldPattern = /^[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)*$/;

function scalar(option: string, text: string, valueText: string): unknown {
  if (valueText === "") throw new SweepFieldError(option, text, "expected a value after each comma, got an empty one");
  const file = readYaml(valueText, option);
  const value = file.value;
  if (value !== null && typeof value === "object")
    throw new SweepFieldError(
      option,
      text,
      `expected a number, a word or a duration, got ${JSON.stringify(valueText)}`,
    );
  return value;
}

/** Reads `dotted.field=v1,v2,...` (one value for `--set`). */
export function parseFieldValues(option: "--sweep" | "--set", text: string): SweptField {
  const equals = text.indexOf("=");
  if (equals <= 0) throw new SweepFieldError(option, text, "expected <dotted.field>=<value>[,<value>...]");
  const field = text.slice(0, equals);
  if (!fieldPattern.test(field))
    throw new SweepFieldError(
      option,
      text,
      `expected a dotted field name such as jobs.replicas, got ${JSON.stringify(field)}`,
    );
  const texts = option === "--set" ? [text.slice(equals + 1)] : text.slice(equals + 1).split(",");
  if (texts.length > maxSweepValuesCount)
    throw new SweepFieldError(option, text, `expected at most ${maxSweepValuesCount} values, got ${texts.length}`);
  if (new Set(texts).size !== texts.length) throw new SweepFieldError(option, text, "expected each value once");
  return { field, texts, values: texts.map((t) => scalar(option, text, t)) };
}

/** A scenario file read once: its YAML, to which fields are set before each validation. */
export interface ScenarioSource {
  readonly path: string;
  readonly file: YamlFile;
}

export function readScenarioSource(path: string): ScenarioSource {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    throw new ScenarioError(path, 1, "(file)", "expected a readable scenario file, found none at this path");
  }
  if (text.length > maxScenarioFileBytes)
    throw new ScenarioError(path, 1, "(file)", `expected at most ${maxScenarioFileBytes} bytes, got ${text.length}`);
  try {
    return { path, file: readYaml(text, path) };
  } catch (error) {
    // The file's own errors read as parseScenario words them.
    throw error instanceof Error ? new ScenarioError(path, 1, "(file)", error.message) : error;
  }
}

function setPath(root: unknown, option: string, field: string, value: unknown): unknown {
  const keys = field.split(".");
  const copy = structuredClone(root) as Record<string, unknown>;
  let node: Record<string, unknown> = copy;
  for (let i = 0; i < keys.length - 1; i++) {
    const key = keys[i] as string;
    const next = node[key];
    if (next === undefined || next === null) node[key] = {};
    else if (typeof next !== "object" || Array.isArray(next))
      throw new SweepFieldError(
        option,
        `${field}=${String(value)}`,
        `${keys.slice(0, i + 1).join(".")} is not a mapping, so it has no field ${keys[i + 1]}`,
      );
    node = node[key] as Record<string, unknown>;
  }
  node[keys[keys.length - 1] as string] = value;
  return copy;
}

/** The scenario of the file with each field set to its value, validated as the file is; errors name the field. */
export function scenarioWith(
  source: ScenarioSource,
  sets: readonly { readonly field: string; readonly value: unknown; readonly text: string }[],
  option = "--sweep",
): Scenario {
  let value: unknown = source.file.value;
  for (const s of sets) value = setPath(value, option, s.field, s.value);
  const file = source.file;
  const patched: YamlFile = {
    fileName: file.fileName,
    value,
    document: file.document,
    lineOf: (path) => file.lineOf(path),
    has: (path) => file.has(path),
  };
  try {
    return validateYaml(patched, scenarioSchema);
  } catch (error) {
    if (!(error instanceof FileFieldError)) throw error;
    const first = error.problems[0];
    const set = sets.find(
      (s) => first !== undefined && (first.field === s.field || first.field.startsWith(`${s.field}.`)),
    );
    if (set !== undefined && first !== undefined)
      throw new SweepFieldError(option, `${set.field}=${set.text}`, `${first.field}: ${first.expected}`);
    const where = first === undefined ? "" : `${source.path}:${first.line}: ${first.field}: ${first.expected}`;
    throw new SweepFieldError(option, sets.map((s) => `${s.field}=${s.text}`).join(" "), where);
  }
}
