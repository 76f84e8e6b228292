import { formatEvent, parseEvent } from 'sessionmesh'
import { describe, expect, it } from 'vitest'

// The bus message every backend publishes and every process reads back, across
// releases: an older process ignores fields it does not know, a newer one reads
// an older message without a reason.
describe('bus events', () => {
  it('carries a destroy reason and its caller there and back', () => {
    expect(parseEvent(formatEvent('destroyed', 'abc', { reason: 'limit', by: 'node-a' }))).toEqual({
      v: 1,
      type: 'destroyed',
      sid: 'abc',
      reason: 'limit',
      by: 'node-a',
    })
    expect(parseEvent(formatEvent('changed', 'abc', { reason: 'logout' }))).toEqual({
      v: 1,
      type: 'changed',
      sid: 'abc',
    })
  })

  it('reads a message of a release without reasons, and drops a reason it does not know', () => {
    expect(parseEvent('{"v":1,"type":"destroyed","sid":"abc"}')).toEqual({
      v: 1,
      type: 'destroyed',
      sid: 'abc',
    })
    expect(parseEvent('{"v":1,"type":"destroyed","sid":"abc","reason":"__proto__"}')).toEqual({
      v: 1,
      type: 'destroyed',
      sid: 'abc',
    })
    expect(parseEvent('{"v":2,"type":"destroyed","sid":"abc"}')).toBeUndefined()
    expect(parseEvent('not json')).toBeUndefined()
  })
})
