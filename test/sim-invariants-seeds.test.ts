/**
 * The invariants hold over many seeds of the example scenarios (at test size): calm and night-exodus here, the
 * others and the checker's own tests in sim-invariants.test.ts (two files, so ava runs them on two cores).
 */
import { exampleScenarioNames } from "../sim/index.ts";
import { seedSweep } from "./sim-seeds.ts";

seedSweep(exampleScenarioNames.slice(0, 2));
