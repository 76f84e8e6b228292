// Packing with a fixed dictionary: each of up to 26 fragments is written as one
// control character, and the string's own characters in that range are escaped,
// so every string comes back exactly as it went in. The Redis backend packs the
// values that every session repeats (the User-Agent in agent.ts, the cookie in
// fields.ts), so that a session hash stays one small listpack.
//
// A dictionary is part of the stored format: what was packed with it is unpacked
// with it, so no entry may ever be changed, removed or reordered once released
// (the unit tests hold each table's digest). An entry may be appended: stored
// strings hold an unused code only escaped.

// The codes: 0x01–0x1e but tab, line feed and carriage return (a header may hold
// tab, tools show the others as line breaks) and escape (a terminal reads 0x1b as
// a control sequence, were a packed value ever printed as it is). 0x1f escapes a
// string's own character in that range.
const CODES = [
  1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 28, 29, 30,
]
const ESCAPE = String.fromCharCode(0x1f)
/** How many unpacked strings a dictionary remembers (all are forgotten when full), and how long. */
const REMEMBERED = 256
const REMEMBERED_LENGTH = 256
const UNPACK = new RegExp(`${ESCAPE}[\\s\\S]|[\\x01-\\x08\\x0b\\x0c\\x0e-\\x1a\\x1c-\\x1e]`, 'g')

/** A fixed dictionary of fragments, the first written as \x01: see the top of this file. */
export class Dictionary {
  readonly #pack: RegExp
  readonly #codeOf: Map<string, string>
  readonly #fragmentOf: Map<string, string>
  readonly #unpacked = new Map<string, string>()

  constructor(fragments: readonly string[]) {
    if (fragments.length > CODES.length) throw new Error('packing: more fragments than codes')
    const code = (i: number) => String.fromCharCode(CODES[i] as number)
    this.#codeOf = new Map(fragments.map((fragment, i) => [fragment, code(i)]))
    this.#fragmentOf = new Map(fragments.map((fragment, i) => [code(i), fragment]))
    // Longest first: an alternation takes the first alternative that matches.
    this.#pack = new RegExp(
      [
        ...[...fragments].sort((a, b) => b.length - a.length).map(escapeForRegExp),
        '[\\x01-\\x08\\x0b\\x0c\\x0e-\\x1a\\x1c-\\x1f]',
      ].join('|'),
      'g',
    )
  }

  /** `text` packed; reversible for every string, control characters included. */
  pack(text: string): string {
    return text.replace(this.#pack, (match) => this.#codeOf.get(match) ?? ESCAPE + match)
  }

  /** What {@link pack} packed. A string with no control characters comes back as it is. */
  unpack(packed: string): string {
    // Most sessions share their cookie and a few agents: a read looks them up
    // (about 30 ns) instead of unpacking again (about 450 ns).
    const known = this.#unpacked.get(packed)
    if (known !== undefined) return known
    const text = packed.replace(UNPACK, (match) =>
      match.length === 2 ? match.slice(1) : (this.#fragmentOf.get(match) ?? ''),
    )
    if (packed.length <= REMEMBERED_LENGTH) {
      if (this.#unpacked.size >= REMEMBERED) this.#unpacked.clear()
      this.#unpacked.set(packed, text)
    }
    return text
  }
}

function escapeForRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}
