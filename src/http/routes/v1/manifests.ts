import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type, type TSchema } from '@sinclair/typebox';
import { DEFAULT_SELECTION_ORDER } from '../../../core/selection.js';
import type { ServiceContext } from '../../../service/context.js';
import {
  DEFAULT_MANIFEST_PAGE_LIMIT,
  MANIFEST_DESCRIPTION_MAX_LENGTH,
  MANIFEST_NAME_MAX_LENGTH,
  MAX_MANIFEST_PAGE_LIMIT,
} from '../../../service/limits.js';
import { createManifest, deleteManifest, getManifest, listManifests, manifestIds, type ManifestView } from '../../../service/manifests.js';
import { csvField, pickFormat, sendStream } from '../../formats.js';
import { parquetStream } from '../../parquet.js';
import { ErrorBody } from '../../schemas.js';
import { PARQUET_TYPE } from './export.js';
import { DatasetParams, MetadataFilter, Order, ScoreExportQuery, SelectionQuery } from './schemas.js';

const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()]);

const query = SelectionQuery.properties;

/**
 * The selection a manifest saves: GET …/selection's parameters as JSON values, the way the
 * service (and gRPC's SelectRequest) takes them: `filter` an object, the dedup step one object.
 */
const ManifestSelection = Type.Object(
  {
    order: Type.Optional(Order),
    ...Type.Pick(SelectionQuery, ['fraction', 'count', 'balance', 'seed', 'outlierFraction', 'bins']).properties,
    filter: Type.Optional(MetadataFilter),
    dedup: Type.Optional(
      Type.Object(
        { epsilon: query.epsilon, jobId: query.dedupJob, keep: query.dedupKeep, keepField: query.dedupKeepField },
        { additionalProperties: false, description: 'Dedup, then prune (GET …/selection’s dedup=true with epsilon, dedupJob, dedupKeep, dedupKeepField)' },
      ),
    ),
  },
  { additionalProperties: false, description: `A selection’s parameters, as GET …/selection takes them (order: default ${DEFAULT_SELECTION_ORDER})` },
);

/** The score export a manifest saves (its ids in its order): GET …/scores's parameters as JSON values. */
const ManifestExport = Type.Object(
  {
    ...Type.Omit(ScoreExportQuery, ['format', 'filter']).properties,
    filter: Type.Optional(MetadataFilter),
  },
  { additionalProperties: false, description: 'A score export’s parameters, as GET …/scores takes them: the manifest holds its ids, easiest first' },
);

const CreateManifestBody = Type.Object(
  {
    selection: Type.Optional(ManifestSelection),
    export: Type.Optional(ManifestExport),
    name: Type.Optional(Type.String({ minLength: 1, maxLength: MANIFEST_NAME_MAX_LENGTH })),
    description: Type.Optional(Type.String({ maxLength: MANIFEST_DESCRIPTION_MAX_LENGTH })),
  },
  { $id: 'CreateManifest', additionalProperties: false, description: 'Exactly one of `selection` and `export`' },
);

const Manifest = Type.Object(
  {
    id: Type.String(),
    dataset: Type.String(),
    datasetId: Type.String(),
    name: Nullable(Type.String()),
    description: Nullable(Type.String()),
    kind: Type.Union([Type.Literal('selection'), Type.Literal('export')]),
    encoder: Nullable(Type.Object({ name: Type.String(), sha256: Type.String() }, { description: 'The dataset’s image encoder; null for an embedding-only dataset' })),
    prototypeVersion: Type.Integer(),
    k: Nullable(Type.Integer({ description: 'Prototypes of that version' })),
    seed: Type.Integer({ description: 'The dataset’s k-means seed (settings.seed)' }),
    parameters: Type.Object({}, { additionalProperties: true, description: 'The request’s `selection` or `export`, as given' }),
    summary: Type.Object({}, { additionalProperties: true, description: 'What the selection or export reported besides its ids: prototypeVersion as version, total, matched, size, …' }),
    count: Type.Integer({ description: 'Ids in the manifest' }),
    sha256: Type.String({ description: 'SHA-256 (hex) of the ordered ids: each id’s UTF-8 bytes followed by one NUL byte (0x00), in order' }),
    createdByKeyId: Nullable(Type.String({ description: 'The API key that created it' })),
    createdAt: Type.String({ format: 'date-time' }),
  },
  { $id: 'Manifest' },
);

const ManifestRef = Type.Ref('Manifest');

const ManifestList = Type.Object({ manifests: Type.Array(ManifestRef, { description: 'Newest first' }), nextCursor: Nullable(Type.String()) }, { $id: 'ManifestList' });

const ManifestParams = Type.Object({ id: Type.String({ description: 'The manifest’s id' }) });

const ManifestQuery = Type.Object(
  {
    format: Type.Optional(
      Type.Union([Type.Literal('json'), Type.Literal('ndjson'), Type.Literal('csv'), Type.Literal('parquet')], {
        description: 'Overrides the Accept header: json (default) the metadata, the others its ids',
      }),
    ),
  },
  { additionalProperties: false },
);

const ManifestListQuery = Type.Object(
  {
    cursor: Type.Optional(Type.String({ maxLength: 200, description: 'nextCursor of the previous page' })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_MANIFEST_PAGE_LIMIT, description: `manifests per page (default ${DEFAULT_MANIFEST_PAGE_LIMIT})` })),
  },
  { additionalProperties: false },
);

