import { lockDataset } from '../store/datasets.js';
import { deleteItem as deleteItemRow, existingExternalIds, findItem, findThumbnail, type ItemRow } from '../store/items.js';
import type { ServiceContext } from './context.js';
import { getDataset } from './datasets.js';
import { ServiceError } from './errors.js';

/** A stored item as the API shows it: its row, and the prototype version its score is from. */
export type ItemView = ItemRow & { prototypeVersion: number | null };

function notFound(dataset: string, externalId: string): never {
  throw new ServiceError('not_found', 'ITEM_NOT_FOUND', `dataset ${dataset} has no item ${externalId}`, { dataset, externalId });
}

export async function getItem(ctx: ServiceContext, datasetName: string, externalId: string): Promise<ItemView> {
  const dataset = await getDataset(ctx, datasetName);
  const row = await findItem(ctx.db, dataset.id, externalId, dataset.activeVersion);
  if (!row) notFound(datasetName, externalId);
  return { ...row, prototypeVersion: row.score === null ? null : dataset.activeVersion };
}

/** Most external ids one existence lookup may name. */
export const MAX_EXISTENCE_LOOKUP_IDS = 10_000;

/**
 * Which of `externalIds` the dataset holds, in request order and without repeats: what a client
 * resuming an upload can skip, in one set-based lookup instead of one GET per id.
 */
export async function findExistingItems(ctx: ServiceContext, datasetName: string, externalIds: readonly string[]): Promise<string[]> {
  const dataset = await getDataset(ctx, datasetName);
  const unique = [...new Set(externalIds)];
  const stored = new Set(await existingExternalIds(ctx.db, dataset.id, unique));
  return unique.filter((id) => stored.has(id));
}

/**
 * Deletes one item, its scores and its nearest-neighbour entries under the dataset lock. The
 * prototypes keep the item's past contribution until the next full fit.
 */
export async function deleteItem(ctx: ServiceContext, datasetName: string, externalId: string): Promise<void> {
  const dataset = await getDataset(ctx, datasetName);
  const deleted = await ctx.db.transaction(async (tx) => {
    if (!(await lockDataset(tx, dataset.id))) return false;
    return deleteItemRow(tx, dataset.id, externalId);
  });
  if (!deleted) notFound(datasetName, externalId);
}

/** The item's small JPEG, stored when it was ingested as an image. */
export async function getThumbnail(ctx: ServiceContext, datasetName: string, externalId: string): Promise<Uint8Array> {
  const dataset = await getDataset(ctx, datasetName);
  const data = await findThumbnail(ctx.db, dataset.id, externalId);
  if (!data) {
    throw new ServiceError('not_found', 'THUMBNAIL_NOT_FOUND', `dataset ${datasetName} has no thumbnail for ${externalId} (it was not ingested as an image, or does not exist)`, {
      dataset: datasetName,
      externalId,
    });
  }
  return data;
}
