import { describe, expect, it } from 'vitest';
import { binaryCopy, CopyBinaryParser, decodeVectorInto, type BinaryField } from '../../src/store/pgcopy.js';

/** Parses a binary COPY stream back into its rows' raw fields (copied out of the parser's buffer). */
function parse(chunks: Iterable<Buffer>): (Buffer | null)[][] {
  const rows: (Buffer | null)[][] = [];
  const parser = new CopyBinaryParser((fields) => rows.push(fields.map((f) => (f ? Buffer.from(f) : null))));
  for (const chunk of chunks) parser.push(chunk);
  parser.end();
  return rows;
}

describe('binaryCopy', () => {
  const uuid = '0f8fad5b-d9cb-469f-a165-70867728950e';

  it('encodes every field type so that the stream parses back to the same values, across many chunks', () => {
    const dim = 384;
    const n = 3_000; // ~4.7 MB of vectors: many 256 KiB chunks, rows cut at no particular place
    const vectors = Float32Array.from({ length: n * dim }, (_, i) => Math.sin(i) * 1e3);
    const text = (i: number) => `item-${i}-ü-😀`.repeat(1 + (i % 7));
    function* rows(): Generator<BinaryField[]> {
      for (let i = 0; i < n; i++) {
        yield [
          { type: 'int8', value: BigInt(i) * 1_000_000_007n },
          { type: 'uuid', value: i % 2 === 0 ? uuid : `00000000-0000-0000-0000-${String(i).padStart(12, '0')}` },
          { type: 'text', value: text(i) },
          { type: 'vector', value: vectors, offset: i * dim, dim },
          { type: 'jsonb', value: JSON.stringify({ i, name: 'naïve' }) },
          i % 3 === 0 ? null : { type: 'int4', value: -i },
          { type: 'float4', value: i / 3 },
        ];
      }
    }
    const chunks = [...binaryCopy(rows())];
    expect(chunks.length).toBeGreaterThan(15);
    for (const chunk of chunks.slice(0, -1)) expect(chunk.length).toBeLessThan(256 * 1024 + 64 * 1024);
    const parsed = parse(chunks);
    expect(parsed).toHaveLength(n);
    const got = new Float32Array(dim);
    parsed.forEach((f, i) => {
      expect(f[0]!.readBigInt64BE(0)).toBe(BigInt(i) * 1_000_000_007n);
      const expectedUuid = i % 2 === 0 ? uuid : `00000000-0000-0000-0000-${String(i).padStart(12, '0')}`;
      expect(f[1]!.toString('hex')).toBe(expectedUuid.replace(/-/g, ''));
      expect(f[2]!.toString('utf8')).toBe(text(i));
      expect(decodeVectorInto(f[3]!, got, 0)).toBe(dim);
      expect(Array.from(got)).toEqual(Array.from(vectors.subarray(i * dim, (i + 1) * dim)));
      expect(f[4]![0]).toBe(1); // jsonb format version
      expect(JSON.parse(f[4]!.subarray(1).toString('utf8'))).toEqual({ i, name: 'naïve' });
      if (i % 3 === 0) expect(f[5]).toBeNull();
      else expect(f[5]!.readInt32BE(0)).toBe(-i);
      expect(f[6]!.readFloatBE(0)).toBe(Math.fround(i / 3));
    });
  });

  it('grows its chunk for a row larger than a chunk, and an empty stream is header and trailer', () => {
    const big = 'x'.repeat(700 * 1024);
    const parsed = parse(binaryCopy([[{ type: 'text', value: big }], [{ type: 'text', value: '' }]]));
    expect(parsed.map((f) => f[0]!.toString('utf8'))).toEqual([big, '']);
    const empty = [...binaryCopy([])];
    expect(parse(empty)).toEqual([]);
    expect(Buffer.concat(empty).length).toBe(11 + 8 + 2);
  });

  it('refuses a uuid it cannot encode instead of writing a short field', () => {
    expect(() => [...binaryCopy([[{ type: 'uuid', value: 'not-a-uuid' }]])]).toThrow(/not a uuid/);
  });
});
