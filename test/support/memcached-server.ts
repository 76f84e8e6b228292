import {
  type RunningMemcached,
  startMemcached,
} from '../../packages/sessionmesh/src/cli/memcached.js'
import { freePort } from '../../packages/sessionmesh/src/cli/system.js'

/** A private memcached on a free loopback port, TCP only; `memory` in MB (default 64). */
export async function memcachedServer(
  options: { memory?: number } = {},
): Promise<RunningMemcached> {
  return startMemcached('memcached', await freePort(), options)
}
