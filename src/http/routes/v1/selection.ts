import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { ServiceContext } from '../../../service/context.js';
import { selectPage, streamSelection, type SelectionRequest } from '../../../service/selection.js';
import { ErrorBody } from '../../schemas.js';
import { csvField, pickFormat, sendStream } from '../../formats.js';
import { DatasetParams, DEFAULT_PAGE_LIMIT, SelectionPage, SelectionQuery } from './schemas.js';
import { DEFAULT_SELECTION_ORDER } from '../../../core/selection.js';
import { ServiceError } from '../../../service/errors.js';
import { parseFilterJson } from '../../../service/metadata-filter.js';

export const selectionRoutes: FastifyPluginAsyncTypebox<{ ctx: ServiceContext }> = async (app, { ctx }) => {
  app.get(
    '/datasets/:dataset/selection',
    {
      config: { scope: 'read' },
      schema: {
        operationId: 'selectItems',
        summary: 'Select external ids by a pruning policy: paged JSON, or a streamed NDJSON/CSV export',
        description:
          'Give `fraction` in (0, 1] or `count`. JSON answers one page (`limit`, `cursor`). With `Accept: application/x-ndjson` or `text/csv` ' +
          '(or `format=`) the whole selection streams in policy order, one id per line, in constant memory: hardest/easiest straight from the score index in one snapshot, other orders read back from the database in chunks. ' +
          'Every answer names the prototype version it used (`prototypeVersion`, and the `X-Prototype-Version` header). ' +
          'With `filter` the policy runs over the items whose metadata matches, and `fraction` is of them: `matched` (header `X-Selection-Matched`) says how many. ' +
          'With `dedup=true`, near-duplicates of a completed SemDeDup run go first (one member per group stays, by `dedupKeep`), then the policy prunes the rest to the requested final size: ' +
          '`dedup.dropped` (header `X-Selection-Dedup-Dropped`) and `matched − dedup.dropped − size` are what each stage dropped.',
        tags: ['selection'],
        params: DatasetParams,
        querystring: SelectionQuery,
        response: {
          200: {
            description: 'A page (JSON) or the whole selection (NDJSON lines `{"externalId": …}`, or CSV with an `external_id` header)',
            content: {
              'application/json': { schema: SelectionPage },
              'application/x-ndjson': { schema: Type.String() },
              'text/csv': { schema: Type.String() },
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
      const { dataset } = request.params;
      const { format, cursor, limit, order, filter, dedup, epsilon, dedupJob, dedupKeep, dedupKeepField, ...rest } = request.query;
      if (!dedup && [epsilon, dedupJob, dedupKeep, dedupKeepField].some((v) => v !== undefined)) {
        throw new ServiceError('invalid', 'INVALID_DEDUP', 'epsilon, dedupJob, dedupKeep and dedupKeepField go with dedup=true', { field: 'dedup' });
      }
      const selection: SelectionRequest = {
        order: order ?? DEFAULT_SELECTION_ORDER,
        ...rest,
        filter: parseFilterJson(filter),
        ...(dedup && { dedup: { epsilon, jobId: dedupJob, keep: dedupKeep, keepField: dedupKeepField } }),
      };
      const chosen = pickFormat(format, request.headers.accept);
      if (chosen === 'json') {
        const page = await selectPage(ctx, dataset, selection, { cursor, limit: limit ?? DEFAULT_PAGE_LIMIT });
        void reply.header('x-prototype-version', String(page.version));
        return {
          prototypeVersion: page.version,
          total: page.total,
          matched: page.matched,
          dedup: page.dedup,
          policy: page.policy,
          imbalance: page.imbalance,
          size: page.size,
          externalIds: page.externalIds,
          nextCursor: page.nextCursor,
        };
      }
      const stream = await streamSelection(ctx, dataset, selection);
      void reply.header('x-selection-policy', `${stream.policy.order}${stream.policy.balance === 'cluster' ? '+cluster' : ''}`);
      if (stream.imbalance) void reply.header('x-selection-imbalance', JSON.stringify(stream.imbalance));
      if (stream.dedup) void reply.header('x-dedup-job', stream.dedup.jobId).header('x-selection-dedup-dropped', String(stream.dedup.dropped));
      async function* lines() {
        if (chosen === 'csv') yield 'external_id\n';
        for await (const ids of stream.externalIds) {
          yield chosen === 'csv' ? ids.map((id) => `${csvField(id)}\n`).join('') : ids.map((id) => `{"externalId":${JSON.stringify(id)}}\n`).join('');
        }
      }
      void reply
        .header('content-type', chosen === 'csv' ? 'text/csv; charset=utf-8' : 'application/x-ndjson')
        .header('x-prototype-version', String(stream.version))
        .header('x-selection-total', String(stream.total))
        .header('x-selection-matched', String(stream.matched))
        .header('x-selection-size', String(stream.size));
      return sendStream(reply, lines, stream.cancel);
    },
  );
};
