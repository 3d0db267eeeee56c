/** Translation between the manifest messages and the service's manifest input and view (shape only). */
import type * as pb from '../generated/proto/protoprune/v1/protoprune.js';
import { ServiceError } from '../service/errors.js';
import type { ManifestView, NewManifest } from '../service/manifests.js';
import { metadataFilter, selectionRequest, timestamp, type Outgoing } from './convert.js';

/** The embedded request names no dataset, or the same as the manifest request. */
function checkSameDataset(dataset: string, embedded: string, field: string): void {
  if (embedded !== '' && embedded !== dataset) {
    throw new ServiceError('invalid', 'DATASET_MISMATCH', `${field}.dataset must be empty or ${dataset}, not ${embedded}`, { field: `${field}.dataset`, expected: dataset, got: embedded });
  }
}

/** The request's source in the REST body's terms (so a manifest records the same parameters either way). */
export function manifestInput(req: pb.CreateManifestRequest): NewManifest {
  const input: NewManifest = { name: req.name, description: req.description };
  if (req.selection) {
    checkSameDataset(req.dataset, req.selection.dataset, 'selection');
    input.selection = selectionRequest(req.selection);
  }
  if (req.export) {
    checkSameDataset(req.dataset, req.export.dataset, 'export');
    input.export = { filter: metadataFilter(req.export.filter), epsilon: req.export.epsilon, job: req.export.jobId };
  }
  return input;
}

export function manifestMessage(m: ManifestView): Outgoing<pb.Manifest> {
  return {
    id: m.id,
    dataset: m.dataset,
    datasetId: m.datasetId,
    name: m.name ?? undefined,
    description: m.description ?? undefined,
    kind: m.kind,
    encoder: m.encoder,
    prototypeVersion: m.prototypeVersion,
    k: m.k ?? undefined,
    seed: m.seed,
    parametersJson: JSON.stringify(m.parameters),
    summaryJson: JSON.stringify(m.summary),
    count: m.count,
    sha256: m.sha256,
    createdByKeyId: m.createdByKeyId ?? undefined,
    createdAt: timestamp(m.createdAt),
  };
}
