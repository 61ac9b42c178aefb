/**
 * jobs/: message bodies, the master and worker state machines, policies.
 * House rules (DESIGN.md, Rule 1): no I/O, no clock, no randomness of its own.
 */
export * from "./messages.ts";
