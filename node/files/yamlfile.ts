/**
 * YAML files people write (the job file, the node's config file, a capability
 * spec): parsed with line positions, so every error names the file, the line
 * and the field: `job.yaml:7: steps[1].run: expected text, got nothing`.
 *
 * Shared by jobfile.ts and config.ts, and by sim/'s scenario files. A file is
 * parsed in two passes: the YAML itself (a syntax error names its line), then
 * a zod schema over the plain value (each issue's path is looked up in the
 * YAML document to find its line).
 */
import { type Document, isMap, isPair, isScalar, isSeq, LineCounter, type Node, parseDocument } from "yaml";
import type { ZodError, ZodType } from "zod";
import { CimeshError } from "../../crypto/index.ts";

/** Aliases a document may expand: YAML's "billion laughs" stays small. */
export const maxYamlAliasCount = 64;
/** Problems listed in one error: the first is the one to fix first; the rest say there is more. */
export const maxListedProblems = 5;
/** Characters of a wrong value quoted back in an error. */
export const maxQuotedValueChars = 60;

export type FieldPath = readonly PropertyKey[];

/** One thing wrong with a file: where, which field, what was expected. */
export interface FileProblem {
  readonly line: number;
  readonly field: string;
  readonly expected: string;
}

/** A file that is not well-formed YAML. */
export class YamlSyntaxError extends CimeshError {
  readonly fileName: string;
  readonly line: number;
  /** What the YAML parser found wrong, in its words. */
  readonly detail: string;
  constructor(fileName: string, line: number, detail: string) {
    super(
      "ERR_YAML_SYNTAX",
      `${fileName}:${line}: expected well-formed YAML: ${detail}; fix the file (a YAML checker shows the spot) and try again`,
    );
    this.fileName = fileName;
    this.line = line;
    this.detail = detail;
  }
}

/** A well-formed YAML file with a field that is missing, unknown or wrong. */
export class FileFieldError extends CimeshError {
  readonly fileName: string;
  readonly line: number;
  readonly field: string;
  readonly problems: readonly FileProblem[];
  constructor(fileName: string, problems: readonly FileProblem[]) {
    const listed: readonly FileProblem[] =
      problems.length > 0 ? problems : [{ line: 1, field: "(file)", expected: "expected a value" }];
    const first = listed[0] as FileProblem;
    super("ERR_FILE_FIELD", problemLines(fileName, listed).join("\n"));
    this.fileName = fileName;
    this.line = first.line;
    this.field = first.field;
    this.problems = problems;
  }
}

/**
 * The lines of an error about `problems` (at least one): each as
 * `file:line: field: expected`, at most maxListedProblems of them, then how
 * many more there are.
 */
export function problemLines(fileName: string, problems: readonly FileProblem[]): string[] {
  const format = (problem: FileProblem) => `${fileName}:${problem.line}: ${problem.field}: ${problem.expected}`;
  const [first, ...rest] = problems;
  const shown = rest.slice(0, maxListedProblems - 1).map(format);
  const more = rest.length > shown.length ? [`(${rest.length - shown.length} more)`] : [];
  return [format(first as FileProblem), ...shown, ...more];
}

/** A parsed YAML file: its plain value and a way to find the line of any field. */
export interface YamlFile {
  readonly fileName: string;
  readonly value: unknown;
  readonly document: Document;
  /** Line (1-based) of the field at `path`, or of its nearest ancestor present in the file. */
  lineOf(path: FieldPath): number;
  /** Whether the file spells out the field at `path`. */
  has(path: FieldPath): boolean;
}

function firstLine(message: string): string {
  const line = message.split("\n")[0] ?? message;
  return line.replace(/ at line \d+, column \d+:?$/, "").trim();
}

