import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDataset, createImageDataset } from '../../src/service/datasets.js';
import { vectorFromBase64, vectorFromJson } from '../../src/embedding/vectors.js';
import { BACKENDS } from '../helpers/backends.js';
import { jpeg, sceneRaw } from '../embedding/images.js';
import { startHarness, type Harness } from './harness.js';
import { ingestItems } from '../../src/service/ingest.js';

describe('image ingest through the default encoder', () => {
  let h: Harness;
  let modelsDir: string;

  beforeAll(async () => {
    modelsDir = await mkdtemp(path.join(tmpdir(), 'protoprune-models-'));
    h = await startHarness(BACKENDS[BACKENDS.length - 1], {}, {
      modelsDir,
      custom: null,
      threads: 2,
      maxBatch: 8,
      maxWaitMs: 5,
      queueLimit: 64,
      maxPixels: 4_000_000,
    });
  });
  afterAll(async () => {
    await h?.close();
    await rm(modelsDir, { recursive: true, force: true });
  });

  it('stores exactly the valid images of a mixed batch and reports each bad one with its code', async () => {
    const dataset = await createImageDataset(h.layer.ctx, { name: 'photos' });
    expect(dataset.dimension).toBe(1792);
    expect(dataset.modelSha256).toMatch(/^[0-9a-f]{64}$/);

    const valid = await Promise.all([1, 2, 3].map((seed) => jpeg(96, 80, sceneRaw(96, 80, seed))));
    const truncated = valid[0].subarray(0, Math.floor(valid[0].length / 2));
    const corrupt = Buffer.from('this is not an image at all, just bytes');
    const huge = await jpeg(2400, 2000, sceneRaw(2400, 2000, 9), 30); // 4.8 Mpx > the 4 Mpx limit
    const result = await ingestItems(h.layer.ctx, 'photos', [
      { externalId: 'a', image: valid[0] },
      { externalId: 'truncated', image: truncated },
      { externalId: 'b', image: valid[1] },
      { externalId: 'corrupt', image: corrupt },
      { externalId: 'huge', image: huge },
      { externalId: 'c', image: valid[2], metadata: { source: 'test' } },
    ]);
    expect(result.items.map((r) => (r.status === 'error' ? r.code : r.status))).toEqual([
      'stored',
      'CORRUPT_IMAGE',
      'stored',
      'UNSUPPORTED_FORMAT',
      'IMAGE_TOO_LARGE',
      'stored',
    ]);
    const rows = await h.db.query<{ external_id: string; embedding: number[] }>(
      `SELECT i.external_id, i.embedding FROM items i JOIN datasets d ON d.id = i.dataset_id WHERE d.name = 'photos' ORDER BY 1`,
    );
    expect(rows.map((r) => r.external_id)).toEqual(['a', 'b', 'c']);
    for (const r of rows) {
      expect(r.embedding).toHaveLength(1792);
      expect(Math.hypot(...r.embedding)).toBeCloseTo(1, 5);
    }
  });

  it('refuses images for a dataset created with another model, or with none', async () => {
    await createDataset(h.layer.ctx, { name: 'other-model', dimension: 1792, model: { name: 'resnet50-swav', sha256: 'f'.repeat(64) } });
    await createDataset(h.layer.ctx, { name: 'vectors-only', dimension: 1792 });
    const image = await jpeg(64, 64, sceneRaw(64, 64, 4));
    await expect(ingestItems(h.layer.ctx, 'other-model', [{ externalId: 'x', image }])).rejects.toMatchObject({
      code: 'MODEL_MISMATCH',
      details: { datasetModel: 'resnet50-swav' },
    });
    await expect(ingestItems(h.layer.ctx, 'vectors-only', [{ externalId: 'x', image }])).rejects.toMatchObject({ code: 'MODEL_MISMATCH' });
  });

  it('stores identical vectors for the same embedding sent as JSON and as base64 float32', async () => {
    await createDataset(h.layer.ctx, { name: 'wire', dimension: 4 });
    const values = [0.1, -2.5, 3.25, 1e-3];
    const json = vectorFromJson(values, 4);
    const binary = vectorFromBase64(Buffer.from(Float32Array.from(values).buffer).toString('base64'), 4);
    if (!('vector' in json) || !('vector' in binary)) throw new Error('decoding failed');
    await ingestItems(h.layer.ctx, 'wire', [
      { externalId: 'json', embedding: json.vector },
      { externalId: 'binary', embedding: binary.vector },
    ]);
    const rows = await h.db.query<{ external_id: string; embedding: number[] }>(
      `SELECT i.external_id, i.embedding FROM items i JOIN datasets d ON d.id = i.dataset_id WHERE d.name = 'wire' ORDER BY 1`,
    );
    expect(rows[0].embedding).toEqual(rows[1].embedding);
  });
});
