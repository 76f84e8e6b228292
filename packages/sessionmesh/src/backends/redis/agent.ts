// A session's User-Agent as the Redis backend stores it: packed (packing.ts) with
// a fixed dictionary of the fragments browsers' agents are made of. A desktop
// Chrome's 111-byte agent packs to 9 bytes, so the session hash stays one listpack
// under Redis's defaults and saves about 100 bytes a session.
import { Dictionary } from './packing.js'

/** The fragments, in the order of their codes: never edit, remove or reorder one (see packing.ts). */
const FRAGMENTS = [
  'Mozilla/5.0 (',
  ') AppleWebKit/537.36 (KHTML, like Gecko) ',
  ') AppleWebKit/605.1.15 (KHTML, like Gecko) ',
  'Windows NT 10.0; Win64; x64',
  'Macintosh; Intel Mac OS X 10_15_7',
  'Macintosh; Intel Mac OS X 10.15',
  'X11; Linux x86_64',
  'X11; Ubuntu; Linux x86_64',
  'Linux; Android ',
  'iPhone; CPU iPhone OS ',
  'iPad; CPU OS ',
  ' like Mac OS X',
  'Chrome/',
  '.0.0.0',
  ' Safari/537.36',
  ' Mobile Safari/537.36',
  'Version/',
  ' Mobile/15E148 Safari/604.1',
  ' Safari/605.1.15',
  '; rv:',
  ') Gecko/20100101 Firefox/',
  ' Edg/',
  ' OPR/',
  'CriOS/',
  'SamsungBrowser/',
  'Headless',
]

const AGENTS = new Dictionary(FRAGMENTS)

/** The agent packed; reversible for every string, control characters included. */
export function packAgent(agent: string): string {
  return AGENTS.pack(agent)
}

/** The agent {@link packAgent} packed. */
export function unpackAgent(packed: string): string {
  return AGENTS.unpack(packed)
}
