import { describe, expect, it } from 'vitest'
import { memoryBackend } from '../../packages/sessionmesh/src/backends/memory.js'
import type { Snapshot } from '../../packages/sessionmesh/src/core/engine/snapshot.js'
import { CHANGE_LOG_LIMIT, NearCache } from '../../packages/sessionmesh/src/core/near-cache.js'

const snap = (version: string, value = 'x', seq = 0): Snapshot => ({
  fields: { a: JSON.stringify(value) },
  meta: { createdAt: 0, lastSeenAt: 0, expiresAt: Date.now() + 60_000 },
  version,
  versions: [version],
  loadSeq: seq,
})

async function started(options = {}) {
  const cache = new NearCache(options)
  await cache.start(memoryBackend())
  return cache
}

describe('NearCache', () => {
  it('serves only a client presenting a version the entry contains', async () => {
    const cache = await started()
    cache.fill('s', snap('v1'), Date.now())
    expect(cache.lookup('s', 'v1', Date.now())?.version).toBe('v1')
    expect(cache.lookup('s', 'v0', Date.now())).toBeUndefined()
  })

  it('serves nothing before its bus subscription holds', () => {
    const cache = new NearCache()
    cache.fill('s', snap('v1'), Date.now())
    expect(cache.lookup('s', 'v1', Date.now())).toBeUndefined()
  })

  it('is bounded by entries and by bytes, dropping the least recently used', async () => {
    const byEntries = await started({ maxEntries: 2 })
    const now = Date.now()
    for (const sid of ['a', 'b']) byEntries.fill(sid, snap('v'), now)
    byEntries.lookup('a', 'v', now) // a is now the most recent
    byEntries.fill('c', snap('v'), now)
    expect(byEntries.lookup('b', 'v', now)).toBeUndefined()
    expect(byEntries.lookup('a', 'v', now)).toBeDefined()
    const byBytes = await started({ maxBytes: 1_000 })
    for (const sid of ['a', 'b', 'c']) byBytes.fill(sid, snap('v', 'y'.repeat(300)), now)
    expect(byBytes.stats().bytes).toBeLessThanOrEqual(1_000)
    expect(byBytes.stats().entries).toBe(1)
  })

  it('serves nothing while its bus is down, and starts empty when it is back', async () => {
    const cache = await started()
    const now = Date.now()
    cache.fill('s', snap('v1'), now)
    cache.onGap('lost')
    cache.fill('t', snap('v1'), now) // a read during the gap must not be cached either
    expect(cache.lookup('s', 'v1', now)).toBeUndefined()
    expect(cache.lookup('t', 'v1', now)).toBeUndefined()
    cache.onGap('restored')
    expect(cache.lookup('s', 'v1', now)).toBeUndefined() // what was cached before may be stale
    cache.fill('s', snap('v2', 'x', 0), now) // a read that began before the gap ended
    expect(cache.lookup('s', 'v2', now)).toBeUndefined()
    cache.fill('s', snap('v2', 'x', cache.seq), now) // a read that began after
    expect(cache.lookup('s', 'v2', now)?.version).toBe('v2')
  })

  it('replaces an entry in place, keeping its byte count exact', async () => {
    const cache = await started({ maxEntries: 10 })
    const now = Date.now()
    cache.fill('s', snap('v1', 'y'.repeat(500)), now)
    const large = cache.stats().bytes
    cache.fill('s', snap('v2', 'y'), now)
    expect(cache.stats().entries).toBe(1)
    expect(cache.stats().bytes).toBe(large - 499)
    expect(cache.lookup('s', 'v2', now)?.version).toBe('v2')
  })

  it('regression: an overflowing change log does not refuse fills for reads that began before unrelated changes', async () => {
    const cache = await started()
    for (let i = 0; i < CHANGE_LOG_LIMIT; i++) cache.forget(`other-${i}`)
    const loadBegan = cache.seq
    cache.forget('other-0') // the first session changed again, after the load began
    cache.forget('one-more') // the log overflows and drops its oldest change
    cache.fill('s', snap('v1', 'x', loadBegan), Date.now())
    expect(cache.lookup('s', 'v1', Date.now())?.version).toBe('v1')
  })

  it('stops serving an entry the backend has not confirmed within maxAge', async () => {
    const cache = await started({ maxAge: 100 })
    const now = Date.now()
    cache.fill('s', snap('v'), now)
    expect(cache.lookup('s', 'v', now + 99)).toBeDefined()
    expect(cache.lookup('s', 'v', now + 100)).toBeUndefined()
  })

  it('refuses to fill with a read that began before a change it has seen (a late read must not undo an eviction)', async () => {
    const cache = await started()
    const seqAtRead = cache.seq
    cache.onEvent({ v: 1, type: 'changed', sid: 's' })
    cache.fill('s', snap('old', 'x', seqAtRead), Date.now())
    expect(cache.lookup('s', 'old', Date.now())).toBeUndefined()
  })

  it("keeps its own write's result when the write's echo comes back, but evicts on another node's change", async () => {
    const cache = await started()
    const now = Date.now()
    cache.expectOwnWrite('s', now)
    cache.wrote('s', snap('v2'), undefined, now)
    cache.onEvent({ v: 1, type: 'changed', sid: 's' }) // the echo
    expect(cache.lookup('s', 'v2', now)).toBeDefined()
    cache.onEvent({ v: 1, type: 'changed', sid: 's' }) // someone else
    expect(cache.lookup('s', 'v2', now)).toBeUndefined()
  })

  it('drops the result of a write whose base changed meanwhile (a concurrent request here)', async () => {
    const cache = await started()
    const now = Date.now()
    cache.fill('s', snap('v1'), now)
    const base = cache.lookup('s', 'v1', now) as Snapshot
    const other = cache.lookup('s', 'v1', now) as Snapshot
    cache.wrote('s', snap('v2'), base, now)
    cache.wrote('s', snap('v3'), other, now)
    expect(cache.lookup('s', 'v2', now)).toBeUndefined()
    expect(cache.lookup('s', 'v3', now)).toBeUndefined()
  })

  it('keeps the results of concurrent own writes whose replies say what the session became (writeAndRead)', async () => {
    const cache = await started()
    const now = Date.now()
    cache.fill('s', snap('v1'), now)
    // Two requests based on v1, both sent before either reply came back.
    const sent = cache.seq
    cache.wroteFresh('s', { ...snap('v2'), versions: ['v1', 'v2'] }, sent, now)
    cache.wroteFresh('s', { ...snap('v3'), versions: ['v1', 'v2', 'v3'] }, sent, now)
    expect(cache.lookup('s', 'v3', now)?.version).toBe('v3')
    expect(cache.versionsOf('s', 'v3')).toEqual(['v1', 'v2', 'v3'])
    expect(cache.versionsOf('s', 'v2')).toEqual([])
  })

  it('drops the result of an own write when another node changed the session after it was sent, or it was destroyed here', async () => {
    const cache = await started()
    const now = Date.now()
    cache.fill('s', snap('v1'), now)
    const sent = cache.seq
    cache.onEvent({ v: 1, type: 'changed', sid: 's' }) // another node, after the send
    cache.wroteFresh('s', snap('v2'), sent, now)
    expect(cache.lookup('s', 'v2', now)).toBeUndefined()
    const again = cache.seq
    cache.forget('s') // a destroy here, before the write's reply
    cache.wroteFresh('s', snap('v3'), again, now)
    expect(cache.lookup('s', 'v3', now)).toBeUndefined()
    // A read that began before an own write does not fill over it.
    const readSeq = cache.seq
    cache.wroteFresh('s', snap('v4'), cache.seq, now)
    cache.fill('s', snap('v1', 'x', readSeq), now)
    expect(cache.lookup('s', 'v4', now)?.version).toBe('v4')
  })
})
