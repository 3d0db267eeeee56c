import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { ServiceContext } from '../../../service/context.js';
import { getThumbnail } from '../../../service/items.js';
import { ErrorBody } from '../../schemas.js';
import { ItemParams } from './schemas.js';

export const thumbnailRoutes: FastifyPluginAsyncTypebox<{ ctx: ServiceContext }> = async (app, { ctx }) => {
  app.get(
    '/datasets/:dataset/items/:externalId/thumbnail',
    {
      config: { scope: 'read' },
      schema: {
        operationId: 'getItemThumbnail',
        summary: 'The 64×64 JPEG stored when the item was ingested as an image',
        tags: ['items'],
        params: ItemParams,
        response: {
          200: { description: 'JPEG', content: { 'image/jpeg': { schema: Type.String({ format: 'binary' }) } } },
          401: ErrorBody,
          403: ErrorBody,
          404: ErrorBody,
        },
      },
    },
    async (request, reply) => {
      const data = await getThumbnail(ctx, request.params.dataset, request.params.externalId);
      return reply
        .header('content-type', 'image/jpeg')
        .header('cache-control', 'private, max-age=60')
        .send(Buffer.from(data.buffer, data.byteOffset, data.byteLength) as unknown as string); // bytes as is; the schema documents them
    },
  );
};
