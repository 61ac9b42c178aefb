/**
 * The invariants hold over many seeds of the example scenarios (at test size): calm, night-exodus and mixed-400
 * here, the others and the checker's own tests in sim-invariants.test.ts (two files of about the same length).
 */
import { firstSweepNames, seedSweep } from "./sim-seeds.ts";

seedSweep(firstSweepNames);
