import { createHash, randomUUID } from 'node:crypto';
import { DEFAULT_SELECTION_ORDER, type RequestedOrder } from '../core/selection.js';
import type { Sql } from '../store/database.js';
import { isUuid } from '../store/datasets.js';
import {
  deleteManifest as deleteManifestRow,
  findManifest,
  insertManifest,
  insertManifestChunk,
  listManifests as listManifestRows,
  readManifestChunk,
  type ManifestKeyset,
  type ManifestRow,
  type NewManifestRow,
} from '../store/manifests.js';
import { findPrototypeSetRow } from '../store/prototypes.js';
import { mayAccessDataset, type Principal } from './auth.js';
import type { ServiceContext } from './context.js';
import { getDataset } from './datasets.js';
import { ServiceError } from './errors.js';
import { codePointLength, MANIFEST_DESCRIPTION_MAX_LENGTH, MANIFEST_NAME_MAX_LENGTH, MAX_MANIFEST_PAGE_LIMIT } from './limits.js';
import type { MetadataFilter } from './metadata-filter.js';
import { exportScores, type ScoreExportRequest } from './score-export.js';
import { ID_CHUNK, inChunksOf, streamSelection, type SelectionRequest } from './selection.js';
import { printable } from './text.js';

/** A selection's parameters, as GET …/selection takes them (as JSON values); order defaults to auto. */
export type ManifestSelection = Omit<SelectionRequest, 'order'> & { order?: RequestedOrder };

/** A score export's parameters, as GET …/scores takes them (as JSON values). */
export interface ManifestExport extends Omit<ScoreExportRequest, 'jobId' | 'filter'> {
  filter?: MetadataFilter;
  /** A dedup job id: its run fills the export's duplicate columns (REST's `job`). */
  job?: string;
}

/** What to save: exactly one of a selection and a score export (its ids in its order). */
export interface NewManifest {
  selection?: ManifestSelection;
  export?: ManifestExport;
  name?: string;
  description?: string;
}

export type ManifestKind = 'selection' | 'export';

export interface ManifestView {
  id: string;
  dataset: string;
  datasetId: string;
  name: string | null;
  description: string | null;
  kind: ManifestKind;
  /** The dataset's image encoder; null for an embedding-only dataset. */
  encoder: { name: string; sha256: string } | null;
  prototypeVersion: number;
  /** Prototypes of that version. */
  k: number | null;
  /** The dataset's k-means seed. */
  seed: number;
  /** The request's parameters as given. */
  parameters: Record<string, unknown>;
  /** What the answer reported besides its ids (version, total, matched, size, …). */
  summary: Record<string, unknown>;
  count: number;
  /** See `idListSha256`. */
  sha256: string;
  /** The API key that created it; null without one (auth disabled). */
  createdByKeyId: string | null;
  createdAt: Date;
}

/** Ids per stored chunk row. */
export const MANIFEST_CHUNK = ID_CHUNK;

/**
 * The digest of an ordered id list, which a client can recompute from the ids it fetched: SHA-256
 * (hex) of each id's UTF-8 bytes followed by one NUL byte (0x00), in list order; the empty list
 * hashes no bytes. NUL is the one character no external id may hold (ids may hold line breaks),
 * so two different lists never hash the same bytes.
 */
export class IdListSha256 {
  private readonly hash = createHash('sha256');

  update(ids: readonly string[]): void {
    if (ids.length > 0) this.hash.update(`${ids.join('\0')}\0`, 'utf8');
  }

  digest(): string {
    return this.hash.digest('hex');
  }
}

function invalid(field: string, message: string): never {
  throw new ServiceError('invalid', 'INVALID_MANIFEST', message, { field });
}

function manifestNotFound(id: string): never {
  throw new ServiceError('not_found', 'MANIFEST_NOT_FOUND', `manifest ${printable(id, 64)} does not exist`, { id: printable(id, 64) });
}

function checkNewManifest(input: NewManifest): void {
  if ((input.selection === undefined) === (input.export === undefined)) invalid('selection', 'give exactly one of selection and export');
  if (input.name !== undefined && !(input.name.length > 0 && codePointLength(input.name) <= MANIFEST_NAME_MAX_LENGTH)) {
    invalid('name', `name must be 1-${MANIFEST_NAME_MAX_LENGTH} characters`);
  }
  if (input.description !== undefined && codePointLength(input.description) > MANIFEST_DESCRIPTION_MAX_LENGTH) {
    invalid('description', `description must be at most ${MANIFEST_DESCRIPTION_MAX_LENGTH} characters`);
  }
}

