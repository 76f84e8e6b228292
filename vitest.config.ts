import { defineConfig } from 'vitest/config'

// Three projects: unit (no services), integration (real Redis, PostgreSQL, MariaDB,
// each test file with its own private redis-server or schema), e2e (whole clusters
// behind a real nginx, and Chromium). `npm test` runs all three: unit and integration
// together, then e2e on its own, since its tests measure answers against timeouts
// and would otherwise share two cores with the integration servers.
export default defineConfig({
  test: {
    projects: [
      { test: { name: 'unit', include: ['test/unit/**/*.test.ts'] } },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          testTimeout: 30_000,
          hookTimeout: 30_000,
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts'],
          testTimeout: 180_000,
          hookTimeout: 180_000,
          fileParallelism: false,
        },
      },
    ],
  },
})
