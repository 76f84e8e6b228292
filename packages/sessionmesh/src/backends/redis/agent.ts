// A session's User-Agent as the Redis backend stores it: packed with a fixed
// dictionary of the fragments browsers' agents are made of, each replaced by one
// control character (a byte no agent a browser sends contains). A desktop Chrome's
// 111-byte agent packs to 9 bytes, so the session hash stays one listpack under
// Redis's defaults and saves about 100 bytes a session.
//
// The dictionary is part of the stored format: a stored agent is unpacked with the
// table it was packed with, so no entry may ever be changed, removed or reordered
// (test/unit/redis-agent.test.ts holds its digest).

/** The fragments, in the order of their codes (CODES below): the first is written as \x01. */
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

// The codes: 0x01–0x1e but tab, line feed and carriage return (a header may hold
// tab, tools show the others as line breaks) and escape (a terminal reads 0x1b as
// a control sequence, were a packed agent ever printed as it is). 0x1f escapes an
// agent's own character in that range.
const CODES = [
  1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 28, 29, 30,
]
const ESCAPE = String.fromCharCode(0x1f)
const CODE_OF = new Map(FRAGMENTS.map((fragment, i) => [fragment, codeChar(i)]))
const FRAGMENT_OF = new Map(FRAGMENTS.map((fragment, i) => [codeChar(i), fragment]))

// Longest first: an alternation takes the first alternative that matches.
const PACK = new RegExp(
  [
    ...[...FRAGMENTS].sort((a, b) => b.length - a.length).map(escapeForRegExp),
    '[\\x01-\\x08\\x0b\\x0c\\x0e-\\x1a\\x1c-\\x1f]',
  ].join('|'),
  'g',
)
const UNPACK = new RegExp(`${ESCAPE}[\\s\\S]|[\\x01-\\x08\\x0b\\x0c\\x0e-\\x1a\\x1c-\\x1e]`, 'g')

if (FRAGMENTS.length > CODES.length) throw new Error('agent.ts: more fragments than codes')

/** The agent packed; reversible for every string, control characters included. */
export function packAgent(agent: string): string {
  return agent.replace(PACK, (match) => CODE_OF.get(match) ?? ESCAPE + match)
}

/** The agent {@link packAgent} packed. */
export function unpackAgent(packed: string): string {
  return packed.replace(UNPACK, (match) =>
    match.length === 2 ? match.slice(1) : (FRAGMENT_OF.get(match) ?? ''),
  )
}

function codeChar(index: number): string {
  return String.fromCharCode(CODES[index] as number)
}

function escapeForRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}