/**
 * Every field of an answer but its ids and functions (version, total, matched, size, a dedup
 * step's outcome, …): what a later field of a selection or export reports is recorded too.
 */
function summaryOf(answer: object): Record<string, unknown> {
  const iterable = (value: object) => Symbol.iterator in value || Symbol.asyncIterator in value;
  return Object.fromEntries(
    Object.entries(answer).filter(([, value]) => value !== undefined && typeof value !== 'function' && !(typeof value === 'object' && value !== null && iterable(value))),
  );
}

/** An opened selection or export: its version, its summary, the ids in order, and how to let go of its snapshot. */
interface Source {
  kind: ManifestKind;
  version: number;
  summary: Record<string, unknown>;
  ids: AsyncIterable<string[]>;
  cancel: () => void;
}

async function* externalIdsOfRows(rows: AsyncIterable<{ externalId: string }[]>): AsyncGenerator<string[]> {
  for await (const batch of rows) yield batch.map((r) => r.externalId);
}

async function openSource(ctx: ServiceContext, datasetName: string, input: NewManifest): Promise<Source> {
  if (input.selection) {
    const stream = await streamSelection(ctx, datasetName, { ...input.selection, order: input.selection.order ?? DEFAULT_SELECTION_ORDER });
    return { kind: 'selection', version: stream.version, summary: summaryOf(stream), ids: stream.externalIds, cancel: stream.cancel };
  }
  const { job, ...rest } = input.export!;
  const exported = await exportScores(ctx, datasetName, { ...rest, jobId: job });
  return { kind: 'export', version: exported.version, summary: summaryOf(exported), ids: externalIdsOfRows(exported.rows), cancel: exported.cancel };
}

type ManifestRecord = Omit<NewManifestRow, 'k' | 'count' | 'sha256'>;

/** Writes the ids chunk by chunk as they come, then the manifest row with their count and digest. */
async function writeManifest(tx: Sql, record: ManifestRecord, ids: AsyncIterable<string[]> | Iterable<string[]>): Promise<ManifestRow> {
  // Read first: a long stream could outlast the version's prototype set (two refits drop it).
  const k = (await findPrototypeSetRow(tx, record.datasetId, record.prototypeVersion))?.k ?? null;
  const digest = new IdListSha256();
  let count = 0;
  let chunk = 0;
  for await (const part of inChunksOf(MANIFEST_CHUNK, ids)) {
    digest.update(part);
    await insertManifestChunk(tx, record.id, chunk++, part);
    count += part.length;
  }
  return insertManifest(tx, { ...record, k, count, sha256: digest.digest() });
}

/**
 * Stores the manifest in one transaction. Native: the chunks go to the database as the source
 * streams them (memory holds one chunk). Embedded: PGlite is one connection, and a streamed
 * selection's snapshot holds it until its last id is read, so no write can interleave: the ids are
 * gathered first (PGlite reads a COPY whole anyway), then written.
 */
async function storeManifest(ctx: ServiceContext, record: ManifestRecord, ids: AsyncIterable<string[]>): Promise<ManifestRow> {
  if (ctx.db.backend === 'embedded') {
    const gathered: string[][] = [];
    for await (const chunk of ids) gathered.push(chunk);
    return ctx.db.transaction((tx) => writeManifest(tx, record, gathered));
  }
  return ctx.db.transaction((tx) => writeManifest(tx, record, ids));
}

function view(row: ManifestRow): ManifestView {
  const { datasetName, encoderName, encoderSha256, ...rest } = row;
  return { ...rest, dataset: datasetName, encoder: encoderName !== null && encoderSha256 !== null ? { name: encoderName, sha256: encoderSha256 } : null };
}

const isForeignKeyViolation = (error: unknown) => (error as { code?: unknown } | null)?.code === '23503';

/**
 * Runs a selection (`streamSelection`) or score export (`exportScores`) from its one snapshot and
 * saves its ordered external ids with what made them: dataset, encoder, prototype version, k, the
 * dataset's seed, the parameters as given, the answer's summary, count and digest.
 */