function manifestBody(m: ManifestView) {
  return { ...m, createdAt: m.createdAt.toISOString() };
}

type ManifestFormat = 'json' | 'ndjson' | 'csv' | 'parquet';

/** `format=` wins; otherwise Accept picks Parquet, NDJSON or CSV; the JSON metadata by default. */
function manifestFormat(format: ManifestFormat | undefined, accept: string | undefined): ManifestFormat {
  if (format === 'parquet' || (!format && (accept ?? '').toLowerCase().includes(PARQUET_TYPE))) return 'parquet';
  return pickFormat(format, accept);
}

const ID_COLUMN = [{ element: { name: 'external_id', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'REQUIRED' }, value: (id: string) => id }] as const;

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody };

/** Subset manifests: save a selection's or export's ids, fetch them again unchanged. */
export const manifestRoutes: FastifyPluginAsyncTypebox<{ ctx: ServiceContext }> = async (app, { ctx }) => {
  app.addSchema(Manifest);

  app.post(
    '/datasets/:dataset/manifests',
    {
      config: { scope: 'write' },
      schema: {
        operationId: 'createManifest',
        summary: 'Save a selection’s or score export’s ordered ids as a manifest, fetched again unchanged after any refit or ingest',
        description:
          'Give `selection` (GET …/selection’s parameters as JSON values) or `export` (GET …/scores’s: its ids, easiest first). The answer is computed from one ' +
          'snapshot and its ids stored in order with the dataset, encoder, prototype version, k, seed, the parameters as given and the answer’s summary, ' +
          'their count and SHA-256 (each id’s UTF-8 bytes followed by a NUL byte, in order).',
        tags: ['manifests'],
        params: DatasetParams,
        body: CreateManifestBody,
        response: { 201: ManifestRef, ...errors, 409: ErrorBody },
      },
    },
    async (request, reply) => {
      const manifest = await createManifest(ctx, request.params.dataset, request.body, request.principal!);
      return reply.status(201).header('location', `/v1/manifests/${manifest.id}`).send(manifestBody(manifest));
    },
  );

  app.get(
    '/datasets/:dataset/manifests',
    {
      config: { scope: 'read' },
      schema: {
        operationId: 'listManifests',
        summary: 'The dataset’s manifests, newest first (metadata only)',
        tags: ['manifests'],
        params: DatasetParams,
        querystring: ManifestListQuery,
        response: { 200: ManifestList, ...errors },
      },
    },
    async (request) => {
      const page = await listManifests(ctx, request.params.dataset, { cursor: request.query.cursor, limit: request.query.limit ?? DEFAULT_MANIFEST_PAGE_LIMIT });
      return { manifests: page.manifests.map(manifestBody), nextCursor: page.nextCursor };
    },
  );

  app.get(
    '/manifests/:id',
    {
      config: { scope: 'read' },
      schema: {
        operationId: 'getManifest',
        summary: 'A manifest: its metadata (JSON), or its ids in the stored order as NDJSON, CSV or Parquet',
        description:
          'Pick with `format=` or `Accept` (`application/x-ndjson`, `text/csv`, `application/vnd.apache.parquet`). The ids stream in constant memory: ' +
          'NDJSON lines `{"externalId": …}`, CSV with an `external_id` header, Parquet with one `external_id` column; ' +
          '`X-Manifest-Count` and `X-Manifest-Sha256` carry their count and digest. A manifest of a dataset the key may not read is 404.',
        tags: ['manifests'],
        params: ManifestParams,
        querystring: ManifestQuery,
        response: {
          200: {
            description: 'The manifest (JSON), or its ids',
            content: {
              'application/json': { schema: ManifestRef },
              'application/x-ndjson': { schema: Type.String() },
              'text/csv': { schema: Type.String() },
              [PARQUET_TYPE]: { schema: Type.String({ format: 'binary' }) },
            },
          },
          ...errors,
        },
      },
    },
    async (request, reply) => {
      const manifest = await getManifest(ctx, request.params.id, request.principal!);
      const chosen = manifestFormat(request.query.format, request.headers.accept);
      if (chosen === 'json') return manifestBody(manifest);
      const ids = manifestIds(ctx, manifest);
      async function* lines() {
        if (chosen === 'csv') yield 'external_id\n';
        for await (const chunk of ids) {
          yield chosen === 'csv' ? chunk.map((id) => `${csvField(id)}\n`).join('') : chunk.map((id) => `{"externalId":${JSON.stringify(id)}}\n`).join('');
        }
      }
      void reply
        .header('content-type', chosen === 'parquet' ? PARQUET_TYPE : chosen === 'csv' ? 'text/csv; charset=utf-8' : 'application/x-ndjson')
        .header('x-prototype-version', String(manifest.prototypeVersion))
        .header('x-manifest-count', String(manifest.count))
        .header('x-manifest-sha256', manifest.sha256);
      return sendStream(reply, () => (chosen === 'parquet' ? parquetStream(ID_COLUMN, ids) : lines()));
    },
  );

  app.delete(
    '/manifests/:id',
    {
      config: { scope: 'write' },
      schema: { operationId: 'deleteManifest', summary: 'Delete a manifest and its ids', tags: ['manifests'], params: ManifestParams, response: { 204: Type.Null(), ...errors } },
    },
    async (request, reply) => {
      await deleteManifest(ctx, request.params.id, request.principal!);
      return reply.status(204).send(null);
    },
  );
};
