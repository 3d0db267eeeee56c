const RADIX_BITS = 11;
const RADIX_SIZE = 1 << RADIX_BITS;
const RADIX_MASK = RADIX_SIZE - 1;

/**
 * Stable ascending sort of `items` by `keys[item]` (uint32), as an LSD radix sort in three 11-bit
 * passes. Stability is what gives every ordering in this package its "ties by index" rule: items
 * passed in ascending index order keep that order among equal keys. Returns a new array.
 */
export function sortByKey(items: Int32Array, keys: Uint32Array): Int32Array {
  const length = items.length;
  let itemsIn = Int32Array.from(items);
  let keysIn = new Uint32Array(length);
  for (let i = 0; i < length; i++) keysIn[i] = keys[items[i]];
  let itemsOut = new Int32Array(length);
  let keysOut = new Uint32Array(length);
  const counts = new Int32Array(RADIX_SIZE);
  for (let shift = 0; shift < 32; shift += RADIX_BITS) {
    counts.fill(0);
    for (let i = 0; i < length; i++) counts[(keysIn[i] >>> shift) & RADIX_MASK]++;
    // A pass where every key falls in one bucket would only copy.
    if (length === 0 || counts[(keysIn[0] >>> shift) & RADIX_MASK] === length) continue;
    let offset = 0;
    for (let b = 0; b < RADIX_SIZE; b++) {
      const c = counts[b];
      counts[b] = offset;
      offset += c;
    }
    for (let i = 0; i < length; i++) {
      const slot = counts[(keysIn[i] >>> shift) & RADIX_MASK]++;
      itemsOut[slot] = itemsIn[i];
      keysOut[slot] = keysIn[i];
    }
    [itemsIn, itemsOut] = [itemsOut, itemsIn];
    [keysIn, keysOut] = [keysOut, keysIn];
  }
  return itemsIn;
}

/**
 * uint32 keys whose unsigned order is the numeric order of `values` (descending if asked).
 * −0 and +0 map to the same key; NaN must be excluded by the caller.
 */
export function floatSortKeys(values: Float32Array, descending: boolean): Uint32Array {
  const keys = new Uint32Array(new Float32Array(values).buffer);
  for (let i = 0; i < keys.length; i++) {
    const bits = keys[i] === 0x80000000 ? 0 : keys[i]; // −0 → +0
    // Negative floats order reversed by their bit pattern; flipping all bits fixes that, and setting
    // the sign bit of positives places them above every negative.
    const ascending = bits & 0x80000000 ? ~bits : bits | 0x80000000;
    keys[i] = descending ? ~ascending : ascending;
  }
  return keys;
}

/** `[0, 1, …, n − 1]`. */
export function identity(n: number): Int32Array {
  const items = new Int32Array(n);
  for (let i = 0; i < n; i++) items[i] = i;
  return items;
}

/** Indices of `values` in ascending (or descending) numeric order, ties by index. */
export function argsort(values: Float32Array, descending = false): Int32Array {
  return sortByKey(identity(values.length), floatSortKeys(values, descending));
}
