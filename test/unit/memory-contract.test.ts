import { memoryBackend } from 'sessionmesh/memory'
import { backendContract } from '../support/contract.js'

backendContract('memory', async () => {
  const backend = memoryBackend()
  return { backend, cleanup: () => backend.close() }
})
