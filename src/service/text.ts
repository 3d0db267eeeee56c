import { ServiceError } from './errors.js';
import { MAX_NESTING_DEPTH } from './limits.js';

/** NUL, or a UTF-16 surrogate without its partner: text PostgreSQL cannot store and UTF-8 cannot carry. */
// No `u` flag: the pattern must see UTF-16 code units to find unpaired surrogates.
const INVALID_TEXT = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const LONE_SURROGATES = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/** The first invalid character's position in `text`, or -1. */
function invalidAt(text: string): number {
  return text.search(INVALID_TEXT);
}

function describe(text: string, at: number): string {
  const unit = text.charCodeAt(at);
  return unit === 0 ? 'a NUL character' : `a lone UTF-16 surrogate (U+${unit.toString(16).toUpperCase()})`;
}

/**
 * Every string in a request — values and object keys, however deep — must be storable text: no
 * NUL and no lone surrogates (`INVALID_CHARACTERS`, naming the field). Requests may nest at most
 * MAX_NESTING_DEPTH levels (`NESTING_TOO_DEEP`), so no later recursion over them can overflow the
 * stack. Binary values (Buffers, typed arrays) are not text and are skipped.
 */
export function assertValidText(value: unknown, field: string): void {
  const problem = textProblem(value, field);
  if (problem) throw problem;
}

/** What `assertValidText` would throw, or null. */
export function textProblem(value: unknown, field: string): ServiceError | null {
  // An explicit stack: the depth check must not itself recurse without bound.
  const stack: Array<{ value: unknown; field: string; depth: number }> = [{ value, field, depth: 0 }];
  while (stack.length > 0) {
    const next = stack.pop()!;
    const current = next.value;
    if (typeof current === 'string') {
      const at = invalidAt(current);
      if (at >= 0) {
        return new ServiceError('invalid', 'INVALID_CHARACTERS', `${next.field} contains ${describe(current, at)} at position ${at}`, {
          field: next.field,
          position: at,
        });
      }
      continue;
    }
    if (typeof current !== 'object' || current === null || ArrayBuffer.isView(current) || current instanceof ArrayBuffer) continue;
    if (next.depth >= MAX_NESTING_DEPTH) {
      return new ServiceError('invalid', 'NESTING_TOO_DEEP', `${next.field} nests deeper than ${MAX_NESTING_DEPTH} levels`, {
        field: next.field,
        maxDepth: MAX_NESTING_DEPTH,
      });
    }
    if (Array.isArray(current)) {
      for (let i = current.length - 1; i >= 0; i--) {
        const element = current[i];
        if (typeof element === 'number' || typeof element === 'boolean') continue;
        stack.push({ value: element, field: `${next.field}/${i}`, depth: next.depth + 1 });
      }
      continue;
    }
    for (const [key, child] of Object.entries(current)) {
      const at = invalidAt(key);
      if (at >= 0) {
        return new ServiceError('invalid', 'INVALID_CHARACTERS', `a key in ${next.field} contains ${describe(key, at)}`, { field: next.field, position: at });
      }
      stack.push({ value: child, field: `${next.field}/${key}`, depth: next.depth + 1 });
    }
  }
  return null;
}

/** `text` made safe to put in an error message or a header: lone surrogates replaced, at most `max` code units. */
export function printable(text: string, max = 1000): string {
  const clipped = text.length > max ? `${text.slice(0, max)}…` : text;
  return clipped.replace(LONE_SURROGATES, '\ufffd');
}
