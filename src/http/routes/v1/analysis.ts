import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { Config } from '../../../config/index.js';
import { authorizeJob } from '../../../service/auth.js';
import type { ServiceContext } from '../../../service/context.js';
import { getJobView, type JobView } from '../../../service/jobs.js';
import { prototypeStatus } from '../../../service/prototypes.js';
import { requestRefit } from '../../../service/refit.js';
import { scoreBatch } from '../../../service/score.js';
import { datasetStats } from '../../../service/stats.js';
import { parseFilterJson } from '../../../service/metadata-filter.js';
import { checkItemCount, refuseIfNoItemUsable } from '../../../service/errors.js';
import { ErrorBody } from '../../schemas.js';
import { DatasetParams, Prototypes, ScoreBody, ScoreResponse, Stats, StatsQuery } from './schemas.js';

const iso = (d: Date | null) => (d === null ? null : new Date(d).toISOString());

export function jobBody(job: JobView) {
  return { ...job, result: job.result as Record<string, unknown> | null, createdAt: iso(job.createdAt)!, startedAt: iso(job.startedAt), finishedAt: iso(job.finishedAt) };
}

const JobRef = Type.Ref('Job');
const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody };

/** Scoring new items, prototypes and their jobs, and dashboard statistics. */
export const analysisRoutes: FastifyPluginAsyncTypebox<{ ctx: ServiceContext; api: Config['api'] }> = async (app, { ctx, api }) => {
  app.post(
    '/datasets/:dataset/score',
    {
      config: { scope: 'read' },
      schema: {
        operationId: 'scoreItems',
        summary: 'Score new images or embeddings without storing them: should we annotate these?',
        description:
          'Per item: score (cosine distance to the nearest prototype), cluster, percentile within the dataset, the nearest stored item with its ' +
          'similarity and a near-duplicate flag, and keep/skip under `policy` (default hardest 30%): the decision the same selection over the ' +
          'stored items makes for an item like this one; a near-duplicate of a stored item is skipped.',
        tags: ['scoring'],
        params: DatasetParams,
        body: ScoreBody,
        response: { 200: ScoreResponse, ...errors, 413: ErrorBody, 429: ErrorBody, 503: ErrorBody },
      },
    },
    async (request) => {
      checkItemCount(request.body.items.length, api.maxItemsPerRequest);
      const result = await scoreBatch(ctx, request.params.dataset, request.body.items, request.body.policy ?? {});
      refuseIfNoItemUsable(result.items);
      return result;
    },
  );

  app.get(
    '/datasets/:dataset/prototypes',
    {
      config: { scope: 'read' },
      schema: { operationId: 'getPrototypes', summary: 'Prototype version, k, cluster sizes, drift since the last full fit, and the refit in progress', tags: ['prototypes'], params: DatasetParams, response: { 200: Prototypes, ...errors } },
    },
    async (request) => {
      const status = await prototypeStatus(ctx, request.params.dataset);
      return { ...status, fittedAt: iso(status.fittedAt), refitJob: status.refitJob && jobBody(status.refitJob) };
    },
  );

  app.post(
    '/datasets/:dataset/prototypes/refit',
    {
      config: { scope: 'write' },
      schema: {
        operationId: 'requestRefit',
        summary: 'Request a full refit; the job rescores every item and switches versions atomically (asking twice gives the same job)',
        tags: ['prototypes'],
        params: DatasetParams,
        response: { 202: JobRef, ...errors },
      },
    },
    async (request, reply) => reply.status(202).send(jobBody(await requestRefit(ctx, request.params.dataset))),
  );

  app.get(
    '/jobs/:id',
    {
      config: { scope: 'read' },
      schema: { operationId: 'getJob', summary: 'A job’s state and progress', tags: ['prototypes'], params: Type.Object({ id: Type.String() }), response: { 200: JobRef, ...errors } },
    },
    async (request) => {
      const job = await getJobView(ctx.db, request.params.id);
      authorizeJob(request.principal!, job);
      return jobBody(job);
    },
  );

  app.get(
    '/datasets/:dataset/stats',
    {
      config: { scope: 'read' },
      schema: {
        operationId: 'getDatasetStats',
        summary: 'Dashboard statistics: counts, score histogram, cluster sizes, prototype state, ingest activity',
        description: 'With `filter`, the item and scored counts, the histogram and the cluster sizes describe the items whose metadata matches.',
        tags: ['stats'],
        params: DatasetParams,
        querystring: StatsQuery,
        response: { 200: Stats, ...errors },
      },
    },
    async (request) => {
      const stats = await datasetStats(ctx, request.params.dataset, parseFilterJson(request.query.filter));
      return {
        ...stats,
        lastRefit: stats.lastRefit && { version: stats.lastRefit.version, fittedAt: iso(stats.lastRefit.fittedAt)! },
        refitJob: stats.refitJob && jobBody(stats.refitJob),
        ingest: { ...stats.ingest, hourly: stats.ingest.hourly.map((h) => ({ hour: iso(h.hour)!, items: h.items })) },
      };
    },
  );
};
