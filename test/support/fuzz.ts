import type { Parameters } from 'fast-check'

/**
 * Bounds of every property in the fuzz suites: a fixed number of cases, and a
 * time limit after which a property stops (counted as passed) so that `npm test`
 * stays bounded on a slow machine. FUZZ_RUNS and FUZZ_SEED reproduce or widen a run.
 */
export const FUZZ: Parameters<unknown> = {
  numRuns: Number(process.env.FUZZ_RUNS ?? 200),
  interruptAfterTimeLimit: 8_000,
  ...(process.env.FUZZ_SEED ? { seed: Number(process.env.FUZZ_SEED) } : {}),
}
