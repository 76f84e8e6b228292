import { createHash, randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { packAgent, unpackAgent } from '../../packages/sessionmesh/src/backends/redis/agent.js'

// Agents as current browsers send them (desktop, mobile, in-app, headless).
const BROWSERS = [
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36',
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36',
  'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36',
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0',
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 OPR/115.0.0.0',
  'Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36',
  'Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36',
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0',
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:133.0) Gecko/20100101 Firefox/133.0',
  'Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0',
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15',
  'Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1',
  'Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1',
  'Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1',
  'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36',
]

describe('the Redis backend’s packed User-Agent', () => {
  it('packs every current browser’s agent under 64 bytes (one listpack value), and back', () => {
    for (const agent of BROWSERS) {
      const packed = packAgent(agent)
      expect(unpackAgent(packed)).toBe(agent)
      expect(Buffer.byteLength(packed)).toBeLessThan(64)
    }
    // A desktop Chrome's 111 bytes, as the benchmarks send it.
    expect(packAgent(BROWSERS[0] as string)).toHaveLength(9)
  })

  it('gives back exactly any string: control characters, the escape itself, 4-byte characters', () => {
    const samples = [
      '',
      'curl/8.5.0',
      '\x01\x02\x1b\x1f\x1e\x00\t\r\n',
      `${'\x1f'.repeat(3)}Chrome/\x1f\x01`,
      'Mozilla/5.0 (été; 日本語; 𝄞 emoji 🙂) Chrome/1.0.0.0',
    ]
    for (let i = 0; i < 200; i++) {
      // Random code units from the low range, where the codes live, mixed with fragments.
      const bytes = randomBytes(40)
      let text = ''
      for (const byte of bytes) text += byte % 3 === 0 ? 'Chrome/' : String.fromCharCode(byte % 40)
      samples.push(text)
    }
    for (const sample of samples) expect(unpackAgent(packAgent(sample))).toBe(sample)
  })

  it('leaves an agent the previous release stored (no control characters) as it is', () => {
    // A session written before packing has its agent in 'a', read without unpacking;
    // unpacking it anyway would change nothing either.
    for (const agent of BROWSERS) expect(unpackAgent(agent)).toBe(agent)
  })

  it('keeps the dictionary it has stored agents with: no code may change meaning', () => {
    // Each code unpacked on its own gives its fragment. Sessions already stored
    // depend on this table; the digest changes if any entry is edited or moved.
    const codes = Array.from({ length: 30 }, (_, i) => i + 1).filter(
      (code) => ![9, 10, 13, 27].includes(code),
    )
    const table = codes.map((code) => unpackAgent(String.fromCharCode(code)))
    expect(table.every((fragment) => fragment.length > 0)).toBe(true)
    const digest = createHash('sha256').update(table.join('\n')).digest('hex')
    expect(digest).toBe('4f2dc574fb3de544f032e68f782eea538eeb178c2ff4fbf2ca84c904b47b3a2a')
    // As this release stores a desktop Chrome's agent.
    expect(unpackAgent('\x01\x04\x02\x10131\x11\x12')).toBe(BROWSERS[0])
  })
})
