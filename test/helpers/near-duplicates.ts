import { normalizeInto } from '../../src/core/normalize.js';
import type { ServiceContext } from '../../src/service/context.js';
import { getDataset } from '../../src/service/datasets.js';
import { nearestStored, type NearestStored } from '../../src/service/duplicates.js';

/** The nearest stored item of each embedding (normalised here), as the score call looks it up. */
export async function checkNearDuplicates(ctx: ServiceContext, datasetName: string, embeddings: ArrayLike<number>[], epsilon?: number): Promise<NearestStored[]> {
  const dataset = await getDataset(ctx, datasetName);
  const dim = dataset.dimension;
  const vectors = new Float32Array(embeddings.length * dim);
  embeddings.forEach((e, i) => {
    const problem = normalizeInto(e, dim, datasetName, vectors, i * dim);
    if (problem) throw new Error(`embedding ${i}: ${problem.message}`);
  });
  return nearestStored(ctx, dataset, vectors, embeddings.length, epsilon);
}
