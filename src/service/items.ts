import { lockDataset } from '../store/datasets.js';
import { deleteItem as deleteItemRow, findItem, findThumbnail, type ItemRow } from '../store/items.js';
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
