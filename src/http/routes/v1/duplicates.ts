import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { ServiceContext } from '../../../service/context.js';
import { duplicatePage, requestDedup, streamDuplicates, type DedupRunView, type DuplicateGroupView } from '../../../service/dedup.js';
import { csvField, pickFormat, sendStream } from '../../formats.js';
import { ErrorBody } from '../../schemas.js';
import { jobBody } from './analysis.js';
import { DEFAULT_GROUP_PAGE_LIMIT } from '../../../service/limits.js';
import { DatasetParams, DedupJobBody, Duplicates, DuplicatesQuery } from './schemas.js';

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody };

function runFields(run: DedupRunView) {
  return { jobId: run.jobId, prototypeVersion: run.version, epsilon: run.epsilon, groupCount: run.groups, duplicateCount: run.duplicates, completedAt: run.completedAt.toISOString() };
}

/** NDJSON: one group per line. CSV: one pair per line (kept, duplicate, similarity). */
function ndjsonLines(groups: DuplicateGroupView[]): string {
  return groups.map((g) => `${JSON.stringify(g)}\n`).join('');
}

function csvLines(groups: DuplicateGroupView[]): string {
  let out = '';
  for (const g of groups) g.duplicates.forEach((d, j) => (out += `${csvField(g.kept)},${csvField(d)},${g.similarities[j]}\n`));
  return out;
}

/** SemDeDup as a job (POST …/duplicates/jobs) and its results, paged or streamed. */
export const duplicateRoutes: FastifyPluginAsyncTypebox<{ ctx: ServiceContext }> = async (app, { ctx }) => {
  app.post(
    '/datasets/:dataset/duplicates/jobs',
    {
      config: { scope: 'write' },
      schema: {
        operationId: 'requestDedup',
        summary: 'Run SemDeDup on the active prototype version as a job, cluster by cluster (asking twice at the same ε gives the same job)',
        description:
          'Any replica works on the clusters; memory is bounded by the largest cluster. The results are served by GET …/duplicates once the job succeeded. ' +
          'A request at another ε while one runs is 409 DEDUP_RUNNING.',
        tags: ['duplicates'],
        params: DatasetParams,
        body: DedupJobBody,
        response: { 202: Type.Ref('Job'), ...errors },
      },
      // No body at all is the default ε (a JSON null is still refused by the schema).
      preValidation: async (request) => {
        if (request.body === undefined) request.body = {};
      },
    },
    async (request, reply) => reply.status(202).send(jobBody(await requestDedup(ctx, request.params.dataset, request.body.epsilon))),
  );

  app.get(
    '/datasets/:dataset/duplicates',
    {
      config: { scope: 'read' },
      schema: {
        operationId: 'listDuplicates',
        summary: 'Near-duplicate groups of a completed SemDeDup run: paged JSON, or streamed NDJSON/CSV',
        description:
          'The newest completed run of the active version at ε (or the run of `job`); 409 DEDUP_NOT_RUN when there is none (its details name a job in progress). ' +
          'JSON answers one page of groups by kept item (`limit`, `cursor`). With `Accept: application/x-ndjson` (one group per line) or `text/csv` ' +
          '(`kept_id,duplicate_id,similarity`, one pair per line), or `format=`, the whole run streams in constant memory. Items deleted since the run are left out.',
        tags: ['duplicates'],
        params: DatasetParams,
        querystring: DuplicatesQuery,
        response: {
          200: {
            description: 'A page (JSON) or the whole run (NDJSON or CSV)',
            content: { 'application/json': { schema: Duplicates }, 'application/x-ndjson': { schema: Type.String() }, 'text/csv': { schema: Type.String() } },
          },
          ...errors,
        },
      },
    },
    async (request, reply) => {
      const { dataset } = request.params;
      const { format, cursor, limit, epsilon, job } = request.query;
      const chosen = pickFormat(format, request.headers.accept);
      if (chosen === 'json') {
        const page = await duplicatePage(ctx, dataset, { epsilon, jobId: job, cursor, limit: limit ?? DEFAULT_GROUP_PAGE_LIMIT });
        return { ...runFields(page.run), groups: page.groups, nextCursor: page.nextCursor };
      }
      const stream = await streamDuplicates(ctx, dataset, { epsilon, jobId: job });
      async function* lines() {
        if (chosen === 'csv') yield 'kept_id,duplicate_id,similarity\n';
        for await (const groups of stream.groups) yield chosen === 'csv' ? csvLines(groups) : ndjsonLines(groups);
      }
      const run = runFields(stream.run);
      void reply
        .header('content-type', chosen === 'csv' ? 'text/csv; charset=utf-8' : 'application/x-ndjson')
        .header('x-dedup-job', run.jobId)
        .header('x-prototype-version', String(run.prototypeVersion))
        .header('x-duplicate-count', String(run.duplicateCount));
      return sendStream(reply, lines);
    },
  );
};