export function readYaml(text: string, fileName: string): YamlFile {
  const lineCounter = new LineCounter();
  const document = parseDocument(text, { lineCounter, prettyErrors: true, uniqueKeys: true, strict: true });
  const error = document.errors[0];
  if (error !== undefined) {
    const line = error.linePos?.[0]?.line ?? lineCounter.linePos(error.pos[0]).line;
    throw new YamlSyntaxError(fileName, line, firstLine(error.message));
  }
  let value: unknown;
  try {
    value = document.toJS({ maxAliasCount: maxYamlAliasCount });
  } catch (cause) {
    throw new YamlSyntaxError(fileName, 1, firstLine((cause as Error).message));
  }
  const lineAt = (node: { range?: readonly number[] | null } | null | undefined): number | null => {
    const offset = node?.range?.[0];
    return offset === undefined ? null : lineCounter.linePos(offset).line;
  };
  const walk = (path: FieldPath): { line: number; found: boolean } => {
    let node: unknown = document.contents;
    let line = lineAt(document.contents as Node | null) ?? 1;
    for (const segment of path) {
      if (isMap(node)) {
        const pair = node.items.find(
          (item) => isPair(item) && isScalar(item.key) && String(item.key.value) === String(segment),
        );
        if (pair === undefined) return { line, found: false };
        line = lineAt(pair.key as Node) ?? line;
        node = pair.value;
        if (node === null || node === undefined) return { line, found: true };
        line = lineAt(node as Node) ?? line;
      } else if (isSeq(node) && typeof segment === "number") {
        const item = node.items[segment];
        if (item === undefined) return { line, found: false };
        node = item;
        line = lineAt(item as Node) ?? line;
      } else {
        return { line, found: false };
      }
    }
    return { line, found: true };
  };
  return {
    fileName,
    value,
    document,
    lineOf: (path) => walk(path).line,
    has: (path) => walk(path).found,
  };
}

export function formatField(path: FieldPath, root = ""): string {
  let out = root;
  for (const part of path)
    out += typeof part === "number" ? `[${part}]` : out === "" ? String(part) : `.${String(part)}`;
  return out === "" ? "(file)" : out;
}

function valueAt(value: unknown, path: FieldPath): unknown {
  let current = value;
  for (const part of path) {
    if (current === null || typeof current !== "object") return undefined;
    current = (current as Record<PropertyKey, unknown>)[part as string];
  }
  return current;
}

/** A value as an error quotes it back: short, and saying what kind of thing it is. */
export function describeValue(value: unknown): string {
  if (value === undefined) return "nothing (the field is missing)";
  if (value === null) return "an empty value";
  if (typeof value === "string") {
    const quoted = JSON.stringify(
      value.length > maxQuotedValueChars ? `${value.slice(0, maxQuotedValueChars)}…` : value,
    );
    return `the text ${quoted}`;
  }
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  if (Array.isArray(value)) return `a list of ${value.length}`;
  if (value instanceof Date) return `the date ${value.toISOString()}`;
  return "a mapping";
}

const typeNames: Record<string, string> = {
  string: "text",
  number: "a number",
  int: "a whole number",
  boolean: "true or false",
  array: "a list",
  object: "a mapping",
  record: "a mapping",
  nonoptional: "a value",
};

function unitOf(origin: unknown): string {
  if (origin === "string") return " characters";
  if (origin === "array" || origin === "set") return " items";
  if (origin === "object" || origin === "record") return " entries";
  return "";
}

