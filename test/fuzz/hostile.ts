import fc from 'fast-check';

/**
 * Hostile building blocks shared by the REST and gRPC fuzzers: strings that break naive handling
 * (NUL, lone UTF-16 surrogates, emoji and other non-ASCII, control characters, over-long values),
 * bad percent-encodings, and the byte-level encoders that put them on the wire unchanged.
 */

/** A hostile string with the input class it belongs to (used to group findings). */
export interface Hostile {
  value: string;
  cls: string;
}

const lone = fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c));
const nonAsciiChar = fc.oneof(
  fc.constantFrom('💥', 'ñ', 'ü', '数据', 'é', 'e\u0301', '\u202e', '\ufeff', 'ﬀ', 'Ω', '\u00a0', '\u2028', '𝕏', '\uffff'),
  fc.string({ unit: 'binary', minLength: 1, maxLength: 3 }).filter((s) => /[^\x00-\x7f]/.test(s)),
);
const controlChar = fc.constantFrom('\n', '\r\n', '\t', '\u001b[31m', '\u007f', '\u0008', '\r');
const injection = fc.constantFrom('../../etc/passwd', '..', '.', '%', '%00', ' ', '"\'`;--', '<script>', '{}', '\\', '/', '?', '#', '&', '=', '+', '${x}', "'; DROP TABLE items;--");

/** The strings themselves, by class. Each contains at least one character a dataset name cannot hold. */
export const hostileString: fc.Arbitrary<Hostile> = fc.oneof(
  { weight: 3, arbitrary: fc.tuple(fc.string({ maxLength: 4 }), fc.string({ maxLength: 4 })).map(([a, b]) => ({ value: `${a}\u0000${b}`, cls: 'nul' })) },
  { weight: 3, arbitrary: fc.tuple(fc.string({ maxLength: 3 }), lone, fc.string({ maxLength: 3 })).map(([a, s, b]) => ({ value: `${a}${s}${b}`, cls: 'lone-surrogate' })) },
  { weight: 3, arbitrary: fc.tuple(fc.string({ maxLength: 4 }), nonAsciiChar).map(([a, u]) => ({ value: `${a}${u}`, cls: 'non-ascii' })) },
  { weight: 2, arbitrary: fc.tuple(fc.string({ maxLength: 4 }), controlChar).map(([a, c]) => ({ value: `${a}${c}`, cls: 'control-char' })) },
  { weight: 2, arbitrary: injection.map((value) => ({ value, cls: 'injection' })) },
  { weight: 1, arbitrary: fc.constantFrom(600, 5000).map((n) => ({ value: `x${'a'.repeat(n - 2)}!`, cls: `long-${n}` })) },
  { weight: 1, arbitrary: fc.constantFrom(130, 600).map((n) => ({ value: '💥'.repeat(n), cls: `long-emoji-${n}` })) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 12 }).map((s) => ({ value: `${s}\u0000`, cls: 'binary' })) },
);

/** Values that look numeric to a careless parser. */
export const numericLooking = fc.constantFrom('NaN', 'Infinity', '-Infinity', '1e39', '-1e39', '0x10', '1_000', '', ' 1', '1.5', '-0', '1e400', '١٢', '0.5.5');

/** Percent-encodings a strict decoder must refuse: bad hex, truncated, overlong, encoded surrogates. */
export const badPercent = fc.constantFrom('%ZZ', '%E0%A4', '%', '%0', '%C0%80', '%ED%A0%80', '%FF%FE', 'a%2', '%%', '%u0041', '%E2%82');

/**
 * UTF-8 bytes of a JavaScript string, keeping lone surrogates as their 3-byte (WTF-8) form instead
 * of the replacement character, so an invalid sequence reaches the server as sent.
 */
export function wtf8(value: string): Buffer {
  const bytes: number[] = [];
  for (let i = 0; i < value.length; i++) {
    let c = value.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < value.length) {
      const d = value.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      }
    }
    if (c < 0x80) bytes.push(c);
    else if (c < 0x800) bytes.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) bytes.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else bytes.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return Buffer.from(bytes);
}

/** Percent-encodes every byte outside RFC 3986's unreserved set. */
export function pctEncode(bytes: Buffer): string {
  let out = '';
  for (const b of bytes) {
    const ch = String.fromCharCode(b);
    out += /[A-Za-z0-9\-._~]/.test(ch) ? ch : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** True when a string, once written as JSON, still holds non-ASCII characters (JSON.stringify escapes control characters and lone surrogates only). */
export function jsonHasNonAscii(value: unknown): boolean {
  return /[^\x20-\x7e]/.test(JSON.stringify(value) ?? '');
}

/** Shortens a value for a report line. */
export function clip(text: string, max = 140): string {
  const flat = JSON.stringify(text).slice(1, -1);
  return flat.length <= max ? flat : `${flat.slice(0, max - 12)}…(${text.length} chars)`;
}
