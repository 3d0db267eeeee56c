import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeEmbeddingFrames } from '../../clients/typescript/src/frames.js';
import { EMBEDDING_FRAME_MEDIA_TYPE } from '../../src/service/embedding-frames.js';
import { readDatasetEmbeddings } from '../../src/store/items.js';
import { ApiClient } from '../grpc/client.js';
import { BACKENDS } from '../helpers/backends.js';
import { bearer, startApi, type ApiHarness } from './api-harness.js';

/** A frame body of the client's encoder; `metadata` as JSON text per row. */
const encodeEmbeddingFrame = (externalIds: string[], vectors: Float32Array, dimension: number, metadata?: (string | undefined)[]) =>
  Buffer.from(encodeEmbeddingFrames({ externalIds, vectors, dimension, metadata: metadata?.map((m) => (m === undefined ? undefined : JSON.parse(m))) }));

const DIM = 8;

function randomVectors(n: number, seed: number): Float32Array {
  let state = seed;
  const next = () => ((state = (state * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) - 0.5;
  return Float32Array.from({ length: n * DIM }, next);
}

describe.each(BACKENDS)('binary embedding ingest on the $name backend', (backend) => {
  let h: ApiHarness;
  let http: ReturnType<typeof request>;
  const post = (dataset: string, body: Buffer, query = '') =>
    http.post(`/v1/datasets/${dataset}/items${query}`).set('authorization', bearer(h.keys.writer)).set('content-type', EMBEDDING_FRAME_MEDIA_TYPE).send(body);

  async function stored(dataset: string) {
    const [{ id }] = await h.service.db.query<{ id: string }>('SELECT id::text AS id FROM datasets WHERE name = $1', [dataset]);
    const rows = await h.service.db.query<{ id: string; external_id: string }>('SELECT id::text AS id, external_id FROM items WHERE dataset_id = $1', [id]);
    const byId = new Map(rows.map((r) => [r.id, r.external_id]));
    const matrix = await readDatasetEmbeddings(h.service.db, id, DIM);
    const out = new Map<string, Float32Array>();
    for (let i = 0; i < matrix.n; i++) out.set(byId.get(String(matrix.ids[i]))!, matrix.vectors.slice(i * DIM, (i + 1) * DIM));
    return out;
  }

  beforeAll(async () => {
    h = await startApi(backend, { MAX_ITEMS_PER_REQUEST: '50' });
    http = request(h.service.http.server);
    for (const name of ['bin', 'json', 'grpc', 'bad']) {
      await http.post('/v1/datasets').set('authorization', bearer(h.keys.admin)).send({ name, dimension: DIM, settings: { minItemsForFit: 100000 } }).expect(201);
    }
  });
  afterAll(async () => {
    await h?.close();
  });

  it('stores vectors bit-identical to the JSON path, more than MAX_ITEMS_PER_REQUEST in one body, with metadata', async () => {
    const n = 120;
    const vectors = randomVectors(n, 7);
    const ids = Array.from({ length: n }, (_, i) => `item-${i}`);
    const meta = ids.map((_, i) => (i % 3 === 0 ? JSON.stringify({ i }) : undefined));
    const res = await post('bin', encodeEmbeddingFrame(ids, vectors, DIM, meta)).expect(200);
    expect(res.body.counts).toEqual({ stored: n, updated: 0, failed: 0 });
    expect(res.body.items).toHaveLength(n);
    expect(res.body.items[5]).toMatchObject({ externalId: 'item-5', status: 'stored' });
    for (let at = 0; at < n; at += 50) {
      const items = ids.slice(at, at + 50).map((externalId, j) => ({ externalId, embedding: Array.from(vectors.subarray((at + j) * DIM, (at + j + 1) * DIM)) }));
      await http.post('/v1/datasets/json/items').set('authorization', bearer(h.keys.writer)).send({ items }).expect(200);
    }
    const [binary, json] = [await stored('bin'), await stored('json')];
    expect(binary.size).toBe(n);
    for (const id of ids) expect(Buffer.from(binary.get(id)!.buffer).equals(Buffer.from(json.get(id)!.buffer))).toBe(true);
    const item = await http.get('/v1/datasets/bin/items/item-3').set('authorization', bearer(h.keys.reader)).expect(200);
    expect(item.body.metadata).toEqual({ i: 3 });
    // Re-sending replaces; `results=errors` lists only failures.
    const again = await post('bin', encodeEmbeddingFrame(ids.slice(0, 10), vectors.subarray(0, 10 * DIM), DIM), '?results=errors').expect(200);
    expect(again.body.counts).toEqual({ stored: 0, updated: 10, failed: 0 });
    expect(again.body.items).toEqual([]);
  });

  it('writes a body in batches two at a time, and an id repeated in a later batch keeps its later vector', async () => {
    // 1,024-d: 512 items per batch, so 1,100 items are three batches, the first two written at once.
    const dim = 1024;
    await http.post('/v1/datasets').set('authorization', bearer(h.keys.admin)).send({ name: 'wide', dimension: dim, settings: { minItemsForFit: 100000 } }).expect(201);
    const n = 1100;
    let state = 3;
    const vectors = Float32Array.from({ length: n * dim }, () => ((state = (state * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) - 0.5);
    const ids = Array.from({ length: n }, (_, i) => `w-${i}`);
    ids[10] = 'repeated'; // batch 1
    ids[600] = 'repeated'; // batch 2, in flight beside batch 1
    ids[1050] = 'again'; // batch 3
    ids[20] = 'again'; // batch 1
    const res = await post('wide', encodeEmbeddingFrame(ids, vectors, dim)).expect(200);
    expect(res.body.counts).toEqual({ stored: n - 2, updated: 2, failed: 0 });
    const [{ id }] = await h.service.db.query<{ id: string }>("SELECT id::text AS id FROM datasets WHERE name = 'wide'");
    const rows = await h.service.db.query<{ id: string; external_id: string }>('SELECT id::text AS id, external_id FROM items WHERE dataset_id = $1', [id]);
    const matrix = await readDatasetEmbeddings(h.service.db, id, dim);
    expect(matrix.n).toBe(n - 2);
    const idOf = new Map(rows.map((r) => [r.id, r.external_id]));
    const unit = (i: number) => {
      const v = vectors.subarray(i * dim, (i + 1) * dim);
      const norm = Math.hypot(...v);
      return Array.from(v, (x) => x / norm);
    };
    for (let r = 0; r < matrix.n; r++) {
      const name = idOf.get(String(matrix.ids[r]))!;
      if (name !== 'repeated' && name !== 'again') continue;
      const stored = Array.from(matrix.vectors.subarray(r * dim, (r + 1) * dim));
      const later = unit(name === 'repeated' ? 600 : 1050);
      stored.forEach((x, j) => expect(x).toBeCloseTo(later[j], 5));
    }
  });

  it('reports per-item problems item by item', async () => {
    const vectors = randomVectors(4, 9);
    vectors[DIM + 2] = NaN;
    const res = await post('bin', encodeEmbeddingFrame(['ok-1', 'nan', '', 'bad-meta'], vectors, DIM, [undefined, undefined, undefined, '[1]'])).expect(200);
    expect(res.body.counts).toEqual({ stored: 1, updated: 0, failed: 3 });
    expect(res.body.items.map((o: { code?: string }) => o.code ?? 'ok')).toEqual(['ok', 'NON_FINITE_VALUE', 'INVALID_EXTERNAL_ID', 'INVALID_METADATA']);
  });

  it('refuses malformed bodies with 400 in the one error shape', async () => {
    const good = encodeEmbeddingFrame(['a', 'b'], randomVectors(2, 3), DIM);
    const wrongDim = encodeEmbeddingFrame(['a'], randomVectors(1, 3).subarray(0, 4), 4);
    const badUtf8 = Buffer.from(good);
    badUtf8[16 + 2] = 0xff;
    const trailing = Buffer.concat([good, Buffer.from([0])]);
    const countMismatch = Buffer.from(good);
    countMismatch.writeUInt32LE(3, 8);
    const hugeId = Buffer.from(good);
    hugeId.writeUInt16LE(0xffff, 16);
    const hugeMeta = Buffer.from(good);
    hugeMeta.writeUInt32LE(0xffffffff, 16 + 3 + 4 * DIM);
    const cases: [string, Buffer, string][] = [
      ['truncated', good.subarray(0, good.length - 3), 'MALFORMED_FRAME'],
      ['header only in part', good.subarray(0, 10), 'MALFORMED_FRAME'],
      ['bad magic', Buffer.concat([Buffer.from('XXXX'), good.subarray(4)]), 'MALFORMED_FRAME'],
      ['wrong dim', wrongDim, 'DIMENSION_MISMATCH'],
      ['bad UTF-8 id', badUtf8, 'MALFORMED_FRAME'],
      ['trailing bytes', trailing, 'MALFORMED_FRAME'],
      ['count mismatch', countMismatch, 'MALFORMED_FRAME'],
      ['huge id length', hugeId, 'MALFORMED_FRAME'],
      ['huge metadata length', hugeMeta, 'MALFORMED_FRAME'],
      ['empty body', Buffer.alloc(0), 'MALFORMED_FRAME'],
    ];
    for (const [name, body, code] of cases) {
      const res = await post('bad', body);
      expect(res.status, name).toBe(400);
      expect(res.body.error.code, name).toBe(code);
      expect(typeof res.body.error.message, name).toBe('string');
    }
    const allBad = randomVectors(1, 4).fill(NaN);
    const refused = await post('bad', encodeEmbeddingFrame(['x'], allBad, DIM)).expect(400);
    expect(refused.body.error.code).toBe('NON_FINITE_VALUE');
    const huge = Buffer.from(good);
    huge.writeUInt32LE(0xffffffff, 8);
    expect((await post('bad', huge)).status).toBe(413);
    expect((await stored('bad')).size).toBe(0);
  });

  it('needs the write scope', async () => {
    const res = await http
      .post('/v1/datasets/bin/items')
      .set('authorization', bearer(h.keys.reader))
      .set('content-type', EMBEDDING_FRAME_MEDIA_TYPE)
      .send(encodeEmbeddingFrame(['a'], randomVectors(1, 1), DIM))
      .expect(403);
    expect(res.body.error.code).toBe('INSUFFICIENT_SCOPE');
  });

  it('gRPC packed embeddings store the same vectors and report per item', async () => {
    const client = new ApiClient(h.service.grpc.port, h.keys.writer);
    const n = 40;
    const vectors = randomVectors(n, 7);
    const ids = Array.from({ length: n }, (_, i) => `item-${i}`);
    const answer = await client.ingest([
      { dataset: 'grpc', packed: { externalIds: ids.slice(0, 30), vectorsF32le: Buffer.from(vectors.buffer, 0, 30 * DIM * 4) } },
      { dataset: 'grpc', items: [{ externalId: 'single', embedding: [1, 0, 0, 0, 0, 0, 0, 0] }], packed: { externalIds: ids.slice(30), vectorsF32le: Buffer.from(vectors.buffer, 30 * DIM * 4), metadataJson: ids.slice(30).map((_, j) => (j === 0 ? '{"a":1}' : j === 1 ? 'nope' : '')) } },
    ]);
    expect(answer.stored).toBe(n);
    expect(answer.failed).toBe(1);
    expect(answer.items[30].externalId).toBe('single');
    expect(answer.items[32].errorCode).toBe('INVALID_METADATA');
    const [grpcStored, json] = [await stored('grpc'), await stored('json')];
    for (const id of ids.filter((id) => id !== 'item-31')) expect(Buffer.from(grpcStored.get(id)!.buffer).equals(Buffer.from(json.get(id)!.buffer))).toBe(true);
    const bad = await client.ingestFails([{ dataset: 'grpc', packed: { externalIds: ['a', 'b'], vectorsF32le: Buffer.alloc(6) } }]);
    expect(bad.errorCode).toBe('INVALID_PACKED');
    client.raw.close();
  });
});
