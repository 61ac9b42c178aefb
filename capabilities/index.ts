/**
 * capabilities/: capability specs (tagged by UUID), worker dimensions, matching.
 * House rules (DESIGN.md, Rule 1): no I/O, no clock, no randomness of its own.
 */

export * from "./match.ts";
export * from "./messages.ts";