/** What a zod issue expected, in the words of an error message ("expected ..., got ..."). */
function expectedOf(issue: ZodError["issues"][number], got: unknown): string {
  const gotText = `, got ${describeValue(got)}`;
  switch (issue.code) {
    case "invalid_type":
      return `expected ${typeNames[issue.expected] ?? issue.expected}${gotText}`;
    case "too_big":
      return `expected at most ${String(issue.maximum)}${unitOf(issue.origin)}${gotText}`;
    case "too_small":
      return `expected at least ${String(issue.minimum)}${unitOf(issue.origin)}${gotText}`;
    case "invalid_value":
      return `expected one of ${issue.values.map((value) => JSON.stringify(value)).join(", ")}${gotText}`;
    case "unrecognized_keys":
      return "expected no such field: check its spelling and indentation";
    case "invalid_key": {
      const nested = issue.issues[0]?.message ?? "a valid name";
      const key = issue.path[issue.path.length - 1];
      return `${nested.startsWith("expected") ? nested : `expected ${nested}`}, got the name ${JSON.stringify(String(key))}`;
    }
    default: {
      // A refinement's own words; a number or a switch is worth quoting back, a long text or a list is not, nor a
      // value the words quote already.
      const quotable = (typeof got === "number" || typeof got === "boolean") && !issue.message.includes(", got ");
      const tail = quotable ? gotText : "";
      return issue.message.startsWith("expected") ? `${issue.message}${tail}` : `expected ${issue.message}${tail}`;
    }
  }
}

/**
 * The problems of a zod error, each with the line of its field. `mapPath`
 * turns a path of the validated value into the path of the field in the file,
 * where the two differ (a default filled in, a field under another name).
 */
export function problemsOf(
  file: YamlFile,
  error: ZodError,
  value: unknown,
  mapPath: (path: FieldPath) => FieldPath = (path) => path,
): FileProblem[] {
  const problems: FileProblem[] = [];
  for (const issue of error.issues) {
    const paths: FieldPath[] =
      issue.code === "unrecognized_keys" ? issue.keys.map((key) => [...issue.path, key]) : [issue.path];
    for (const path of paths) {
      const filePath = mapPath(path);
      problems.push({
        line: file.lineOf(filePath),
        field: formatField(filePath),
        expected: expectedOf(issue, valueAt(value, path)),
      });
    }
  }
  return problems.sort((a, b) => a.line - b.line);
}

/** Validates the plain value of `file` with `schema`, or throws a FileFieldError naming the line and field of each problem. */
export function validateYaml<T>(file: YamlFile, schema: ZodType<T>): T {
  const result = schema.safeParse(file.value);
  if (result.success) return result.data;
  throw new FileFieldError(file.fileName, problemsOf(file, result.error, file.value));
}

/** One problem at one field of the file, as an error. */
export function fieldProblem(file: YamlFile, path: FieldPath, expected: string): FileFieldError {
  return new FileFieldError(file.fileName, [{ line: file.lineOf(path), field: formatField(path), expected }]);
}

const durationUnitsMs: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const sizeUnitsBytes: Record<string, number> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  tib: 2 ** 40,
};

/** "90s", "30m", "1h30m", "2d", "500ms" in milliseconds; null if the text is not a duration. */
export function parseDurationMs(text: string): number | null {
  const trimmed = text.trim();
  if (!/^(?:\d+(?:ms|s|m|h|d)\s*)+$/.test(trimmed)) return null;
  let total = 0;
  for (const match of trimmed.matchAll(/(\d+)(ms|s|m|h|d)/g)) {
    total += Number(match[1]) * (durationUnitsMs[match[2] as string] as number);
  }
  return Number.isSafeInteger(total) ? total : null;
}

/** "512MiB", "2GiB", "10GB", "1024" in bytes; null if the text is not a size. */
export function parseSizeBytes(text: string): number | null {
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim());
  if (match === null) return null;
  const unit = (match[2] ?? "").toLowerCase() || "b";
  const scale = sizeUnitsBytes[unit];
  if (scale === undefined) return null;
  const bytes = Math.round(Number(match[1]) * scale);
  return Number.isSafeInteger(bytes) ? bytes : null;
}

/** A duration as people write it back: the largest units that divide it. */
export function formatDuration(ms: number): string {
  if (ms === 0) return "0s";
  let rest = ms;
  let out = "";
  for (const [unit, size] of [
    ["d", 86_400_000],
    ["h", 3_600_000],
    ["m", 60_000],
    ["s", 1000],
    ["ms", 1],
  ] as const) {
    if (rest >= size) {
      out += `${Math.floor(rest / size)}${unit}`;
      rest %= size;
    }
  }
  return out;
}
