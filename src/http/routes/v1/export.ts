import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { ServiceContext } from '../../../service/context.js';
import { parseFilterJson } from '../../../service/metadata-filter.js';
import { exportScores, type ExportRow } from '../../../service/score-export.js';
import { csvField, sendStream } from '../../formats.js';
import { parquetStream, type ParquetColumn } from '../../parquet.js';
import { ErrorBody } from '../../schemas.js';
import { DatasetParams, ScoreExportQuery } from './schemas.js';

export const PARQUET_TYPE = 'application/vnd.apache.parquet';

type ExportFormat = 'ndjson' | 'csv' | 'parquet';

function exportFormat(format: ExportFormat | undefined, accept: string | undefined): ExportFormat {
  if (format) return format;
  const wanted = (accept ?? '').toLowerCase();
  if (wanted.includes(PARQUET_TYPE)) return 'parquet';
  if (wanted.includes('text/csv')) return 'csv';
  return 'ndjson';
}

const CSV_HEADER = 'external_id,score,cluster,percentile,prototype_version,duplicate_of,duplicate_similarity,duplicate_group,metadata\n';

const optional = (value: string | null) => (value === null ? '' : csvField(value));

function csvLines(rows: ExportRow[], version: number): string {
  let out = '';
  for (const r of rows) {
    out += `${csvField(r.externalId)},${r.score},${r.cluster},${r.percentile},${version},${optional(r.duplicateOf)},${r.duplicateSimilarity ?? ''},${optional(r.duplicateGroup)},${csvField(r.metadata)}\n`;
  }
  return out;
}

function ndjsonLines(rows: ExportRow[], version: number): string {
  let out = '';
  for (const r of rows) {
    // metadata is the database's JSON text: spliced in as is.
    out += `{"externalId":${JSON.stringify(r.externalId)},"score":${r.score},"cluster":${r.cluster},"percentile":${r.percentile},"prototypeVersion":${version},"duplicateOf":${JSON.stringify(r.duplicateOf)},"duplicateSimilarity":${r.duplicateSimilarity},"duplicateGroup":${JSON.stringify(r.duplicateGroup)},"metadata":${r.metadata}}\n`;
  }
  return out;
}

function parquetColumns(version: number): ParquetColumn<ExportRow>[] {
  const string = (name: string, required: boolean) => ({ name, type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: required ? 'REQUIRED' : 'OPTIONAL' }) as const;
  return [
    { element: string('external_id', true), value: (r) => r.externalId },
    { element: { name: 'score', type: 'FLOAT', repetition_type: 'REQUIRED' }, value: (r) => r.score },
    { element: { name: 'cluster', type: 'INT32', repetition_type: 'REQUIRED' }, value: (r) => r.cluster },
    { element: { name: 'percentile', type: 'DOUBLE', repetition_type: 'REQUIRED' }, value: (r) => r.percentile },
    { element: { name: 'prototype_version', type: 'INT32', repetition_type: 'REQUIRED' }, value: () => version },
    { element: string('duplicate_of', false), value: (r) => r.duplicateOf },
    { element: { name: 'duplicate_similarity', type: 'FLOAT', repetition_type: 'OPTIONAL' }, value: (r) => r.duplicateSimilarity },
    { element: string('duplicate_group', false), value: (r) => r.duplicateGroup },
    // JSON text in a string column: the writer's JSON type would serialise the text once more.
    { element: string('metadata', true), value: (r) => r.metadata },
  ];
}

/** Bulk export of every item's score, streamed in constant memory as NDJSON, CSV or Parquet. */
export const exportRoutes: FastifyPluginAsyncTypebox<{ ctx: ServiceContext }> = async (app, { ctx }) => {
  app.get(
    '/datasets/:dataset/scores',
    {
      config: { scope: 'read' },
      schema: {
        operationId: 'exportScores',
        summary: 'Every item’s score under the active version, streamed as NDJSON, CSV or Parquet',
        description:
          'One row per item, easiest first (score ascending, ties by external id): external id, score (cosine distance to the nearest prototype), cluster, ' +
          'percentile (100 · items scoring lower / (n − 1): 0 easiest, 100 hardest), prototype version, the SemDeDup group of the newest completed run at ε ' +
          '(or of `job`; empty when none ran), and metadata. Read from one snapshot, streamed in constant memory. ' +
          'Pick the format with `format=` or `Accept` (`application/x-ndjson`, `text/csv`, `application/vnd.apache.parquet`); NDJSON by default. ' +
          'With `filter`, only the items whose metadata matches (percentiles stay over every item): `X-Export-Matched` rows of `X-Export-Total` items.',
        tags: ['selection'],
        params: DatasetParams,
        querystring: ScoreExportQuery,
        response: {
          200: {
            description: 'The export (headers: X-Prototype-Version, X-Export-Total, X-Export-Matched, X-Dedup-Job when a run fills the duplicate columns)',
            content: {
              'application/x-ndjson': { schema: Type.String() },
              'text/csv': { schema: Type.String() },
              [PARQUET_TYPE]: { schema: Type.String({ format: 'binary' }) },
            },
          },
          400: ErrorBody,
          401: ErrorBody,
          403: ErrorBody,
          404: ErrorBody,
          409: ErrorBody,
        },
      },
    },
    async (request, reply) => {
      const { format, epsilon, job, filter } = request.query;
      const chosen = exportFormat(format, request.headers.accept);
      const exported = await exportScores(ctx, request.params.dataset, { epsilon, jobId: job, filter: parseFilterJson(filter) });
      const { version } = exported;
      async function* text() {
        if (chosen === 'csv') yield CSV_HEADER;
        for await (const rows of exported.rows) yield chosen === 'csv' ? csvLines(rows, version) : ndjsonLines(rows, version);
      }
      if (exported.dedupJobId !== null) void reply.header('x-dedup-job', exported.dedupJobId);
      void reply
        .header('content-type', chosen === 'parquet' ? PARQUET_TYPE : chosen === 'csv' ? 'text/csv; charset=utf-8' : 'application/x-ndjson')
        .header('x-prototype-version', String(version))
        .header('x-export-total', String(exported.total))
        .header('x-export-matched', String(exported.matched));
      return sendStream(reply, () => (chosen === 'parquet' ? parquetStream(parquetColumns(version), exported.rows) : text()), exported.cancel);
    },
  );
};
