import multipart from '@fastify/multipart';
import type { FastifyPluginAsync } from 'fastify';
import type { Config } from '../../../config/index.js';
import type { ServiceContext } from '../../../service/context.js';
import { authPlugin } from '../../plugins/auth.js';
import { rateLimitPlugin } from '../../plugins/rate-limit.js';
import { analysisRoutes } from './analysis.js';
import { datasetRoutes } from './datasets.js';
import { duplicateRoutes } from './duplicates.js';
import { exportRoutes } from './export.js';
import { itemRoutes } from './items.js';
import { keyRoutes } from './keys.js';
import { manifestRoutes } from './manifests.js';
import { SHARED_SCHEMAS } from './schemas.js';
import { selectionRoutes } from './selection.js';
import { thumbnailRoutes } from './thumbnails.js';

/** The public API under /v1: API keys, a per-key rate limit, multipart uploads, and every resource. */
export const v1Routes: FastifyPluginAsync<{ ctx: ServiceContext; api: Config['api'] }> = async (app, { ctx, api }) => {
  for (const schema of SHARED_SCHEMAS) app.addSchema(schema);
  await app.register(authPlugin, { ctx });
  await app.register(rateLimitPlugin, { perMinute: api.rateLimitPerMinute, ctx });
  await app.register(multipart, { limits: { fileSize: api.bodyLimitBytes, files: api.maxItemsPerRequest + 1, fields: 16, fieldSize: 1024 * 1024 } });
  await app.register(datasetRoutes, { ctx });
  await app.register(itemRoutes, { ctx, api });
  await app.register(selectionRoutes, { ctx });
  await app.register(thumbnailRoutes, { ctx });
  await app.register(analysisRoutes, { ctx, api });
  await app.register(duplicateRoutes, { ctx });
  await app.register(exportRoutes, { ctx });
  await app.register(manifestRoutes, { ctx });
  await app.register(keyRoutes, { ctx });
};
