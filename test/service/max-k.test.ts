import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultK } from '../../src/core/kmeans.js';
import { Rng } from '../../src/core/random.js';
import { createDataset } from '../../src/service/datasets.js';
import { ingestItems } from '../../src/service/ingest.js';
import { prototypeStatus } from '../../src/service/prototypes.js';
import { BACKENDS } from '../helpers/backends.js';
import { startHarness, waitForJob, type Harness } from './harness.js';

describe.each(BACKENDS)('the maxK setting on the $name backend', (backend) => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness(backend);
  });
  afterAll(async () => h?.close());

  const items = (n: number, seed: number) => {
    const rng = new Rng(seed);
    return Array.from({ length: n }, (_, i) => ({ externalId: `item-${i}`, embedding: Array.from({ length: 8 }, () => rng.next() - 0.5) }));
  };

  it('caps the k a full fit chooses by itself; an explicit k is kept', async () => {
    const n = 300;
    expect(defaultK(n)).toBe(12);
    const cases = [
      { name: 'capped', k: undefined, settings: { maxK: 5, minItemsForFit: n }, expected: 5 },
      { name: 'uncapped', k: undefined, settings: { minItemsForFit: n }, expected: 12 },
      { name: 'explicit', k: 20, settings: { maxK: 5, minItemsForFit: n }, expected: 20 },
    ];
    for (const c of cases) {
      const dataset = await createDataset(h.layer.ctx, { name: c.name, dimension: 8, k: c.k, settings: c.settings });
      expect(dataset.settings.maxK).toBe(c.settings.maxK ?? 1000);
      const result = await ingestItems(h.layer.ctx, c.name, items(n, 7));
      expect((await waitForJob(h.db, result.scheduledJobId!)).state).toBe('succeeded');
      expect((await prototypeStatus(h.layer.ctx, c.name)).k, c.name).toBe(c.expected);
    }
  }, 60_000);

  it('is validated like every setting', async () => {
    await expect(createDataset(h.layer.ctx, { name: 'bad', dimension: 8, settings: { maxK: 1 } })).rejects.toMatchObject({ code: 'INVALID_SETTINGS' });
    await expect(createDataset(h.layer.ctx, { name: 'bad', dimension: 8, settings: { maxK: 1001 } })).rejects.toMatchObject({ code: 'INVALID_SETTINGS' });
  });
});