export async function createManifest(ctx: ServiceContext, datasetName: string, input: NewManifest, principal: Principal): Promise<ManifestView> {
  checkNewManifest(input);
  const dataset = await getDataset(ctx, datasetName);
  const source = await openSource(ctx, datasetName, input);
  try {
    const row = await storeManifest(
      ctx,
      {
        id: randomUUID(),
        datasetId: dataset.id,
        datasetName: dataset.name,
        name: input.name ?? null,
        description: input.description ?? null,
        kind: source.kind,
        encoderName: dataset.modelName,
        encoderSha256: dataset.modelSha256,
        prototypeVersion: source.version,
        seed: dataset.settings.seed,
        parameters: (input.selection ?? input.export) as Record<string, unknown>,
        summary: source.summary,
        createdByKeyId: principal.keyId,
      },
      source.ids,
    );
    return view(row);
  } catch (error) {
    if (isForeignKeyViolation(error)) throw new ServiceError('not_found', 'DATASET_NOT_FOUND', `dataset ${datasetName} was deleted while the manifest was written`, { name: datasetName });
    throw error;
  } finally {
    source.cancel();
  }
}

/**
 * A manifest by id. One of a dataset the key may not read answers as if it did not exist (its id
 * reveals nothing), like a malformed id.
 */
export async function getManifest(ctx: ServiceContext, id: string, principal: Principal): Promise<ManifestView> {
  const row = isUuid(id) ? await findManifest(ctx.db, id) : undefined;
  if (!row || !mayAccessDataset(principal, row.datasetName)) manifestNotFound(id);
  return view(row);
}

/**
 * A manifest's ids in their stored order, a chunk at a time (memory holds one chunk). A manifest
 * deleted while its ids are read fails the stream rather than ending it short.
 */
export async function* manifestIds(ctx: ServiceContext, manifest: ManifestView): AsyncGenerator<string[]> {
  let read = 0;
  for (let chunk = 0; ; chunk++) {
    const ids = await readManifestChunk(ctx.db, manifest.id, chunk);
    if (ids === undefined) break;
    read += ids.length;
    yield ids;
  }
  if (read !== manifest.count) manifestNotFound(manifest.id);
}

export async function deleteManifest(ctx: ServiceContext, id: string, principal: Principal): Promise<void> {
  const manifest = await getManifest(ctx, id, principal);
  if (!(await deleteManifestRow(ctx.db, manifest.id))) manifestNotFound(id);
}

export interface ManifestPage {
  manifests: ManifestView[];
  /** Pass back as `cursor` for the next page; null on the last page. */
  nextCursor: string | null;
}

function badCursor(): never {
  throw new ServiceError('invalid', 'INVALID_CURSOR', 'cursor is not one this server issued', { field: 'cursor' });
}

function decodeCursor(text: string): ManifestKeyset {
  try {
    const { t, i } = JSON.parse(Buffer.from(text, 'base64url').toString('utf8')) as { t?: unknown; i?: unknown };
    const createdAt = new Date(typeof t === 'string' ? t : Number.NaN);
    if (typeof i === 'string' && isUuid(i) && !Number.isNaN(createdAt.getTime())) return { createdAt, id: i };
  } catch {
    // fall through
  }
  return badCursor();
}

const encodeCursor = (m: ManifestView) => Buffer.from(JSON.stringify({ t: m.createdAt.toISOString(), i: m.id })).toString('base64url');

/** One page of a dataset's manifests, newest first (metadata only). */
export async function listManifests(ctx: ServiceContext, datasetName: string, page: { cursor?: string; limit: number }): Promise<ManifestPage> {
  if (!(Number.isInteger(page.limit) && page.limit >= 1 && page.limit <= MAX_MANIFEST_PAGE_LIMIT)) {
    invalid('limit', `limit must be an integer from 1 to ${MAX_MANIFEST_PAGE_LIMIT}`);
  }
  const after = page.cursor ? decodeCursor(page.cursor) : null;
  const dataset = await getDataset(ctx, datasetName);
  // One row beyond the page tells whether another follows.
  const rows = await listManifestRows(ctx.db, dataset.id, after, page.limit + 1);
  const manifests = rows.slice(0, page.limit).map(view);
  return { manifests, nextCursor: rows.length > page.limit ? encodeCursor(manifests[manifests.length - 1]) : null };
}
