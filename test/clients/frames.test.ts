import { describe, expect, it } from 'vitest';
import { encodeEmbeddingFrames } from '../../clients/typescript/src/frames.js';
import { readEmbeddingFrames } from '../../src/service/embedding-frames.js';

async function* inPieces(bytes: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let at = 0; at < bytes.length; at += size) yield bytes.subarray(at, at + size);
}

describe('the TypeScript client’s embedding frames', () => {
  it('decode with the server’s reader to the same ids, vectors and metadata (a vector view at an offset too)', async () => {
    const dimension = 5;
    const backing = new Float32Array(3 + 4 * dimension).map((_, i) => Math.sin(i) * 10);
    const vectors = backing.subarray(3);
    const externalIds = ['a', 'ünï-😀', 'line\nbreak', 'x'.repeat(300)];
    const metadata = [{ split: 'train' }, undefined, { nested: { n: 1 } }, undefined];
    const body = encodeEmbeddingFrames({ externalIds, vectors, dimension, metadata });
    const batches = [];
    for await (const batch of readEmbeddingFrames(inPieces(body, 7), dimension, 3, body.length)) batches.push(batch);
    expect(batches.flatMap((b) => b.items.map((item) => item.externalId))).toEqual(externalIds);
    expect(batches.flatMap((b) => b.items.map((item) => item.metadata))).toEqual(metadata);
    expect(batches.flatMap((b) => b.items.map((item) => item.error))).toEqual([undefined, undefined, undefined, undefined]);
    const decoded = new Float32Array(batches.flatMap((b) => Array.from(b.vectors)));
    expect(decoded).toEqual(vectors);
  });

  it('refuses an id longer than the server reads (2048 UTF-8 bytes), and ids that do not match the vectors', () => {
    expect(() => encodeEmbeddingFrames({ externalIds: ['é'.repeat(1100)], vectors: new Float32Array(2), dimension: 2 })).toThrow(/2200 UTF-8 bytes; the server refuses a body holding an id over 2048/);
    expect(encodeEmbeddingFrames({ externalIds: ['é'.repeat(1024)], vectors: new Float32Array(2), dimension: 2 }).length).toBe(16 + 2 + 2048 + 8 + 4);
    expect(() => encodeEmbeddingFrames({ externalIds: ['a', 'b'], vectors: new Float32Array(3), dimension: 2 })).toThrow(RangeError);
  });
});
