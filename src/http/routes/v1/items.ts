import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import { Type } from '@sinclair/typebox';
import type {} from '@fastify/multipart';
import type { Config } from '../../../config/index.js';
import type { ServiceContext } from '../../../service/context.js';
import { checkItemCount, refuseIfNoItemUsable, ServiceError } from '../../../service/errors.js';
import { assertValidText, printable } from '../../../service/text.js';
import { deleteItem, findExistingItems, getItem, MAX_EXISTENCE_LOOKUP_IDS } from '../../../service/items.js';
import { payloadBytes } from '../../../metrics.js';
import { jobBody } from './analysis.js';
import { ErrorBody } from '../../schemas.js';
import { EXTERNAL_ID_MAX_LENGTH } from '../../../service/limits.js';
import { DatasetParams, IngestBody, IngestResponse, Item, ItemParams } from './schemas.js';
import { ingestFrames, ingestItems } from '../../../service/ingest.js';
import { EMBEDDING_FRAME_MEDIA_TYPE } from '../../../service/embedding-frames.js';
import { frameBody } from '../../plugins/input.js';
import { type AnyItem, countOutcomes, type IngestResult } from '../../../service/ingest-items.js';

/** Multipart field names that carry no id of their own: the file name is the external id. */
const GENERIC_FIELDS = new Set(['file', 'files', 'image', 'images']);

/**
 * Image files of a multipart upload. The external id is the field name, or the file name when
 * the field is a generic one (file, files, image, images). An optional text field `metadata`
 * holds a JSON object mapping external ids to metadata objects.
 */
async function multipartItems(request: FastifyRequest, maxItems: number): Promise<AnyItem[]> {
  try {
    return await readParts(request, maxItems);
  } catch (error) {
    throw asMultipartError(error);
  }
}

/**
 * A body the multipart parser cannot read (no boundary, a truncated body, broken part headers) is
 * the client's fault: MALFORMED_MULTIPART. The plugin's own limits carry a 4xx status and keep it.
 */
function asMultipartError(error: unknown): unknown {
  if (error instanceof ServiceError) return error;
  const status = (error as { statusCode?: unknown } | null)?.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) return error;
  const reason = error instanceof Error ? printable(error.message, 200) : 'unreadable body';
  return new ServiceError('invalid', 'MALFORMED_MULTIPART', `the multipart/form-data body could not be read: ${reason}`, { field: 'body' });
}

async function readParts(request: FastifyRequest, maxItems: number): Promise<AnyItem[]> {
  const items: AnyItem[] = [];
  let metadata: Record<string, unknown> = {};
  for await (const part of request.parts()) {
    if (part.type === 'file') {
      const externalId = GENERIC_FIELDS.has(part.fieldname) ? part.filename : part.fieldname;
      assertValidText(externalId, `body/${items.length}/externalId`);
      const image = await part.toBuffer();
      if (part.file.truncated) throw new ServiceError('too_large', 'FILE_TOO_LARGE', `file ${printable(externalId ?? '', 200)} exceeds BODY_LIMIT_BYTES`);
      items.push({ externalId, image });
      checkItemCount(items.length, maxItems);
    } else if (part.fieldname === 'metadata') {
      try {
        metadata = JSON.parse(String(part.value)) as Record<string, unknown>;
      } catch {
        throw new ServiceError('invalid', 'INVALID_METADATA', 'the metadata field must be a JSON object keyed by external id', { field: 'metadata' });
      }
      if (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata)) {
        throw new ServiceError('invalid', 'INVALID_METADATA', 'the metadata field must be a JSON object keyed by external id', { field: 'metadata' });
      }
      assertValidText(metadata, 'metadata');
    } else {
      throw new ServiceError('invalid', 'UNKNOWN_FIELD', `unexpected text field ${printable(part.fieldname, 200)}: send image files, plus an optional metadata field`, {
        field: printable(part.fieldname, 200),
      });
    }
  }
  if (items.length === 0) throw new ServiceError('invalid', 'NO_ITEMS', 'the upload holds no files', { field: 'body' });
  for (const item of items) item.metadata = metadata[item.externalId];
  return items;
}

/** The answer of an ingest; with `results: 'errors'` only the failed items are listed (the counts cover all). */
export function ingestView(result: IngestResult, results: 'all' | 'errors' = 'all') {
  const items = results === 'all' ? result.items : result.items.filter((o) => o.status === 'error');
  return { prototypeVersion: result.prototypeVersion, scheduledJobId: result.scheduledJobId, counts: countOutcomes(result.items), items };
}

/** A binary body, read as it arrives, with its size counted for the metrics. */
async function ingestFrameBody(ctx: ServiceContext, dataset: string, body: AsyncIterable<Uint8Array>, maxBytes: number): Promise<IngestResult> {
  let bytes = 0;
  async function* counted() {
    for await (const chunk of body) {
      bytes += chunk.byteLength;
      yield chunk;
    }
  }
  try {
    return await ingestFrames(ctx, dataset, counted(), maxBytes);
  } finally {
    ctx.metrics?.ingestBytes('rest', bytes);
  }
}

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody };

const IngestQuery = Type.Object({
  async: Type.Optional(
    Type.Boolean({
      default: false,
      description:
        'Answer 202 with a job (kind `ingest`) at once and store the items in the background in chunks of 64, reporting progress (done / total items) on the job; its result holds the counts and each failed item’s code. JSON and multipart bodies only',
    }),
  ),
  results: Type.Optional(
    Type.Union([Type.Literal('all'), Type.Literal('errors')], {
      default: 'all',
      description: '`all`: every item’s outcome, in request order; `errors`: only the failed items (the counts still cover every item) — for large binary bodies',
    }),
  ),
});

