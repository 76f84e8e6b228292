import { memoryBackend } from 'sessionmesh/memory'
import { describe, it } from 'vitest'
import { modelFuzz } from '../support/model-fuzz.js'

describe('fuzz: the backend contract against a model, memory backend', () => {
  it('random set/unset/touch/destroy/revoke through two stores agree with the model after every step', async () => {
    const shared = memoryBackend()
    await modelFuzz(() => [shared, shared], 150)
    await shared.close()
  }, 30_000)
})
