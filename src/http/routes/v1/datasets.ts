import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { authorize, mayAccessDataset } from '../../../service/auth.js';
import type { ServiceContext } from '../../../service/context.js';
import { createDataset, createImageDataset, deleteDataset, getDataset, listDatasets, type Dataset as DatasetModel } from '../../../service/datasets.js';
import { ErrorBody } from '../../schemas.js';
import { CreateDatasetBody, DatasetList, DatasetParams } from './schemas.js';

export function datasetView(d: DatasetModel) {
  return {
    name: d.name,
    dimension: d.dimension,
    k: d.k,
    model: d.modelName && d.modelSha256 ? { name: d.modelName, sha256: d.modelSha256 } : null,
    activeVersion: d.activeVersion,
    settings: d.settings,
    createdAt: d.createdAt.toISOString(),
    updatedAt: d.updatedAt.toISOString(),
  };
}

const DatasetRef = Type.Ref('Dataset');
const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody };

export const datasetRoutes: FastifyPluginAsyncTypebox<{ ctx: ServiceContext }> = async (app, { ctx }) => {
  app.post(
    '/datasets',
    {
      config: { scope: 'admin' },
      schema: {
        operationId: 'createDataset',
        summary: 'Create a dataset: give `dimension` for precomputed embeddings, or omit it for images embedded by the server’s model',
        tags: ['datasets'],
        body: CreateDatasetBody,
        response: { 201: DatasetRef, ...errors, 503: ErrorBody },
      },
    },
    async (request, reply) => {
      const { name, dimension, k, settings } = request.body;
      authorize(request.principal!, 'admin', name);
      const dataset = dimension === undefined ? await createImageDataset(ctx, { name, k, settings }) : await createDataset(ctx, { name, dimension, k, settings });
      return reply.status(201).send(datasetView(dataset));
    },
  );

  app.get(
    '/datasets',
    {
      config: { scope: 'read' },
      schema: { operationId: 'listDatasets', summary: 'List the datasets this key may read', tags: ['datasets'], response: { 200: DatasetList, 401: ErrorBody } },
    },
    async (request) => ({
      datasets: (await listDatasets(ctx)).filter((d) => mayAccessDataset(request.principal!, d.name)).map(datasetView),
    }),
  );

  app.get(
    '/datasets/:dataset',
    {
      config: { scope: 'read' },
      schema: { operationId: 'getDataset', summary: 'Get a dataset', tags: ['datasets'], params: DatasetParams, response: { 200: DatasetRef, ...errors } },
    },
    async (request) => datasetView(await getDataset(ctx, request.params.dataset)),
  );

  app.delete(
    '/datasets/:dataset',
    {
      config: { scope: 'admin' },
      schema: { operationId: 'deleteDataset', summary: 'Delete a dataset with all its items, scores, prototypes and jobs', tags: ['datasets'], params: DatasetParams, response: { 204: Type.Null(), ...errors } },
    },
    async (request, reply) => {
      await deleteDataset(ctx, request.params.dataset);
      return reply.status(204).send(null);
    },
  );
};
