import type { Parameters } from 'fast-check'

/**
 * Bounds of every property in the fuzz suites: a fixed number of cases, and a
 * time limit after which a property stops (counted as passed) so that `npm test`
 * stays bounded on a slow machine. The seed is fixed, so that `npm test` (and CI)
 * is the same run each time; FUZZ_SEED=random (or a number) and FUZZ_RUNS explore
 * more, and a failure prints the seed that replays it.
 */
const SEED = process.env.FUZZ_SEED ?? '20261201'

export const FUZZ: Parameters<unknown> = {
  numRuns: Number(process.env.FUZZ_RUNS ?? 200),
  interruptAfterTimeLimit: 8_000,
  ...(SEED === 'random' ? {} : { seed: Number(SEED) }),
}