const ExistingItemsBody = Type.Object(
  {
    externalIds: Type.Array(Type.String({ minLength: 1, maxLength: EXTERNAL_ID_MAX_LENGTH }), {
      minItems: 1,
      maxItems: MAX_EXISTENCE_LOOKUP_IDS,
      description: `At most ${MAX_EXISTENCE_LOOKUP_IDS} external ids`,
    }),
  },
  { additionalProperties: false },
);

const ExistingItems = Type.Object({
  externalIds: Type.Array(Type.String(), { description: 'The requested ids the dataset holds, in request order, each once' }),
});

export const itemRoutes: FastifyPluginAsyncTypebox<{ ctx: ServiceContext; api: Config['api'] }> = async (app, { ctx, api }) => {
  app.post(
    '/datasets/:dataset/items',
    {
      config: { scope: 'write' },
      schema: {
        operationId: 'ingestItems',
        summary: 'Ingest items (idempotent by external id: re-sending replaces)',
        description:
          'JSON: `items` with an `image` (base64 file) or an `embedding` (numbers, or base64 little-endian float32) each. ' +
          'multipart/form-data: image files; the field name is the external id, or the file name for fields named file/files/image/images; ' +
          'an optional `metadata` text field maps external ids to metadata objects. ' +
          `${EMBEDDING_FRAME_MEDIA_TYPE}: precomputed embeddings as binary frames (header: "PPEB", u16 version 1, u16 flags 0, u32 count, u32 dim; ` +
          'per item: u16 id length, UTF-8 id, dim × float32, u32 metadata length, UTF-8 JSON metadata or nothing; little-endian), ' +
          'read as they arrive and stored in batches of ~2 MiB of vectors (one transaction each); bounded by BODY_LIMIT_BYTES, not MAX_ITEMS_PER_REQUEST. ' +
          'A malformed body is refused at its first bad byte (400 MALFORMED_FRAME; batches stored before it stay stored, `details.stored` counts them). ' +
          'Each item succeeds or fails on its own.',
        tags: ['items'],
        params: DatasetParams,
        querystring: IngestQuery,
        body: {
          content: {
            'application/json': { schema: IngestBody },
            'multipart/form-data': { schema: Type.Unknown({ description: 'image files, plus an optional metadata text field (see description)' }) },
            [EMBEDDING_FRAME_MEDIA_TYPE]: { schema: Type.Unknown({ description: 'binary frames of precomputed embeddings (see description)' }) },
          },
        },
        response: { 200: IngestResponse, 202: Type.Ref('Job'), ...errors, 409: ErrorBody, 413: ErrorBody, 429: ErrorBody, 503: ErrorBody },
      },
    },
    async (request, reply) => {
      const frames = frameBody(request);
      if (frames) {
        if (request.query.async) {
          throw new ServiceError('invalid', 'ASYNC_NOT_SUPPORTED', `async=true takes JSON or multipart bodies; a ${EMBEDDING_FRAME_MEDIA_TYPE} body is stored as it arrives`, { field: 'async' });
        }
        const result = await ingestFrameBody(ctx, request.params.dataset, frames, api.bodyLimitBytes);
        refuseIfNoItemUsable(result.items);
        const view = ingestView(result, request.query.results);
        ctx.metrics?.ingestItems('rest', view.counts);
        return view;
      }
      let items: AnyItem[];
      if (request.isMultipart()) {
        items = await multipartItems(request, api.maxItemsPerRequest);
      } else {
        items = (request.body as typeof IngestBody.static).items;
        checkItemCount(items.length, api.maxItemsPerRequest);
      }
      ctx.metrics?.ingestBytes('rest', items.reduce((sum, item) => sum + payloadBytes(item), 0));
      if (request.query.async) {
        return reply.status(202).send(jobBody(await ctx.ingestJobs.start(request.params.dataset, items)));
      }
      const result = await ingestItems(ctx, request.params.dataset, items);
      refuseIfNoItemUsable(result.items);
      const view = ingestView(result, request.query.results);
      ctx.metrics?.ingestItems('rest', view.counts);
      return view;
    },
  );

  app.post(
    '/datasets/:dataset/items/existing',
    {
      config: { scope: 'read' },
      schema: {
        operationId: 'findExistingItems',
        summary: 'Which of these external ids the dataset holds (e.g. to resume an upload without one GET per id)',
        tags: ['items'],
        params: DatasetParams,
        body: ExistingItemsBody,
        response: { 200: ExistingItems, ...errors },
      },
    },
    async (request) => ({ externalIds: await findExistingItems(ctx, request.params.dataset, request.body.externalIds) }),
  );

  app.get(
    '/datasets/:dataset/items/:externalId',
    {
      config: { scope: 'read' },
      schema: { operationId: 'getItem', summary: 'An item’s score, cluster, prototype version and metadata', tags: ['items'], params: ItemParams, response: { 200: Item, ...errors } },
    },
    async (request) => {
      const item = await getItem(ctx, request.params.dataset, request.params.externalId);
      return { ...item, createdAt: item.createdAt.toISOString(), updatedAt: item.updatedAt.toISOString() };
    },
  );

  app.delete(
    '/datasets/:dataset/items/:externalId',
    {
      config: { scope: 'write' },
      schema: { operationId: 'deleteItem', summary: 'Delete an item with its scores', tags: ['items'], params: ItemParams, response: { 204: Type.Null(), ...errors } },
    },
    async (request, reply) => {
      await deleteItem(ctx, request.params.dataset, request.params.externalId);
      return reply.status(204).send(null);
    },
  );
};
